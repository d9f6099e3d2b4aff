"""The search-free answer: the rule landscape of the compared arm's space.

Trained with the final recipe (the study's retraining, its first seed, the same split): N random
networks of the space, or all of them when the space is small enough, plus its one-rule networks.
Read on validation accuracy (test accuracy is listed, never used to rank or choose):

- where the best one-rule network ranks among all of them, and the fraction of networks with two or
  more rules that beat it, with a Clopper-Pearson 95 % interval;
- accuracy against the number of distinct rules in a network;
- per slot and rule, the mean accuracy of the networks whose slot uses that rule, with t intervals.

It answers "does mixing rules help?" without trusting any search, and shows which rule helps where.

Example:
    >>> space = {"a": {"_value": ["fa", "usf"]}, "b": {"_value": ["fa", "usf"]}}
    >>> [n["sample"] for n in pick_networks(space, networks=10, seed=0)]  # small: every network
    [{'a': 'fa', 'b': 'fa'}, {'a': 'fa', 'b': 'usf'}, {'a': 'usf', 'b': 'fa'}, {'a': 'usf', 'b': 'usf'}]
    >>> rules_of({"a": "conv_3x3@fa", "b": "skip_connect", "c": "usf", "d": "conv_5x5"})
    ['fa', 'usf']
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: parameter-free candidates carry no rule
_NO_RULE = ("skip_connect", "none", "max_pool_3x3", "avg_pool_3x3", "identity", "zero")


def _rule(value: Any) -> str | None:
    """The rule a candidate names: ``op@rule``, or a bare rule name; an op alone (a parameter-free op, or a
    first weight layer's exact local gradient) names none."""
    from nni_bio.core._registry import is_rule

    if not isinstance(value, str) or value in _NO_RULE:
        return None
    if "@" in value:
        return value.split("@")[1]
    return value if is_rule(value) else None


def rules_of(sample: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The distinct learning rules a sample uses (``op@rule`` or bare rule names; rule-free ops skipped).

    With ``space``, only slots whose rule is searched count (a slot offering one rule, like the first
    weight layer whose rule cannot change training, does not make a network "mixed").
    """
    found = set()
    for label, value in sample.items():
        if space is not None and len({_rule(v) for v in space[label]["_value"]} - {None}) < 2:
            continue
        if (rule := _rule(value)) is not None:
            found.add(rule)
    return sorted(found)


def one_rule_networks(space: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rule -> its one-rule network, where the space's slots offer bare rule names (a fixed skeleton).

    A slot offering one candidate only (the first weight layer, whose rule is not searched) keeps it.
    Empty for op x rule spaces, whose one-rule networks are many (their corners stand for them).
    """
    values = [list(choice["_value"]) for choice in space.values()]
    if any(len(v) > 1 and any(not isinstance(c, str) or "@" in c for c in v) for v in values):
        return {}
    from nni_bio.core._registry import is_rule
    from nni_bio.nas.candidates import canonical_candidate

    rules = sorted({c for v in values if len(v) > 1 for c in v if is_rule(c)})
    return {rule: {label: (rule if rule in choice["_value"] else
                           canonical_candidate(rule, choice["_value"]) or choice["_value"][0])
                   for label, choice in space.items()} for rule in rules}


def pick_networks(space: Mapping[str, Mapping[str, Any]], networks: int, seed: int) -> list[dict[str, Any]]:
    """Every network of ``space`` when it has at most ``networks``, else ``networks`` distinct ones drawn with
    ``seed`` (NNI choice format in; ``{"sample", "kind"}`` out, in a stable order)."""
    labels = sorted(space)
    size = math.prod(len(space[label]["_value"]) for label in labels)
    if size <= networks:
        return [{"sample": dict(zip(labels, combo)), "kind": "all"}
                for combo in itertools.product(*(space[label]["_value"] for label in labels))]
    rng, seen, picked = random.Random(seed), set(), []
    while len(picked) < networks:
        combo = tuple(rng.choice(space[label]["_value"]) for label in labels)
        if combo not in seen:
            seen.add(combo)
            picked.append({"sample": dict(zip(labels, combo)), "kind": "random"})
    return picked


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a proportion."""
    from scipy import stats

    if trials == 0:
        return math.nan, math.nan
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95 % t interval (``nan`` bounds for fewer than two values)."""
    import numpy as np
    from scipy import stats

    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return (float(a.mean()) if a.size else math.nan), math.nan, math.nan
    half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return float(a.mean()), float(a.mean()) - half, float(a.mean()) + half


@dataclass
class Landscape:
    """What the trained networks say (scores are validation accuracies)."""

    best_one_rule: str | None
    best_one_rule_score: float
    rank: int  # of the best one-rule network among every network, 1 = best
    networks: int
    mixed: int  # networks with two or more rules
    mixed_better: int
    fraction: tuple[float, float, float]  # mixed_better / mixed and its Clopper-Pearson interval
    by_rule_count: dict[int, tuple[int, float, float, float]]  # count -> (n, mean, low, high)
    per_slot: dict[str, dict[str, tuple[int, float, float, float]]]  # slot -> rule -> (n, mean, low, high)


def analyse(rows: Sequence[Mapping[str, Any]], space: Mapping[str, Mapping[str, Any]]) -> Landscape:
    """``rows``: ``{"sample", "one_rule" (its rule, or None), "val_acc"}`` of the finished networks of ``space``."""
    rows = [r for r in rows if r.get("val_acc") is not None]
    ones = [r for r in rows if r.get("one_rule")]
    best = max(ones, key=lambda r: r["val_acc"]) if ones else None
    score = best["val_acc"] if best else math.nan
    mixed = [r for r in rows if len(rules_of(r["sample"], space)) >= 2]
    better = sum(r["val_acc"] > score for r in mixed) if best else 0
    rank = 1 + sum(r["val_acc"] > score for r in rows) if best else 0
    low, high = clopper_pearson(better, len(mixed))
    counts: dict[int, list[float]] = {}
    slots: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        counts.setdefault(len(rules_of(r["sample"], space)), []).append(r["val_acc"])
        for label, value in r["sample"].items():
            rule = rules_of({label: value}, {label: space[label]})
            if rule:
                slots.setdefault(label, {}).setdefault(rule[0], []).append(r["val_acc"])
    return Landscape(
        best["one_rule"] if best else None, score, rank, len(rows), len(mixed), better,
        (better / len(mixed) if mixed else math.nan, low, high),
        {k: (len(v), *mean_interval(v)) for k, v in sorted(counts.items())},
        {label: {rule: (len(v), *mean_interval(v)) for rule, v in sorted(per.items())}
         for label, per in sorted(slots.items())})


__all__ = ["Landscape", "analyse", "clopper_pearson", "mean_interval", "one_rule_networks", "pick_networks",
           "rules_of"]
