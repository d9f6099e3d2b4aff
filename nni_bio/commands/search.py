"""``nni-bio search CONFIG.yml``: check the config, run an NNI experiment, follow it to its end, print the best
architecture. ``nni-bio search --attach ID`` follows one that already runs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError
from nni_bio.nas._compat import LISTEN_ENV
from nni_bio.nas.candidates import describe_candidate, unwrap_choice


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="launch an nnictl experiment, follow it, print the best architecture",
        description="Check an experiment config (data set, search space, rules, port), launch it with nnictl, "
                    "follow it until it ends and print the best architecture. The experiment runs under NNI's "
                    "manager: closing the terminal or Ctrl-C stops only the following; `nni-bio search --attach ID` "
                    "follows it again.")
    parser.add_argument("config", nargs="?", help="experiment YAML, e.g. examples/digits.yml")
    parser.add_argument("--attach", metavar="ID", default=None,
                        help="follow the running experiment ID (started by nni-bio search or nnictl) to its end and "
                             "print its best architecture, instead of launching one")
    parser.add_argument("--port", type=int, default=None, help="web UI / REST port (default: first free from 8080)")
    parser.add_argument("--listen", metavar="ADDRESS", default=None,
                        help="also open NNI's manager (web UI and REST API, which has no authentication) on ADDRESS, "
                             "comma separated; 0.0.0.0 = every interface. Default: 127.0.0.1 only (plus nniManagerIp "
                             "for remote workers); reach the UI from elsewhere through an SSH tunnel")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop following after so many seconds (the experiment goes on); default: follow it "
                             "until it ends, however long")
    parser.add_argument("--stop-when-done", action="store_true", help="stop the experiment (and its web UI) at the end")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--update-space", action="store_true",
                        help="rewrite the config's searchSpaceFile when it is not the space its trialCommand builds "
                             "(e.g. after adding a plugin rule to --space-args), instead of refusing to start")
    parser.add_argument("--no-preflight", action="store_true",
                        help="skip the checks made before launching (data set where the trials look for it, search "
                             "space, rules, port), e.g. when the data set exists only on remote workers")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nni_bio.launch import experiment as ex
    from nni_bio.launch import preflight
    from nni_bio.launch.experiment_config import check_search_space, load_config

    attach_id = getattr(args, "attach", None)
    if attach_id is not None:
        if args.config is not None or args.port is not None:
            raise NniBioError("--attach ID follows a running experiment: give neither CONFIG nor --port with it")
        client, port, profile = ex.attach(attach_id)
        config = dict(profile.get("params") or {})
        print(f"attached to experiment {attach_id}: {config.get('experimentName') or ''}")
        return follow(args, client, attach_id, port, config, profile)
    if args.config is None:
        raise NniBioError("give an experiment config (nni-bio search CONFIG.yml) or --attach ID")

    config = load_config(args.config)
    update = getattr(args, "update_space", False)
    if getattr(args, "no_preflight", False):
        print("preflight checks skipped (--no-preflight)")
        # --update-space is an explicit request: it still rewrites a stale file
        if update and check_search_space(args.config, config, update=True) == "updated":
            print(f"updated {config['searchSpaceFile']} to the space the trial command builds")
    else:
        # Before launching: data set, search-space file (the space the trials build), rules, port. A failing
        # check raises with every reason (exit status 2) and nothing is started.
        for line in preflight.run_preflight(args.config, config, port=args.port, update_space=update):
            print(f"preflight: {line}")
    listen = getattr(args, "listen", None)
    if listen:
        os.environ[LISTEN_ENV] = listen  # for the URL printed below too
    if args.port:
        ex.create(args.config, args.port, listen)
        port, exp_id = args.port, ex.RestClient(args.port).experiment_id()
    else:
        _, port, exp_id = ex.create_on_free_port(args.config, config, listen=listen)
    client = ex.RestClient(port)
    print(f"experiment {exp_id} started: {config.get('experimentName', '')}")
    return follow(args, client, exp_id, port, config)


def follow(args: argparse.Namespace, client: Any, exp_id: str, port: int, config: dict[str, Any],
           profile: dict[str, Any] | None = None) -> int:
    """Follow the experiment to its end (surviving a closed terminal), then print its best architecture."""
    from nni_bio.launch import experiment as ex
    from nni_bio.launch.preflight import is_local

    log = _hangup_log(client, exp_id, profile)
    print(f"web UI: {ex.web_ui_hint(port)}   (stop it with: nnictl stop {exp_id})")
    print(f"following it until it ends; closing this terminal or Ctrl-C does not stop it (a closed terminal's "
          f"follower goes on, writing to {log}); follow it again with: nni-bio search --attach {exp_id}", flush=True)
    epochs = ex.oneshot_epochs(config.get("trialCommand", ""))
    restore = survive_hangup(log)
    try:
        trials = ex.wait(client, config.get("maxTrialNumber"), getattr(args, "timeout", None),
                         progress=not args.no_progress, epochs=epochs, read_stdout=is_local(config))
    except KeyboardInterrupt:
        print(f"\nstopped following; the experiment goes on. Follow it again with: nni-bio search --attach {exp_id}; "
              f"stop it with: nnictl stop {exp_id}")
        return 130
    except ex.ExperimentError as exc:
        raise ex.ExperimentError(f"{exc}. Experiment {exp_id} is left as it is: `nni-bio search --attach {exp_id}` "
                                 f"follows it again, `nnictl stop {exp_id}` stops it") from exc
    finally:
        restore()
    return report(args, trials, exp_id, port, first_layer_slots(config))


def first_layer_slots(config: dict[str, Any]) -> set[str]:
    """The labels of the first-weight-layer choices of the space the config's trials build (empty when unknown)."""
    from nni_bio.launch.experiment_config import trial_space

    try:
        trial = trial_space(config)
        if trial is None:
            return set()
        from nni_bio.nas.mutables import input_layer_labels
        from nni_bio.search_spaces import space_arguments, space_class

        cls = space_class(trial.space)
        return input_layer_labels(cls(**space_arguments(cls, trial.space_args, trial.dataset)))
    except Exception:  # only the printout's wording depends on it; the preflight reports a broken space
        return set()


