"""The corners of a multi-rule arm's search: the networks of the study's single-rule arms, in its own space.

A space offering six rules per layer holds every one-rule network, but a short search almost never
reaches one: a random network is several mutations away from the nearest. So before its NNI
experiment, a multi-trial search over more than one rule trains each single-rule arm's network (in a
fixed skeleton, the one-rule network; in an op x rule space, that arm's found architecture) at its
own fidelity and inside its own trial budget. At the search's own measure the multi-rule arm is
then at least as good as the best single rule, and the study's comparison asks whether that
advantage survives retraining.

Example:
    >>> space = {"conv1": {"_value": ["conv_3x3", "conv_5x5"]},
    ...          "conv2": {"_value": ["conv_3x3@fa", "conv_3x3@usf", "skip_connect"]}}
    >>> in_space({"conv1": "conv_3x3@usf", "conv2": "conv_3x3@usf"}, space)
    {'conv1': 'conv_3x3', 'conv2': 'conv_3x3@usf'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nni_bio.study.config import StudyConfig


def corner_arms(config: StudyConfig, arm: str) -> list[str]:
    """The single-rule arms whose rule ``arm`` offers (none when ``arm`` has one rule or is searched one-shot)."""
    rules = config.arms[arm]
    if len(rules) < 2 or config.search.one_shot:
        return []
    return [other for other, theirs in config.arms.items() if other != arm and len(theirs) == 1 and theirs[0] in rules]


def in_space(sample: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """``sample`` as a sample of ``space`` (NNI's choice format), or ``None`` when the space cannot express it.

    A value the slot offers is kept. In the first weight layer, whose update is the exact local gradient under
    every error-only rule, ``op@rule`` (or a bare rule name) takes the candidate named by the op alone
    (:func:`nni_bio.candidates.canonical_candidate`).
    """
    from nni_bio.nas.candidates import canonical_candidate

    mapped = {}
    for label, choice in space.items():
        values = choice["_value"]
        value = sample.get(label)
        if value in values:
            mapped[label] = value
            continue
        canonical = canonical_candidate(value, values)
        if canonical is None:
            return None
        mapped[label] = canonical
    return mapped


__all__ = ["corner_arms", "in_space"]
