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

``space: timm:NAME`` takes any timm model as the fixed skeleton: it stands for ``space: timm_rules`` with
``space_args: {model: NAME}`` (one rule choice per stage; ``space_args`` may add ``granularity: block``,
``model_args``...).

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

from nni_bio.core.errors import NniBioError

#: the built-in bio-inspired rules: what ``bio`` expands to (the paper's "mixed" arm offers them all)
BIO_RULES = ("brsf", "dfa", "fa", "frsf", "kp", "usf")
MULTI_TRIAL = ("halving", "evolution", "random", "tpe", "policy_gradient")
ONE_SHOT = ("darts", "darts2", "gumbel", "enas", "egnas")
ATTACKS = ("fgsm", "pgd", "square")
#: study-file fields whose change makes an existing study folder another study
#: ``space: timm:NAME`` names a timm model as the fixed skeleton (the ``timm_rules`` space)
TIMM_PREFIX = "timm:"
_TOP = ("name", "dataset", "data_dir", "space", "space_args", "search", "arms", "retrain", "attack", "compare", "seed",
        "landscape")


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
    listen: str | None = None  # also open each arm's NNI manager on these addresses (default: 127.0.0.1 only)
    proxy_check: int = 0  # retrain the compared arm's top N search candidates with the final recipe (0: off)
    repeats: int = 1  # independent searches per searched arm (tuner seeds seed, seed + 1, ...), each winner retrained

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
class LandscapeSettings:
    """The search-free answer (:mod:`nni_bio.study.landscape`): ``networks`` networks of the ``compare`` arm's
    space (all of them when it has no more), drawn with ``seed``, plus its one-rule networks, each trained with
    the retraining recipe and the first retraining seed. ``networks: 0`` (the default) leaves it out."""

    networks: int = 0
    seed: int = 0


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
    seed: int = 0  # seeds every search's tuner (retraining seeds are retrain.seeds)
    landscape: LandscapeSettings = field(default_factory=LandscapeSettings)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data

    def fingerprint(self) -> str:
        """A hash of everything that decides the study's results (where NNI's manager listens does not)."""
        data = self.as_dict()
        for key, default in (("listen", None), ("proxy_check", 0), ("repeats", 1)):
            if data["search"].get(key) == default:
                data["search"].pop(key, None)  # folders made before these fields existed keep their fingerprint
        if data.get("seed") == 0:
            data.pop("seed")
        if data["landscape"]["networks"] == 0:
            data.pop("landscape")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

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