def report(args: argparse.Namespace, trials: list[Any], exp_id: str, port: int,
           first_layers: set[str] = frozenset()) -> int:
    """Print the trials' outcome and the best architecture; stop the experiment with --stop-when-done.

    ``first_layers``: slots printed as ``exact local gradient`` when their candidate names the op alone.
    """
    from nni_bio.launch import experiment as ex

    succeeded = sum(t.status == "SUCCEEDED" for t in trials)
    print(f"{len(trials)} trials: {succeeded} succeeded, {sum(t.status == 'FAILED' for t in trials)} failed")
    best = ex.best_trial(trials)
    if best is None:
        print("no trial succeeded; look at the trial logs in the web UI (Trials detail -> Log) or with "
              f"`nnictl log trial {exp_id}`")
        code = 1
    else:
        # A one-shot trial (python -m nni_bio.strategies.oneshot.trial) reports its derived architecture as the final
        # metric "sample" (a JSON string), and says in "default_metric" what its default is; its
        # parameters only name the strategy.
        oneshot = "sample" in (best.final or {})
        if oneshot:
            from nni_bio.strategies.oneshot.trial import describe_final

            first, *rest = describe_final(best.final)
            print(f"best trial {best.id}: {first}", *rest, sep="\n")
        else:
            print(f"best trial {best.id}: validation accuracy {best.score:.4f}")
        architecture = json.loads(best.final["sample"]) if oneshot else best.parameters
        if architecture is not best.parameters:
            print(f"derived by one-shot strategy {best.final.get('strategy', '?')} (parameters: {best.parameters})")
        print("architecture (slot: op @ learning rule):")
        for label, value in sorted(architecture.items()):
            print(f"  {label:<24} {describe_candidate(unwrap_choice(value), label in first_layers)}")
        code = 0
    if args.stop_when_done:
        ex.stop(exp_id)
        print(f"experiment {exp_id} stopped")
    else:
        print(f"the web UI stays up at http://127.0.0.1:{port}; stop it with: nnictl stop {exp_id}")
    return code


def _hangup_log(client: Any, exp_id: str, profile: dict[str, Any] | None) -> Path:
    """Where a follower whose terminal closed writes: the experiment's folder, else the temp folder."""
    if profile is None:
        try:
            profile = client.profile()
        except (AttributeError, OSError, ValueError):
            profile = {}
    folder = Path(str(profile.get("logDir") or Path.home() / "nni-experiments" / exp_id))
    return (folder if folder.is_dir() else Path(tempfile.gettempdir())) / f"nni-bio-search-{exp_id}.log"


def survive_hangup(log: str | os.PathLike) -> Callable[[], None]:
    """Keep following when the terminal closes: on SIGHUP, send stdout and stderr to ``log`` and go on.

    The experiment itself runs under NNI's manager in its own process group and is not affected by the
    terminal. Where SIGHUP is already ignored (``nohup``) or cannot be handled (not the main thread,
    no SIGHUP on this system) nothing changes. Returns the function that restores the previous handler.
    """
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or signal.getsignal(sighup) == signal.SIG_IGN:
        return lambda: None

    def on_hangup(signum: int, frame: Any) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for target in (1, 2):  # the terminal is gone: writing to it would fail
                os.dup2(fd, target)
        finally:
            os.close(fd)
        print(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] terminal closed (SIGHUP): nni-bio search goes on "
              "following the experiment and writes here", flush=True)

    try:
        previous = signal.signal(sighup, on_hangup)
    except ValueError:  # signal handlers can be set in the main thread only
        return lambda: None
    return lambda: signal.signal(sighup, previous)
