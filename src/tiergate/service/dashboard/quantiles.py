"""Latency quantiles from Prometheus histogram buckets, the way `histogram_quantile` computes them."""

from __future__ import annotations

import math

Buckets = dict[float, float]  # upper bound -> cumulative count


def diff(now: Buckets, before: Buckets | None) -> Buckets:
    """Observations in the window between two cumulative snapshots (a reset counts from zero)."""
    if not before:
        return dict(now)
    out = {le: now[le] - before.get(le, 0.0) for le in now}
    return dict(now) if any(v < 0 for v in out.values()) else out


def quantile(q: float, buckets: Buckets) -> float | None:
    """Linear interpolation inside the bucket holding the q-th observation; None with no data."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            if count == prev_count:
                return le
            return prev_bound + (le - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = le, count
    return prev_bound
