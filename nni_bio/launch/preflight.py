"""Checks ``nni-bio search CONFIG`` runs before it starts NNI, so a config that cannot work fails in
seconds with the reason instead of inside every trial.

* **data set**: the data set the trial command names is present and valid where the trial looks for
  it (``--data-dir``, else ``$NNI_BIO_DATA`` as the trial inherits it; a relative folder is taken
  from the trial's working folder, ``trialCodeDirectory``). Validated by the data layer
  (:func:`nni_bio.data.check_dataset`, what ``nni-bio data check`` runs), so a missing or corrupt
  copy is reported with its message. Local trials only: remote workers have their own disks.
* **search space**: a multi-trial config's search-space file is the space its trial command builds
  (:func:`nni_bio.launch.experiment.check_search_space`); a one-shot trial's space is built to find rules
  that are not installed, and its strategies are checked by name.
* **rules**: a rule named in ``--space-args`` that no installed distribution provides (``nni-bio
  rules`` lists the installed ones) is caught by building the space.
* **port**: an explicit ``--port`` that is in use is refused (NNI's remote-style platforms need the
  next port too).

Every failing check is reported together; nothing is started. ``nni-bio search --no-preflight`` skips
them all (e.g. when the data set exists only on remote workers).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError
from nni_bio.launch.experiment_config import TrialCommand, check_search_space, parse_trial_command

#: NNI platforms that open a second port (``port + 1``) for their workers' command channel
WEBSOCKET_PLATFORMS = frozenset({"hybrid", "remote", "openpai", "kubeflow", "frameworkcontroller", "adl"})


class PreflightError(NniBioError):
    """One or more preflight checks failed; nothing was started."""

    def __init__(self, config: str | os.PathLike, problems: list[str]):
        self.problems = problems
        lines = [f"{config}: {len(problems)} preflight check{'s' if len(problems) > 1 else ''} failed; "
                 "nothing was started:"]
        lines += ["- " + p.replace("\n", "\n  ") for p in problems]
        lines.append("(`nni-bio search --no-preflight` skips these checks, e.g. when the data set exists only "
                     "where remote trials run.)")
        super().__init__("\n".join(lines))


def argument_problem(program: str, argv: list[str]) -> str | None:
    """argparse's own one-line refusal of ``argv`` by ``program`` (``nni-bio`` with ``train ...``, ``nni_bio.trial``
    or ``nni_bio.strategies.oneshot.trial``), or ``None`` when it parses. Nothing is run."""
    import contextlib
    import io

    if program == "nni-bio":
        if argv[:1] != ["train"]:
            raise ValueError(f"only `nni-bio train` command lines are checked here, not {argv[:1]}")
        from nni_bio.train.arguments import parser

        parse, argv = parser().parse_args, argv[1:]
    elif program == "nni_bio.trial":
        from nni_bio.trial import parse_args as parse
    else:
        from nni_bio.strategies.oneshot.trial import parse_args as parse
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse(argv)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        return lines[-1].split(": error: ", 1)[-1] if lines else "refused"
    return None


def platforms(config: dict[str, Any]) -> list[str]:
    """The training services' platforms (``trainingService`` is one mapping or a list of them)."""
    services = config.get("trainingService") or []
    services = services if isinstance(services, list) else [services]
    return [str((s or {}).get("platform", "?")) for s in services]


def is_local(config: dict[str, Any]) -> bool:
    """Whether every trial runs on this machine (so its data set can be checked here)."""
    found = platforms(config)
    return bool(found) and set(found) == {"local"}


def trial_working_dir(config_path: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Where a local trial runs: ``trialCodeDirectory``, relative to the config file as NNI resolves it."""
    code = os.path.expanduser(str(config.get("trialCodeDirectory", ".")))
    return (Path(config_path).resolve().parent / code).resolve()


def trial_data_dir(command: TrialCommand, workdir: Path) -> tuple[Path | None, str]:
    """The data folder a local trial would use, and how it was chosen (for messages)."""
    env = {**os.environ, **command.env}
    if command.args.data_dir is not None:
        raw, how = command.args.data_dir, f"--data-dir {command.args.data_dir}"
    elif env.get("NNI_BIO_DATA"):
        raw, how = env["NNI_BIO_DATA"], f"$NNI_BIO_DATA={env['NNI_BIO_DATA']}"
    else:
        return None, "no --data-dir and no $NNI_BIO_DATA"
    # the shell that runs the trial command expands ~ and $VARS in it
    expanded = os.path.expanduser(re.sub(r"\$(?:\{(\w+)\}|(\w+))",
                                         lambda m: env.get(m.group(1) or m.group(2), m.group(0)), raw))
    path = Path(expanded)
    return (path if path.is_absolute() else workdir / path), how


def check_data(config_path: str | os.PathLike, config: dict[str, Any], command: TrialCommand) -> str:
    """Validate the trial's data set where a local trial would read it (NniBioError: the data layer's reason)."""
    from nni_bio.data import DataError, check_dataset

    dataset = command.args.dataset
    data_dir, how = trial_data_dir(command, trial_working_dir(config_path, config))
    try:
        report = check_dataset(dataset, data_dir)
    except DataError as exc:
        raise NniBioError(
            f"data set {dataset!r} is not usable where the trial command points ({how}"
            + (f" -> {data_dir}" if data_dir is not None and str(data_dir) not in how else "") + "), so every trial "
            f"would fail:\n{exc}\nFix --data-dir in trialCommand (or $NNI_BIO_DATA in the shell that runs "
            "nni-bio search); `nni-bio data check " + dataset + " --data-dir DIR` validates a copy.") from exc
    return f"data set {dataset}: found at {report.location}"


def check_oneshot_space(command: TrialCommand) -> str:
    """Build a one-shot trial's space as the trial will: a rule that is not installed fails here."""
    from nni_bio.search_spaces import space_json

    args, space_args = command.args, command.space_args()
    try:
        space = space_json(args.space, args.dataset, space_args)
    except NniBioError as exc:
        raise NniBioError(
            f"the space of its trialCommand (--space {args.space} --dataset {args.dataset} --space-args "
            f"{args.space_args}) cannot be built here, so the one-shot trial could not run: {str(exc).rstrip('.')}. "
            "A rule from a plugin must be installed where nni-bio search and the trials run (`nni-bio rules` "
            "lists the installed rules).") from exc
    return f"one-shot space {args.space}: {len(space)} choices, rules installed"


