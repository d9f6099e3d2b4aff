"""A study file: one comparison of rule sets (arms) under the same space, search budget and recipe.

A study file is YAML (``examples/studies/digits.yml``)::

    name: digits
    dataset: digits
    space: tiny
    space_args: {width: 8}
    search: {strategy: evolution, max_trials: 6, epochs: 4, train: {lr: 0.05}}
    arms:                     # arm name -> rule set; "bio" = every built-in bio-inspired rule
      mixed: bio
      usf: [usf]
      backprop: [backprop]
    retrain: {seeds: [0, 1, 2], epochs: 10, args: {lr: 0.05, no_augment: true}}
    attack: {num_images: 397, eps: "0,0.05,0.1,0.2", attacks: [fgsm, pgd, square]}

Everything is validated here, before any work starts, with messages that say what to fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nni_bio.errors import NniBioError

#: the built-in bio-inspired rules: what ``bio`` expands to (the paper's "mixed" arm offers them all)
BIO_RULES = ("brsf", "dfa", "fa", "frsf", "kp", "usf")
MULTI_TRIAL = ("evolution", "random", "tpe", "policy_gradient")
ONE_SHOT = ("darts", "darts2", "gumbel", "enas", "egnas")
ATTACKS = ("fgsm", "pgd", "square")
#: study-file fields whose change makes an existing study folder another study
_TOP = ("name", "dataset", "data_dir", "space", "space_args", "search", "arms", "retrain", "attack", "compare")


class StudyConfigError(NniBioError):
    """A study file is malformed, or a study folder belongs to another study."""


@dataclass
class SearchSettings:
    """How every arm is searched (the same budget for all)."""

    strategy: str = "evolution"
    max_trials: int = 8
    epochs: int = 3
    concurrency: int = 1
    train: dict[str, Any] = field(default_factory=dict)  # trial options: batch_size, lr, train_limit, ...
    tuner_args: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)  # one-shot strategy hyperparameters
    max_duration: str = "6h"

    @property
    def one_shot(self) -> bool:
        return self.strategy in ONE_SHOT


@dataclass
class RetrainSettings:
    """The from-scratch training of each arm's best architecture (``nni-bio train`` options)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 10
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackSettings:
    """``nni-bio attack`` settings applied to every retrained network."""

    num_images: int = 1000
    eps: str = "0,1/255,2/255,4/255,8/255"
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd", "square"])
    gradients: list[str] = field(default_factory=lambda: ["rule", "bp"])
    pgd_steps: int = 10
    square_queries: int = 100


@dataclass
class StudyConfig:
    """A parsed, validated study file."""

    name: str
    dataset: str
    space: str
    arms: dict[str, list[str]]
    space_args: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    search: SearchSettings = field(default_factory=SearchSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    compare: str = "mixed"  # the arm the verdict compares with the best single bio rule
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data

    def fingerprint(self) -> str:
        """A hash of everything that decides the study's results."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def arm_space_args(self, arm: str) -> dict[str, Any]:
        return {**self.space_args, "rules": self.arms[arm]}


def _section(raw: dict[str, Any], key: str, cls: type, path: str) -> Any:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise StudyConfigError(f"{path}: '{key}' must be a mapping")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, known, 1)[0]!r}?)"
                 if difflib.get_close_matches(u, known, 1) else repr(u) for u in unknown]
        raise StudyConfigError(f"{path}: unknown field(s) in '{key}': {', '.join(hints)}; known: {', '.join(sorted(known))}")
    return cls(**value)


def _rules(arm: str, value: Any, path: str) -> list[str]:
    from nni_bio._registry import get_rule

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(r, str) for r in items):
        raise StudyConfigError(f"{path}: arm {arm!r} must be a rule name, a list of rule names, or 'bio'")
    rules: list[str] = []
    for item in items:
        rules += list(BIO_RULES) if item == "bio" else [item]
    for rule in rules:
        get_rule(rule)  # unknown names fail here, with a did-you-mean
    return sorted(set(rules))


def parse_study(raw: Any, source: str = "<study>") -> StudyConfig:
    """Validate a study file's content (a mapping) into a :class:`StudyConfig`."""
    if not isinstance(raw, dict):
        raise StudyConfigError(f"{source}: a study file is a YAML mapping (see examples/studies/digits.yml)")
    unknown = sorted(set(raw) - set(_TOP))
    if unknown:
        raise StudyConfigError(f"{source}: unknown field(s) {unknown}; a study file has: {', '.join(_TOP)}")
    for key in ("name", "dataset", "space", "arms"):
        if not raw.get(key):
            raise StudyConfigError(f"{source}: the field {key!r} is required (see examples/studies/digits.yml)")
    if not isinstance(raw["arms"], dict):
        raise StudyConfigError(f"{source}: 'arms' maps an arm name to its rule set, e.g. {{mixed: bio, usf: [usf]}}")
    from nni_bio.data import dataset_info
    from nni_bio.search_spaces import space_class

    space_class(raw["space"])  # unknown space: did-you-mean
    dataset_info(raw["dataset"])  # unknown data set: did-you-mean
    arms = {str(arm): _rules(str(arm), rules, source) for arm, rules in raw["arms"].items()}
    config = StudyConfig(
        name=str(raw["name"]), dataset=raw["dataset"], space=raw["space"], arms=arms,
        space_args=dict(raw.get("space_args") or {}), data_dir=raw.get("data_dir"),
        search=_section(raw, "search", SearchSettings, source), retrain=_section(raw, "retrain", RetrainSettings, source),
        attack=_section(raw, "attack", AttackSettings, source), compare=str(raw.get("compare", "mixed")),
        source=source)
    if "rules" in config.space_args:
        raise StudyConfigError(f"{source}: space_args must not name 'rules': each arm sets its own")
    strategies = MULTI_TRIAL + ONE_SHOT
    if config.search.strategy not in strategies:
        raise StudyConfigError(f"{source}: search.strategy {config.search.strategy!r} is not one of {', '.join(strategies)}")
    if config.search.one_shot:  # unknown strategy hyperparameters fail here, not days later in a trial
        from nni_bio.strategies.oneshot import make_strategy

        try:
            make_strategy(config.search.strategy, **{**config.search.train, **config.search.hparams})
        except NniBioError as exc:
            raise StudyConfigError(f"{source}: search.train / search.hparams: {exc}") from exc
    if config.search.max_trials < 1 or config.search.epochs < 1 or config.retrain.epochs < 1:
        raise StudyConfigError(f"{source}: search.max_trials, search.epochs and retrain.epochs must be >= 1")
    if not config.retrain.seeds or len(set(config.retrain.seeds)) != len(config.retrain.seeds):
        raise StudyConfigError(f"{source}: retrain.seeds must be a non-empty list of distinct integers")
    bad = [a for a in config.attack.attacks if a not in ATTACKS]
    if bad:
        raise StudyConfigError(f"{source}: unknown attack(s) {bad}; use {', '.join(ATTACKS)}")
    if config.data_dir is not None:
        config.data_dir = os.path.expanduser(str(config.data_dir))
    return config


def load_study(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study file.

    Example:
        >>> config = load_study("examples/studies/digits.yml")  # doctest: +SKIP
        >>> sorted(config.arms)[:2]                               # doctest: +SKIP
        ['backprop', 'brsf']
    """
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"study file {str(path)!r} not found (examples: examples/studies/*.yml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_study(raw, str(path))


__all__ = ["BIO_RULES", "StudyConfig", "StudyConfigError", "load_study", "parse_study"]
