"""The experiment YAML of ``nni-bio search``: reading it, parsing its trial command, and checking its
search-space file against the space that command builds.

Below both :mod:`nni_bio.launch.preflight` (which runs these checks among others) and
:mod:`nni_bio.launch.experiment` (which starts ``nnictl``); it imports neither.
"""

from __future__ import annotations

import json
import os
import shlex
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nni_bio.core.errors import NniBioError
from nni_bio.search_spaces import space_json

#: tuners that read NNI's NAS search-space format (``layer_choice``); every other tuner reads ``choice``
NAS_FORMAT_TUNERS = frozenset({"RegularizedEvolutionTuner"})
#: trial modules whose command lines are understood here
TRIAL_MODULES = ("nni_bio.trial", "nni_bio.strategies.oneshot.trial")


class ExperimentError(NniBioError):
    """An experiment could not be created or followed."""


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check an experiment YAML (clear errors before NNI sees it)."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"experiment config {str(path)!r} not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ExperimentError(f"{path} must be a YAML mapping of NNI experiment fields")
    for key in ("trialCommand", "tuner", "trainingService"):
        if key not in config:
            raise ExperimentError(f"{path} lacks the field {key!r} (see examples/digits.yml)")
    space_file = config.get("searchSpaceFile")
    if space_file and not (path.parent / space_file).is_file():
        raise ExperimentError(f"{path}: searchSpaceFile {space_file!r} not found next to it; "
                              "generate it with `nni-bio export-space`")
    return config


@dataclass
class TrialCommand:
    """An ``nni_bio.trial`` / ``nni_bio.strategies.oneshot.trial`` command, parsed as the trial will parse it."""

    module: str
    args: Namespace
    env: dict[str, str] = field(default_factory=dict)  # VAR=value words before the interpreter

    @property
    def oneshot(self) -> bool:
        return self.module != "nni_bio.trial"

    def space_args(self) -> dict[str, Any]:
        """``--space-args`` as the trial reads it (a JSON object)."""
        try:
            space_args = json.loads(self.args.space_args)
        except json.JSONDecodeError as exc:
            raise NniBioError(f"trialCommand: --space-args {self.args.space_args!r} is not JSON: {exc}") from exc
        if not isinstance(space_args, dict):
            raise NniBioError(f"trialCommand: --space-args must be a JSON object, got {self.args.space_args!r}")
        return space_args


def parse_trial_command(command: str) -> TrialCommand | None:
    """The trial command's module and arguments; ``None`` when it is not ``python -m nni_bio.{trial,oneshot}``.

    Raises:
        NniBioError: it is one of them, but with arguments the trial would refuse.
    """
    try:
        words = shlex.split(str(command))
    except ValueError as exc:
        raise NniBioError(f"trialCommand is not a valid shell command: {exc}") from exc
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if len(words) < 3 or words[1] != "-m" or words[2] not in TRIAL_MODULES:
        return None
    module = words[2]
    if module == "nni_bio.trial":
        from nni_bio.trial import parse_args
    else:
        from nni_bio.strategies.oneshot.trial import parse_args
    try:
        args = parse_args(words[3:])
    except SystemExit as exc:  # argparse has printed why
        raise NniBioError(f"trialCommand: `python3 -m {module}` does not accept {words[3:]}") from exc
    return TrialCommand(module, args, env)


@dataclass
class TrialSpace:
    """The search space a multi-trial config's ``trialCommand`` (``python3 -m nni_bio.trial ...``) builds."""

    space: str
    dataset: str
    space_args: dict[str, Any]
    space_args_text: str  # as written in the command

    def export_command(self, fmt: str, output: str | os.PathLike) -> str:
        """The ``nni-bio export-space`` command that writes this space's search-space file."""
        command = f"nni-bio export-space {self.space} --dataset {self.dataset}"
        if self.space_args:
            command += f" --space-args {shlex.quote(self.space_args_text)}"
        if fmt == "nas":
            command += " --format nas"
        return f"{command} -o {shlex.quote(str(output))}"


def trial_space(config: dict[str, Any]) -> TrialSpace | None:
    """Space, data set and space arguments of the config's ``nni_bio.trial`` command; ``None`` for any
    other trial command (a one-shot trial builds its own space)."""
    try:
        command = parse_trial_command(str(config.get("trialCommand", "")))
        if command is None or command.oneshot:
            return None
        space_args = command.space_args()
    except ExperimentError:
        raise
    except NniBioError as exc:
        raise ExperimentError(str(exc)) from exc
    return TrialSpace(command.args.space, command.args.dataset, space_args, command.args.space_args)