def check_oneshot_strategies(command: TrialCommand, config: dict[str, Any]) -> str:
    """The strategies a one-shot experiment offers (its search space's ``strategy``, ``--strategy``) exist."""
    from nni_bio.strategies.oneshot import STRATEGIES

    space = config.get("searchSpace")
    offered = space.get("strategy") if isinstance(space, dict) else None
    names = [str(v) for v in (offered.get("_value") or [])] if isinstance(offered, dict) else []
    names += [command.args.strategy] if command.args.strategy else []
    unknown = sorted({n for n in names if n not in STRATEGIES})
    if unknown:
        raise NniBioError(f"unknown one-shot strateg{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
                          f"(in the search space's 'strategy' or --strategy); available: {', '.join(STRATEGIES)}")
    if not names and not config.get("searchSpaceFile"):
        raise NniBioError("the one-shot trial gets no strategy: give the search space a 'strategy' choice "
                          "(see examples/digits-darts.yml) or pass --strategy in trialCommand")
    names = sorted(set(names))
    listed = ", ".join(names) or f"(from {config['searchSpaceFile']})"
    return f"one-shot strateg{'ies' if len(names) > 1 else 'y'}: {listed}"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``port`` (connect succeeds, or the port cannot be bound)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def ports_needed(config: dict[str, Any], port: int) -> list[int]:
    """``port``, and ``port + 1`` where a platform needs it (NNI's remote-style training services)."""
    return [port, port + 1] if WEBSOCKET_PLATFORMS & set(platforms(config)) else [port]


def check_port(config: dict[str, Any], port: int) -> str:
    busy = [p for p in ports_needed(config, port) if port_in_use(p)]
    if busy:
        extra = f" ({', '.join(platforms(config))} training needs port {port + 1} as well)" if busy != [port] else ""
        raise NniBioError(f"port {', '.join(map(str, busy))} is in use{extra}, so NNI's manager could not start "
                          f"there (another experiment's web UI? `nnictl experiment list` shows them); choose another "
                          "with --port, or leave --port out to take the first free one")
    return f"port {port}: free"


def pick_port(config: dict[str, Any], start: int = 8080) -> int:
    """The first port from ``start`` that is free, with ``port + 1`` free too where the platform needs it."""
    for port in range(start, start + 200):
        if not any(port_in_use(p) for p in ports_needed(config, port)):
            return port
    raise NniBioError(f"no free port in {start}..{start + 199}")


def run_preflight(config_path: str | os.PathLike, config: dict[str, Any], *, port: int | None = None,
                  update_space: bool = False) -> list[str]:
    """Run every check; return one line per passing check, raise :class:`PreflightError` listing every failure.

    Args:
        config_path: the experiment YAML (relative paths in it are taken from its folder).
        config: its content.
        port: the port the user asked for (``None``: one is picked later, so none is checked).
        update_space: rewrite a stale search-space file instead of failing (``--update-space``).
    """
    passed: list[str] = []
    problems: list[str] = []

    def attempt(check, *args, **kwargs):
        try:
            line = check(*args, **kwargs)
        except NniBioError as exc:
            problems.append(str(exc))
        else:
            if line:
                passed.append(line)

    try:
        command = parse_trial_command(config.get("trialCommand", ""))
    except NniBioError as exc:
        problems.append(str(exc))
        command = None
    if command is None and not problems:
        passed.append("trial command is not python3 -m nni_bio.trial/oneshot: data set and space not checked")
    if command is not None:
        if is_local(config):
            attempt(check_data, config_path, config, command)
        else:
            passed.append(f"data set {command.args.dataset}: not checked here ({'/'.join(platforms(config))} "
                          f"trials read it on their workers; `nni-bio data check {command.args.dataset}` there)")
        if command.oneshot:
            attempt(check_oneshot_space, command)
            attempt(check_oneshot_strategies, command, config)
        else:
            def space() -> str:
                state = check_search_space(config_path, config, update=update_space)
                return {"ok": "search space: the one the trial command builds",
                        "updated": f"search space: updated {config.get('searchSpaceFile')} to the space the trial "
                                   "command builds",
                        "skipped": ""}.get(state, state)

            attempt(space)
    if port is not None:
        attempt(check_port, config, port)
    if problems:
        raise PreflightError(config_path, problems)
    return passed


__all__ = ["PreflightError", "TrialCommand", "argument_problem", "check_data", "check_oneshot_space", "check_oneshot_strategies",
           "check_port", "parse_trial_command", "pick_port", "port_in_use", "run_preflight"]
