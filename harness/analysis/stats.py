"""Summary statistics of latency samples: percentiles, a summary row, an empirical CDF. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics; 0.0 for
    no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Summary:
    """n samples; p50/p90/p99/max/min/mean of the present ones; ``missing``: samples that never
    happened (e.g. a run that never reached the server within its budget)."""

    n: int
    missing: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    min: float | None = None
    mean: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Summary:
    """Summary of ``values``; None entries count as ``missing``."""
    vals = list(values)
    present = [float(v) for v in vals if v is not None]
    if not present:
        return Summary(len(vals), len(vals))
    return Summary(len(vals), len(vals) - len(present), percentile(present, 50), percentile(present, 90),
                   percentile(present, 99), max(present), min(present), sum(present) / len(present))


def ecdf(values: Iterable[float | None]) -> tuple[list[float], list[float]]:
    """Empirical CDF of the present values: (sorted x, fraction of *all* samples <= x), so runs
    that never succeeded keep the curve below 1."""
    vals = list(values)
    present = sorted(float(v) for v in vals if v is not None)
    n = len(vals)
    return present, [(i + 1) / n for i in range(len(present))] if n else []


def fraction(flags: Iterable[bool]) -> tuple[int, int]:
    """(true count, total) of a sequence of flags."""
    items = list(flags)
    return sum(1 for f in items if f), len(items)
