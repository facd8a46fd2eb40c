"""The few statistics the bench reports: percentiles, Jain's fairness index, and latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def jain(counts: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1.0 when all are equal, 1/n when one got everything."""
    if not counts or not any(counts):
        return math.nan
    return sum(counts) ** 2 / (len(counts) * sum(x * x for x in counts))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max in milliseconds, and the count."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }
