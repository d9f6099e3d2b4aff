"""Statistics over seeds: mean +- std, and the verdict's difference with its uncertainty.

Example:
    >>> compare([0.91, 0.92, 0.93], [0.90, 0.91, 0.92]).difference
    0.01...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` std for one value)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


@dataclass
class Comparison:
    """``a - b`` in means, with Welch's t-test and its 95 % interval (Welch-Satterthwaite degrees of freedom)."""

    difference: float
    p_value: float
    low: float
    high: float
    n_a: int
    n_b: int
    dof: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05 and not (self.low <= 0.0 <= self.high)


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compare two sets of per-seed accuracies (independent samples, unequal variances).

    The interval is t-based: a percentile bootstrap over a handful of values is too narrow (with 3
    values it can only ever see 10 distinct means). With fewer than 2 values on a side there is no
    interval (``nan``).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, int(a.size), int(b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        p = math.nan if diff == 0 else 0.0
        return Comparison(diff, p, diff, diff, int(a.size), int(b.size), math.inf)
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    half = float(stats.t.ppf(0.975, dof) * se)
    return Comparison(diff, p, diff - half, diff + half, int(a.size), int(b.size), float(dof))


__all__ = ["Comparison", "compare", "mean_std"]