def space_file_format(config: dict[str, Any]) -> str:
    """``"nas"`` or ``"choice"``: the search-space format the config's tuner reads."""
    return "nas" if (config.get("tuner") or {}).get("name") in NAS_FORMAT_TUNERS else "choice"


def check_search_space(path: str | os.PathLike, config: dict[str, Any] | None = None, *,
                       update: bool = False) -> str:
    """Check that the config's search space is the one its ``trialCommand`` builds, before any trial runs.

    A multi-trial trial (``python3 -m nni_bio.trial --space S --dataset D --space-args A``) rebuilds
    the space from those arguments and freezes it with the tuner's sample; a search-space file made
    for other arguments (other rules: a plugin rule added to ``--space-args``, a changed space) would
    make every trial fail. The comparison is label by label, candidate by candidate, in the format
    the tuner reads.

    Args:
        path: the experiment YAML.
        config: its content (read from ``path`` if not given).
        update: rewrite a stale ``searchSpaceFile`` instead of refusing.

    Returns:
        ``"ok"``, ``"updated"`` or ``"skipped"`` (not an ``nni_bio.trial`` command, or no search space).

    Raises:
        ExperimentError: the space differs (the message lists how and gives the ``nni-bio export-space``
            command that regenerates the file), or the trial command's space cannot be built here.
    """
    path = Path(path)
    config = load_config(path) if config is None else config
    trial = trial_space(config)
    space_file = config.get("searchSpaceFile")
    if trial is None or not (space_file or "searchSpace" in config):
        return "skipped"
    fmt = space_file_format(config)
    try:
        expected = space_json(trial.space, trial.dataset, trial.space_args, fmt)
    except NniBioError as exc:
        raise ExperimentError(
            f"{path}: the space of its trialCommand (--space {trial.space} --dataset {trial.dataset} --space-args "
            f"{trial.space_args_text}) cannot be built here, so no trial could run: {str(exc).rstrip('.')}. A rule from a plugin must "
            "be installed where nni-bio search and the trials run (`nni-bio rules` lists the installed rules).") from exc
    file = path.parent / space_file if space_file else None
    shipped = json.loads(file.read_text()) if file is not None else config["searchSpace"]
    if shipped == expected:
        return "ok"
    where = f"searchSpaceFile {space_file}" if file is not None else "the inline searchSpace"
    if update and file is not None:
        file.write_text(json.dumps(expected, indent=2) + "\n")
        return "updated"
    problems = _space_differences(shipped, expected, fmt)
    command = trial.export_command(fmt, file if file is not None else f"{path.stem}.json")
    raise ExperimentError(
        f"{path}: {where} is not the search space its trialCommand builds (--space {trial.space} --dataset "
        f"{trial.dataset} --space-args {trial.space_args_text}) in the {fmt!r} format its tuner reads; trials would "
        "be sent candidates they cannot build (each such trial fails), or never be offered some:\n" + "\n".join(f"  {p}" for p in problems) + "\nRegenerate it with\n  " + command
        + ("\nor let `nni-bio search --update-space` do it." if file is not None else
           "\nand point searchSpaceFile at it."))


def _space_differences(shipped: Any, expected: dict[str, dict], fmt: str, limit: int = 8) -> list[str]:
    if not isinstance(shipped, dict):
        return ["it is not a JSON object of {label: {_type, _value}}"]
    problems = []
    for label in sorted(set(expected) - set(shipped)):
        problems.append(f"{label}: missing (the trial builds {expected[label]['_value']})")
    for label in sorted(set(shipped) - set(expected)):
        problems.append(f"{label}: not a choice of the trial's space")
    for label in sorted(set(shipped) & set(expected)):
        have, want = shipped[label], expected[label]
        if not isinstance(have, dict) or have.get("_type") != want["_type"]:
            kind = have.get("_type") if isinstance(have, dict) else have
            problems.append(f"{label}: _type {kind!r}, the {fmt!r} format this tuner reads has {want['_type']!r}")
        elif have.get("_value") != want["_value"]:
            values = have.get("_value") or []
            extra = [v for v in values if v not in want["_value"]]
            lacking = [v for v in want["_value"] if v not in values]
            detail = "; ".join(filter(None, [f"the trial builds {lacking} too" if lacking else "",
                                             f"the trial cannot build {extra}" if extra else ""]))
            problems.append(f"{label}: candidates differ ({detail or 'another order'})")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


__all__ = ["NAS_FORMAT_TUNERS", "TRIAL_MODULES", "ExperimentError", "TrialCommand", "TrialSpace", "check_search_space",
           "load_config", "parse_trial_command", "space_file_format", "trial_space"]
