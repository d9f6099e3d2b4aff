"""Statistics over seeds: mean +- std, and the verdict's difference with its uncertainty.

Example:
    >>> compare([0.91, 0.92, 0.93], [0.90, 0.91, 0.92]).difference  # doctest: +ELLIPSIS
    0.01...
"""

from __future__ import annotations

import functools
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
    detectable: float = math.nan  # the smallest true difference this design finds 80 % of the time (two-sided 5 %)

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
    detectable = float(_detectable_shift(round(dof, 2)) * se)
    return Comparison(diff, p, diff - half, diff + half, int(a.size), int(b.size), float(dof), detectable)


def nested_compare(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Comparison:
    """Compare two arms whose numbers come in groups: one group per independent search, one number per retraining
    seed of that search's winner.

    A search and its seeds are a nested design: the seeds of one search share its network, so they are not
    independent draws of the arm. The units are therefore the groups' means when an arm has two or more groups
    (their spread holds search-to-search and seed variance, with ``groups - 1`` degrees of freedom), and the seeds
    themselves when it has one (an arm with nothing to search: its only variance is the seeds'). The two arms'
    units are then compared with Welch's t (:func:`compare`), so the interval and the smallest detectable
    difference hold both sources of variance.

    Example:
        >>> c = nested_compare([[0.90, 0.92], [0.94, 0.96]], [[0.90, 0.91, 0.92]])
        >>> round(c.difference, 4), c.n_a, c.n_b
        (0.02, 2, 3)
    """
    return compare(_units(a), _units(b))


def _units(groups: Sequence[Sequence[float]]) -> list[float]:
    groups = [list(g) for g in groups if len(g)]
    if len(groups) == 1:
        return groups[0]
    return [float(np.mean(g)) for g in groups]


@functools.lru_cache(maxsize=256)
def _detectable_shift(dof: float, power: float = 0.8, draws: int = 40_000) -> float:
    """The shift (in standard errors) at which a two-sided 5 % t-test with ``dof`` degrees of freedom rejects
    with ``power``: the noncentral t, sampled with a fixed seed (scipy's ``nct`` is unstable at few dof)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    z, scale = rng.standard_normal(draws), np.sqrt(rng.chisquare(dof, draws) / dof)
    crit = stats.t.ppf(0.975, dof)
    low, high = 0.0, 1.0
    while np.mean(np.abs((z + high) / scale) > crit) < power:
        low, high = high, 2 * high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if np.mean(np.abs((z + mid) / scale) > crit) < power else (low, mid)
    return float(high)


@dataclass
class RankAgreement:
    """Kendall's tau and Spearman's rho between two scorings of the same networks, with 95 % intervals
    (Fisher z with the Fieller-Hartley-Pearson variances 0.437/(n-4) and 1.06/(n-3); ``nan`` when too few; at
    perfect agreement the approximation is poor and the interval nearly collapses)."""

    n: int
    tau: float
    tau_low: float
    tau_high: float
    rho: float
    rho_low: float
    rho_high: float


def rank_agreement(x: Sequence[float], y: Sequence[float]) -> RankAgreement:
    """How well the order of ``x`` (e.g. the search's scores) predicts the order of ``y`` (the final scores).

    Example:
        >>> round(rank_agreement([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5]).rho, 3)
        0.886
    """
    from scipy import stats

    n = len(x)
    tau = float(stats.kendalltau(x, y).statistic) if n >= 2 else math.nan
    rho = float(stats.spearmanr(x, y).statistic) if n >= 2 else math.nan

    def interval(r: float, variance: float) -> tuple[float, float]:
        if math.isnan(r) or variance <= 0:
            return math.nan, math.nan
        z, half = math.atanh(max(-0.9999, min(0.9999, r))), 1.96 * math.sqrt(variance)  # |r| = 1: z is infinite
        return math.tanh(z - half), math.tanh(z + half)

    tau_low, tau_high = interval(tau, 0.437 / (n - 4) if n > 4 else 0.0)
    rho_low, rho_high = interval(rho, 1.06 / (n - 3) if n > 3 else 0.0)
    return RankAgreement(n, tau, tau_low, tau_high, rho, rho_low, rho_high)


__all__ = ["Comparison", "RankAgreement", "compare", "mean_std", "nested_compare", "rank_agreement"]
