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
    """``a - b`` in means, Welch's t-test and a bootstrap 95 % interval of the difference."""

    difference: float
    p_value: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05 and not (self.low <= 0.0 <= self.high)


def compare(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Compare two sets of per-seed accuracies (independent samples)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if a.size > 1 and b.size > 1 and (a.var() > 0 or b.var() > 0):
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    else:
        p = math.nan if diff == 0 or a.size < 2 or b.size < 2 else 0.0
    rng = np.random.default_rng(seed)
    boots = rng.choice(a, (resamples, a.size)).mean(1) - rng.choice(b, (resamples, b.size)).mean(1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return Comparison(diff, p, float(low), float(high), int(a.size), int(b.size))


__all__ = ["Comparison", "compare", "mean_std"]