def _timm_skeleton(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``space: timm:NAME`` -> ``space: timm_rules`` with ``space_args.model: NAME``."""
    if not raw["space"].startswith(TIMM_PREFIX):
        return raw
    model = raw["space"][len(TIMM_PREFIX):]
    space_args = dict(raw.get("space_args") or {})
    if not model:
        raise StudyConfigError(f"{source}: 'space: timm:' needs a model name, e.g. timm:resnet18")
    if space_args.get("model", model) != model:
        raise StudyConfigError(f"{source}: space {raw['space']!r} and space_args.model {space_args['model']!r} disagree; "
                               "name the model once")
    return {**raw, "space": "timm_rules", "space_args": {**space_args, "model": model}}


def _rules(arm: str, value: Any, path: str) -> list[str]:
    from nni_bio.core._registry import get_rule

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
    """Validate a study file's content (a mapping) into a :class:`StudyConfig`.

    Every field's type and range is checked here, and the retraining and trial options are parsed by
    the very commands that will run them, so a bad value fails before any work, one line per problem.
    """
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
    for key in ("dataset", "space"):
        if not isinstance(raw[key], str):
            raise StudyConfigError(f"{source}: {key!r} must be a name, got {raw[key]!r}")
    if not isinstance(raw.get("space_args") or {}, dict):
        raise StudyConfigError(f"{source}: 'space_args' must be a mapping of space arguments, e.g. {{width: 8}}")
    raw = _timm_skeleton(raw, source)
    from nni_bio.data import dataset_info
    from nni_bio.search_spaces import space_class

    space_class(raw["space"])  # unknown space: did-you-mean
    dataset_info(raw["dataset"])  # unknown data set: did-you-mean
    arms = {str(arm): _rules(str(arm), rules, source) for arm, rules in raw["arms"].items()}
    config = StudyConfig(
        name=str(raw["name"]), dataset=raw["dataset"], space=raw["space"], arms=arms,
        space_args=dict(raw.get("space_args") or {}), data_dir=raw.get("data_dir"),
        search=_section(raw, "search", SearchSettings, source), retrain=_section(raw, "retrain", RetrainSettings, source),
        attack=_section(raw, "attack", AttackSettings, source), compare=raw.get("compare", "mixed"),
        seed=raw.get("seed", 0), landscape=_section(raw, "landscape", LandscapeSettings, source), source=source)
    problems = field_problems(config)
    if not problems:
        problems = command_problems(config)
    if problems:
        raise StudyConfigError(f"{source}: {len(problems)} problem(s), nothing was run:\n  " + "\n  ".join(problems))
    if config.data_dir is not None:
        config.data_dir = os.path.expanduser(str(config.data_dir))
    return config


def _count(value: Any, name: str, minimum: int = 1) -> str | None:
    """A problem line unless ``value`` is an integer >= ``minimum`` (``True`` is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"{name} must be an integer >= {minimum}, got {value!r}"
    return None


def _names(value: Any, name: str, allowed: tuple[str, ...]) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return f"{name} must be a non-empty list of names from {', '.join(allowed)}, got {value!r}"
    bad = [v for v in value if v not in allowed]
    return f"{name}: unknown {bad}; use {', '.join(allowed)}" if bad else None


def field_problems(config: StudyConfig) -> list[str]:
    """One line per field of the wrong type or out of range (empty when every field is usable)."""
    import re

    s, r, a = config.search, config.retrain, config.attack
    problems: list[str | None] = []
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config.name):
        problems.append(f"name {config.name!r} must be a plain folder name (letters, digits, '_', '.', '-')")
    if config.data_dir is not None and not isinstance(config.data_dir, str):
        problems.append(f"data_dir must be a folder path, got {config.data_dir!r}")
    if "rules" in config.space_args:
        problems.append("space_args must not name 'rules': each arm sets its own")
    if not isinstance(config.compare, str) or config.compare not in config.arms:
        problems.append(f"compare {config.compare!r} must name one of the arms: {', '.join(config.arms)}")
    problems += [_count(config.seed, "seed", 0), _count(config.landscape.networks, "landscape.networks", 0),
                 _count(config.landscape.seed, "landscape.seed", 0)]
    strategies = MULTI_TRIAL + ONE_SHOT
    if s.strategy not in strategies:
        problems.append(f"search.strategy {s.strategy!r} is not one of {', '.join(strategies)}")
    problems += [_count(s.max_trials, "search.max_trials"), _count(s.epochs, "search.epochs"),
                 _count(s.concurrency, "search.concurrency"), _count(s.proxy_check, "search.proxy_check", 0),
                 _count(s.repeats, "search.repeats")]
    if s.strategy == "halving" and isinstance(s.tuner_args, dict):
        problems.append(_halving_problem(s))
    if isinstance(s.proxy_check, int) and s.proxy_check and (s.one_shot or s.proxy_check < 6):
        problems.append("search.proxy_check needs a multi-trial search and at least 6 candidates (a rank correlation "
                        f"of fewer says nothing), got {s.proxy_check!r} with {s.strategy!r}")
    for key in ("train", "tuner_args", "hparams"):
        if not isinstance(getattr(s, key), dict):
            problems.append(f"search.{key} must be a mapping, got {getattr(s, key)!r}")
    if s.listen is not None and (not isinstance(s.listen, str) or not s.listen.strip()):
        problems.append(f"search.listen must be an address (or several, comma separated), got {s.listen!r}")
    if not isinstance(s.max_duration, str) or not re.fullmatch(r"\d+(\.\d+)?[smhd]", s.max_duration):
        problems.append(f"search.max_duration must be a duration like '90m', '6h' or '2d', got {s.max_duration!r}")
    if not isinstance(r.seeds, list) or not r.seeds:
        problems.append(f"retrain.seeds must be a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]; "
                        f"got {r.seeds!r}")
    else:
        bad = [seed for seed in r.seeds if _count(seed, "", 0)]
        if bad:
            problems.append(f"retrain.seeds must be integers >= 0; not usable: {', '.join(map(repr, bad))}")
        elif len(set(r.seeds)) != len(r.seeds):
            problems.append(f"retrain.seeds must be distinct integers, got {r.seeds}")
    problems.append(_count(r.epochs, "retrain.epochs"))
    if not isinstance(r.args, dict):
        problems.append(f"retrain.args must be a mapping of `nni-bio train` options, got {r.args!r}")
    elif isinstance(s.train, dict):
        for key, default in (("no_augment", False), ("cutout", 0)):
            if key in s.train and s.train[key] != r.args.get(key, default):
                problems.append(f"search.train.{key} ({s.train[key]!r}) differs from retrain.args.{key} "
                                f"({r.args.get(key, default)!r}): search trials and retraining use one augmentation; "
                                f"set it once, in retrain.args")
    problems += [_count(a.num_images, "attack.num_images"), _count(a.pgd_steps, "attack.pgd_steps"),
                 _count(a.square_queries, "attack.square_queries"), _names(a.attacks, "attack.attacks", ATTACKS),
                 _names(a.gradients, "attack.gradients", ("rule", "bp"))]
    if not isinstance(a.eps, str):
        problems.append(f"attack.eps must be a quoted comma-separated list like \"0,2/255,8/255\", got {a.eps!r}")
    else:
        from nni_bio.evaluate.robustness import parse_eps

        try:
            parse_eps(a.eps)
        except NniBioError as exc:
            problems.append(f"attack.eps: {exc}")
    return [p for p in problems if p]


def _halving_problem(s: SearchSettings) -> str | None:
    """A problem line unless successive halving's ``tuner_args`` (rungs, eta, population) are usable."""
    unknown = sorted(set(s.tuner_args) - {"rungs", "eta", "population", "seed"})
    if unknown:
        return f"search.tuner_args: successive halving takes rungs, eta, population and seed; not {unknown}"
    rungs, eta = s.tuner_args.get("rungs"), s.tuner_args.get("eta", 3)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta <= 1:
        return f"search.tuner_args.eta must be a number > 1, got {eta!r}"
    if rungs is not None and (not isinstance(rungs, list) or not rungs or any(
            isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rungs) or rungs != sorted(set(rungs))):
        return f"search.tuner_args.rungs must be increasing epochs >= 1, e.g. [1, 3, 9]; got {rungs!r}"
    if s.tuner_args.get("population") is not None and _count(s.tuner_args["population"], ""):
        return f"search.tuner_args.population must be an integer >= 1, got {s.tuner_args['population']!r}"
    if rungs and s.epochs != rungs[-1]:
        return f"search.epochs ({s.epochs}) must be the top rung's epochs ({rungs[-1]}), the search's own measure"
    from nni_bio.strategies.halving import rung_schedule

    smallest = sum(rung_schedule(1, len(rungs or [0, 0, 0]), eta))
    if isinstance(s.max_trials, int) and s.max_trials < smallest:
        return (f"search.max_trials ({s.max_trials}) is below the {smallest} trials that one network per rung "
                "needs")
    return None


def command_problems(config: StudyConfig) -> list[str]:
    """Parse every arm's search-trial and retraining command with the parsers that will run them, and build
    the space once (its arguments' types): one line per refusal."""
    from nni_bio.study import stages

    problems = []
    if config.search.one_shot:  # unknown strategy hyperparameters fail here, not days later in a trial
        from nni_bio.strategies.oneshot import make_strategy

        try:
            make_strategy(config.search.strategy, **{**config.search.train, **config.search.hparams})
        except NniBioError as exc:
            problems.append(f"search.train / search.hparams: {exc}")
    from nni_bio.launch.preflight import argument_problem

    arm = config.compare
    trial_module, trial_args = stages.trial_command(config, arm, stages.Slot(), Path("<search>"))
    error = argument_problem(trial_module, trial_args)
    if error:
        problems.append(f"search.train: the search trial refuses it: {error}")
    error = argument_problem("nni-bio", stages.retrain_arguments(config, arm, config.retrain.seeds[0], Path("<study>"),
                                                                 stages.Slot()))
    if error:
        problems.append(f"retrain.args: `nni-bio train` refuses it: {error}")
    try:
        stages.space_size(config, arm)
    except Exception as exc:  # noqa: BLE001  (whatever the space's constructor raises, said in one line)
        problems.append(f"space_args {json.dumps(config.space_args)}: the space {config.space!r} cannot be built: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return problems


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
    if path.stat().st_size > MAX_STUDY_BYTES:
        raise StudyConfigError(f"{path}: {path.stat().st_size:,} bytes; a study file has at most {MAX_STUDY_BYTES:,}")
    try:
        raw = yaml.load(path.read_text(), Loader=_PlainLoader)  # noqa: S506  (a SafeLoader without aliases)
    except yaml.YAMLError as exc:
        raise StudyConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    except RecursionError:
        raise StudyConfigError(f"{path}: nested too deeply to be a study file") from None
    depth = _depth(raw)
    if depth > MAX_STUDY_DEPTH:
        raise StudyConfigError(f"{path}: nested {depth} levels deep; a study file needs at most {MAX_STUDY_DEPTH}")
    return parse_study(raw, str(path))


#: limits on a study file, which may come from anyone: its size and nesting
MAX_STUDY_BYTES = 256 * 1024
MAX_STUDY_DEPTH = 8


class _PlainLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases (a few aliases can stand for billions of nodes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not accepted in a study file: write the value out "
                                 f"(line {event.start_mark.line + 1}, column {event.start_mark.column + 1})")
        return super().compose_node(parent, index)


def _depth(value: Any) -> int:
    """Nesting depth of plain data, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


__all__ = ["BIO_RULES", "LandscapeSettings", "StudyConfig", "StudyConfigError", "load_study", "parse_study"]
