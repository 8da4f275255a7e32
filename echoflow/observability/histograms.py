"""Fixed histogram buckets for run durations and trigger lag, and percentiles read back from them.

The bounds are part of the stored data (rollup rows keep one count per bucket), so they never change without a
migration that rebuilds the rollups. Counts are per bucket, not cumulative; the last one is ``+Inf``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Upper bounds in milliseconds, inclusive (Prometheus ``le``): a 100 ms run lands in the 100 ms bucket.
DURATION_BOUNDS_MS: tuple[int, ...] = (
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
)
LAG_BOUNDS_MS: tuple[int, ...] = (50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000)


def empty_duration_buckets() -> list[int]:
    return [0] * (len(DURATION_BOUNDS_MS) + 1)


def empty_lag_buckets() -> list[int]:
    return [0] * (len(LAG_BOUNDS_MS) + 1)


def bucket_index(bounds: Sequence[int], value_ms: float) -> int:
    """The bucket a value falls in; ``len(bounds)`` is the ``+Inf`` bucket."""
    return bisect_left(bounds, value_ms)


def add_counts(into: list[int], counts: Sequence[int]) -> None:
    """Element-wise ``into += counts``; a shorter stored list (older bounds) is padded, never truncated."""
    if len(into) < len(counts):
        into.extend([0] * (len(counts) - len(into)))
    for i, n in enumerate(counts):
        into[i] += int(n)


def percentile(bounds: Sequence[int], counts: Sequence[int], q: float) -> float | None:
    """The ``q``-quantile (0 < q < 1) estimated from bucket counts, like Prometheus' ``histogram_quantile``.

    Linear interpolation inside the bucket that holds the rank, with 0 as the lower edge of the first bucket.
    A rank in the ``+Inf`` bucket answers the highest finite bound (the estimate cannot say more). None when
    there are no observations.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            upper = float(bounds[i])
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return float(bounds[-1])
