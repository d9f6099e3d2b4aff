"""Launch an ``nnictl create`` experiment, follow it through NNI's REST API, report the best trial.

This is what ``nni-bio search CONFIG.yml`` runs. The experiment itself is plain NNI: the same YAML
works with ``nnictl create --config CONFIG.yml`` directly (with this environment's ``bin`` on PATH,
so the trial command's ``python3`` is the one with nni-bio installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError
from nni_bio.launch.experiment_config import ExperimentError, parse_trial_command
from nni_bio.nas.candidates import unwrap_choice

FINISHED = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}


@dataclass
class Trial:
    """One trial as the REST API reports it, with parameters and metrics decoded."""

    id: str
    status: str
    parameters: dict[str, Any]
    final: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def score(self) -> float | None:
        return None if self.final is None else float(self.final.get("default", float("nan")))


class RestClient:
    """The few endpoints of NNI's REST API nni-bio reads."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.base = f"http://{host}:{port}/api/v1/nni"

    def get(self, endpoint: str) -> Any:
        with urllib.request.urlopen(f"{self.base}/{endpoint}", timeout=10) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        return self.get("check-status")

    def experiment_id(self) -> str:
        return self.get("experiment")["id"]

    def trials(self) -> list[Trial]:
        return [decode_trial(t) for t in self.get("trial-jobs")]

    def profile(self) -> dict[str, Any]:
        """The experiment profile: ``id``, ``params`` (the config, camelCase keys), ``logDir``, ..."""
        return self.get("experiment")

    def metrics(self, trial_id: str) -> list[dict[str, Any]]:
        """A trial's metric records (``type`` PERIODICAL for intermediate results, FINAL), as NNI stores them."""
        return self.get(f"metric-data/{urllib.parse.quote(trial_id)}")

    def trial_file(self, trial_id: str, name: str = "stdout") -> str:
        """A trial's ``stdout``, ``stderr`` or ``trial.log`` as text."""
        url = f"{self.base}/trial-file/{urllib.parse.quote(trial_id)}/{urllib.parse.quote(name)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode("utf-8", "replace")


def decode_trial(raw: dict[str, Any]) -> Trial:
    """Unwrap NNI's JSON-in-JSON trial record into a :class:`Trial`."""
    params: dict[str, Any] = {}
    for blob in raw.get("hyperParameters") or []:
        params = json.loads(blob).get("parameters", {}) if isinstance(blob, str) else blob.get("parameters", {})
    final = None
    for metric in raw.get("finalMetricData") or []:
        final = _decode_metric(metric["data"])
    return Trial(raw.get("trialJobId", "?"), raw.get("status", "?"), params, final, raw)


class PortTakenError(ExperimentError):
    """``nnictl create`` found its port taken (by another experiment started at the same moment)."""


def web_ui_hint(port: int, listen: str | None = None) -> str:
    """Where the web UI answers and how to reach it from another machine (the manager listens on loopback)."""
    listen = listen or os.environ.get("NNI_BIO_LISTEN")
    if listen:
        return f"http://127.0.0.1:{port} (also open on {listen}, without authentication)"
    return (f"http://127.0.0.1:{port} (this machine only; from your laptop: ssh -N -L {port}:127.0.0.1:{port} "
            f"USER@THIS-HOST, then open http://localhost:{port})")


def create(config_path: str | os.PathLike, port: int, listen: str | None = None, *,
           keep_open: Any = None) -> subprocess.CompletedProcess:
    """Run ``nnictl create`` with this interpreter's environment first on PATH.

    NNI's manager listens on 127.0.0.1 only (plus a remote experiment's ``nniManagerIp``; nni-bio's
    patch of NNI, :func:`nni_bio.nas._compat.patch_manager_listen_address`, applied here if missing);
    ``listen`` opens it to more addresses, comma separated (``0.0.0.0``: every interface).

    Raises:
        PortTakenError: the port was taken between choosing it and binding it.
        ExperimentError: any other failure; the message ends with nnictl's last error line, and the
            whole output is in the exception's ``output``.
    """
    from nni_bio.nas import _compat

    _compat.ensure_manager_patched()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "PYTHONWARNINGS": "ignore"}
    if listen:
        env[_compat.LISTEN_ENV] = listen
    nnictl = Path(bindir) / "nnictl"
    command = [str(nnictl) if nnictl.exists() else "nnictl", "create", "--config", str(config_path), "--port", str(port)]
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          pass_fds=(keep_open.fileno(),) if keep_open is not None else ())
    if done.returncode != 0 or "ERROR" in done.stdout:
        output = f"{done.stdout}\n{done.stderr}"
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if "Error" in line or "ERROR" in line), lines[-1] if lines else "")
        kind = PortTakenError if re.search(rf"Port {port} is not idle|EADDRINUSE", output) else ExperimentError
        error = kind(f"`nnictl create --config {config_path} --port {port}` failed: {cause[:300]}")
        error.output = output  # type: ignore[attr-defined]
        raise error
    return done


#: machine-wide lock file held while a port is chosen and NNI's manager binds it
PORT_LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / f"nni-bio-ports-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"


@contextlib.contextmanager
def port_lock() -> Iterator[Any]:
    """Hold :data:`PORT_LOCK` (every nni-bio process of this user choosing or starting an NNI manager waits)."""
    import fcntl

    PORT_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(PORT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiments_in(working_dir: str | os.PathLike, home: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """NNI's records of the experiments not marked stopped whose working directory is ``working_dir``."""
    target = os.path.realpath(working_dir)
    return {exp_id: record for exp_id, record in experiment_records(home).items()
            if record.get("status") != "STOPPED" and record.get("logDir")
            and os.path.realpath(record["logDir"]) == target}


def create_on_free_port(config_path: str | os.PathLike, config: dict[str, Any], start: int = 8080,
                        attempts: int = 5, listen: str | None = None) -> tuple[subprocess.CompletedProcess, int, str]:
    """``nnictl create`` on the first port that is free on this machine; return its output, port and experiment id.

    Choosing a port and binding it are two steps, so two experiments started at the same moment (two
    studies, two ``nni-bio search``) could both choose the same one. A lock file
    (:data:`PORT_LOCK`) makes the two steps one for every nni-bio process of this user; a port taken
    by anything else in between is detected (nnictl's refusal, or another experiment answering
    there) and the next free port is tried.
    """
    from nni_bio.launch.preflight import pick_port

    with port_lock() as lock:
        for _ in range(attempts):
            port = pick_port(config, start)
            try:
                # nnictl inherits the lock: were this process killed now, the lock stays held until nnictl
                # has registered the experiment it is starting, so whoever runs next finds it (experiments_in)
                done = create(config_path, port, listen, keep_open=lock)
            except PortTakenError:
                start = port + 1
                continue
            wanted = re.search(r"nnictl stop (\S+?)[\"'\s]", done.stdout + " ")
            answering = RestClient(port).experiment_id()
            if wanted and answering != wanted.group(1):  # another manager answers there: ours could not bind
                stop(wanted.group(1))
                start = port + 1
                continue
            return done, port, answering
    raise ExperimentError(f"no port could be bound for NNI's manager after {attempts} tries from {start}: "
                          "other processes take them as fast as they are found; pass --port explicitly")


def stop(experiment_id: str) -> None:
    bindir = str(Path(sys.executable).parent)
    nnictl = Path(bindir) / "nnictl"
    subprocess.run([str(nnictl) if nnictl.exists() else "nnictl", "stop", experiment_id],
                   capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


#: seconds between two polls of NNI's REST API
POLL_SECONDS = 2.0
#: seconds NNI's manager may stay silent (busy, restarting) before :func:`wait` gives up on it
UNREACHABLE_AFTER = 120.0


def wait(client: RestClient, max_trials: int | None, timeout: float | None = None, progress: bool = True, *,
         epochs: int | None = None, read_stdout: bool = False, poll: float = POLL_SECONDS) -> list[Trial]:
    """Poll until the experiment is DONE (or every trial finished); show progress meanwhile.

    Args:
        client: the experiment's REST API.
        max_trials: ``maxTrialNumber`` (the progress bar's length; ``None``: unknown).
        timeout: give up after so many seconds (:class:`ExperimentError`); ``None`` or ``math.inf``:
            follow the experiment until it ends, however many days that takes.
        progress: show a progress bar (trials finished, best score so far).
        epochs: the one-shot trial command's ``--epochs``: the bar then counts search epochs from
            each trial's intermediate results and prints a line per epoch with its numbers and the
            current derived architecture (:func:`oneshot_progress`), instead of "0/1 trials".
        read_stdout: take a one-shot trial's current derived architecture from its stdout when its
            intermediate results do not carry it (local trials: reading it is cheap).
        poll: seconds between polls.

    Raises:
        ExperimentError: NNI reports an experiment error, the timeout passed, or the manager stopped
            answering for :data:`UNREACHABLE_AFTER` seconds.
    """
    import math

    from tqdm import tqdm

    oneshot = bool(epochs) and progress
    total = (max_trials or 1) * epochs if oneshot else max_trials
    bar = tqdm(total=total, unit="epoch" if oneshot else "trial", disable=not progress, dynamic_ncols=True)
    deadline = time.monotonic() + timeout if timeout is not None and math.isfinite(timeout) else math.inf
    trials: list[Trial] = []
    last_answer = time.monotonic()
    shown: dict[str, int] = {}  # one-shot: epochs already printed per trial
    closed: set[str] = set()  # one-shot: finished trials whose metrics were read after they ended
    log: ManagerLog | None = None
    lost: tuple[str, float] | None = None  # a lost-worker line, and since when no trial runs
    try:
        while True:
            try:
                status = client.status()
                trials = client.trials()
            except (OSError, ValueError) as exc:  # URLError is an OSError; a half-written answer a ValueError
                if time.monotonic() - last_answer > UNREACHABLE_AFTER:
                    raise ExperimentError(
                        f"NNI's manager ({client.base}) has not answered for {UNREACHABLE_AFTER:.0f} s: {exc}. "
                        "`nnictl experiment list` shows whether the experiment still runs") from exc
                time.sleep(poll)
                continue
            last_answer = time.monotonic()
            if log is None:
                log = ManagerLog.of(client)
            for line in log.check():
                (tqdm.write if progress else print)(f"warning: NNI lost a remote worker: {line}", file=sys.stderr)
                lost = lost or (line, time.monotonic())
            if lost and any(t.status in ("RUNNING", "WAITING", "UNKNOWN") for t in trials):
                lost = (lost[0], time.monotonic())  # other workers carry on: wait for the experiment as usual
            elif lost and status.get("status") == "RUNNING" and time.monotonic() - lost[1] > STALLED_AFTER:
                raise ExperimentError(log.stalled_message(lost[0]))
            finished = [t for t in trials if t.status in FINISHED]
            scores = [t.score for t in finished if t.score is not None]
            if oneshot:
                _show_oneshot_epochs(client, trials, epochs, shown, closed, bar, read_stdout)
                bar.total = max(bar.total or 0, len(trials) * epochs)
                bar.n = sum(min(n, epochs) for n in shown.values())
            else:
                bar.n = len(finished)
            bar.set_postfix(best=f"{max(scores):.4f}" if scores else "-",
                            failed=sum(t.status == "FAILED" for t in finished), refresh=False)
            bar.refresh()
            if status.get("status") in ("DONE", "STOPPED", "ERROR", "NO_MORE_TRIAL"):
                if status.get("status") == "ERROR":
                    raise ExperimentError(f"NNI reports an experiment error: {status.get('errors')}")
                if status.get("status") != "NO_MORE_TRIAL" or len(finished) == len(trials):
                    return trials
            if time.monotonic() > deadline:
                raise ExperimentError(f"experiment still running after {timeout:.0f} s")
            time.sleep(poll)
    finally:
        bar.close()


#: seconds with a lost worker and no trial running or waiting before the follower gives up
STALLED_AFTER = 60.0


class ManagerLog:
    """Watches ``nnimanager.log`` for what NNI 3.0 reports nowhere else: a remote worker it lost.

    NNI then marks the worker's running trials USER_CANCELED, starts no new trial and keeps the
    experiment RUNNING for ever (its manager loop is blocked); the only reason is this log line.
    """

    LOST_WORKER = "Failed to recover worker"

    def __init__(self, path: Path | None, experiment_id: str = "?"):
        self.path, self.experiment_id, self.offset = path, experiment_id, 0

    @classmethod
    def of(cls, client: RestClient) -> ManagerLog:
        try:
            info = client.get("experiment")
            params = info.get("params") or {}
        except Exception:  # noqa: BLE001  (no such endpoint or an odd answer: nothing to watch)
            return cls(None)
        root = Path(os.path.expanduser(params.get("experimentWorkingDirectory") or "~/nni-experiments"))
        return cls(root / str(info.get("id")) / "log" / "nnimanager.log", str(info.get("id")))

    def check(self) -> list[str]:
        """The lost-worker lines the manager logged since the last check."""
        if self.path is None or not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        cut = text.rfind("\n") + 1  # keep a half-written last line for the next check
        self.offset += len(text[:cut].encode())
        return [line.strip()[-300:] for line in text[:cut].splitlines() if self.LOST_WORKER in line]

    def stalled_message(self, line: str) -> str:
        return (f"NNI lost a remote worker and runs no trial since: {line}. The worker's running trials were "
                f"cancelled (USER_CANCELED) and NNI 3.0 starts no new trial without a worker. Bring the worker back, "
                f"then `nnictl stop {self.experiment_id}` and `nnictl resume {self.experiment_id}` (finished trials "
                "are kept); see examples/README.md, 'Remote machines'.")


def _show_oneshot_epochs(client: RestClient, trials: list[Trial], epochs: int, shown: dict[str, int],
                         closed: set[str], bar: Any, read_stdout: bool) -> None:
    """Print a progress line for every one-shot trial with a new search epoch; set the bar's description.

    ``shown``: epochs already printed per trial; ``closed``: finished trials read for the last time.
    """
    for index, trial in enumerate(trials, 1):
        if trial.id in closed or trial.status not in FINISHED | {"RUNNING"}:
            continue
        try:
            records = client.metrics(trial.id)
        except (OSError, ValueError):
            continue
        results = intermediate_results(records)
        if trial.status in FINISHED:
            closed.add(trial.id)  # its metrics cannot change any more
        if len(results) != shown.get(trial.id, 0):
            sample = None
            if read_stdout and results and "sample" not in results[-1]:
                for name in TRIAL_LOGS:  # NNI 3 keeps a local trial's prints in trial.log
                    try:
                        sample = sample_from_log(client.trial_file(trial.id, name))
                    except (OSError, ValueError):
                        sample = None
                    if sample is not None:
                        break
            bar.write(oneshot_progress(trial.id, records, epochs, sample))
            shown[trial.id] = len(results)
        if trial.status == "RUNNING":
            which = f"trial {index}/{len(trials)} " if len(trials) > 1 else ""
            bar.set_description_str(f"{which}epoch {len(results)}/{epochs}", refresh=False)


def _decode_metric(data: Any) -> dict[str, Any]:
    """NNI stores a metric as JSON of (JSON of) the reported value; a bare number becomes ``{"default": x}``."""
    value = json.loads(data) if isinstance(data, str) else data
    value = json.loads(value) if isinstance(value, str) else value
    return value if isinstance(value, dict) else {"default": value}


def intermediate_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's intermediate results (``PERIODICAL`` metric records from ``GET metric-data/ID``), in order."""
    rows = sorted((r for r in records if r.get("type") == "PERIODICAL"), key=lambda r: int(r.get("sequence", 0)))
    return [_decode_metric(r.get("data")) for r in rows]


def oneshot_epochs(trial_command: str) -> int | None:
    """``--epochs`` of a ``python3 -m nni_bio.strategies.oneshot.trial`` trial command; ``None`` for any other command."""
    try:
        command = parse_trial_command(trial_command)
    except NniBioError:
        return None
    return command.args.epochs if command is not None and command.oneshot else None


#: a one-shot trial's epoch line, as printed or as NNI's trial.log keeps it (``[time] PRINT epoch k: ... | {...}``)
_EPOCH_LINE = re.compile(r"^(?:\[[^\]]*\] PRINT )?epoch (\d+): .*\| (\{.*\})\s*$", re.MULTILINE)
#: the trial files (NNI's ``trial-file`` endpoint) a one-shot trial's epoch lines may be in
TRIAL_LOGS = ("trial.log", "stdout")


def sample_from_log(text: str) -> dict[str, Any] | None:
    """The derived architecture of the last search epoch a one-shot trial printed (``epoch k: ... | {sample}``;
    NNI's ``trial.log`` prefixes it with ``[time] PRINT``)."""
    for match in reversed(list(_EPOCH_LINE.finditer(text))):
        try:
            sample = json.loads(match.group(2))
        except json.JSONDecodeError:
            continue
        if isinstance(sample, dict):
            return sample
    return None


def format_sample(sample: dict[str, Any], limit: int = 12) -> str:
    """``label=candidate`` pairs of an architecture, sorted by label; at most ``limit`` of them."""
    items = [f"{label}={unwrap_choice(value)}" for label, value in sorted(sample.items())]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return " ".join(items[:limit]) + more


def oneshot_progress(trial_id: str, records: list[dict[str, Any]], epochs: int,
                     sample: dict[str, Any] | None = None) -> str:
    """One progress line of a one-shot trial from its REST metric records.

    ``epoch k/N`` counts the trial's intermediate results (one per search epoch; ``N`` is the trial
    command's ``--epochs``), followed by the last epoch's supernet and derived-architecture accuracies
    and the current derived architecture: the last intermediate result's ``sample`` when it carries
    one (JSON text or an object), else ``sample`` (e.g. from :func:`sample_from_log`).
    """
    results = intermediate_results(records)
    line = f"trial {trial_id}: epoch {len(results)}/{epochs}"
    if not results:
        return line + " (no search epoch finished yet)"
    last = results[-1]
    parts = []
    supernet = last.get("supernet_val_acc", last.get("default"))
    if isinstance(supernet, (int, float)):
        parts.append(f"supernet val acc {supernet:.4f}")
    if isinstance(last.get("derived_val_acc"), (int, float)):
        parts.append(f"derived architecture (shared weights) val acc {last['derived_val_acc']:.4f}")
    current = last.get("sample", sample)
    if isinstance(current, str):
        try:
            current = json.loads(current)
        except json.JSONDecodeError:
            current = None
    if isinstance(current, dict) and current:
        parts.append("derived: " + format_sample(current))
    return " | ".join([line, *parts])


def experiment_records(home: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """NNI's list of experiments (``~/nni-experiments/.experiment``, what ``nnictl experiment list`` reads):
    id -> ``{"port", "status", "experimentName", "logDir", "pid", ...}``."""
    from nni.tools.nnictl.config_utils import Experiments

    home = Path(home) if home is not None else Path.home() / "nni-experiments"
    if not (home / ".experiment").is_file():
        return {}
    return dict(Experiments(str(home)).get_all_experiments())


def attach(experiment_id: str, home: str | os.PathLike | None = None) -> tuple[RestClient, int, dict[str, Any]]:
    """Find a running experiment's manager by id: its REST client, port and profile (config under ``params``).

    Raises:
        ExperimentError: NNI knows no such experiment, or its manager does not answer (stopped: the
            message gives the ``nnictl resume`` / ``nnictl view`` commands).
    """
    records = experiment_records(home)
    record = records.get(experiment_id)
    if record is None:
        running = [f"{i} ({r.get('experimentName') or '-'}, port {r.get('port')})" for i, r in records.items()
                   if r.get("status") != "STOPPED" and isinstance(r.get("port"), int)]
        raise ExperimentError(f"NNI knows no experiment {experiment_id!r} (`nnictl experiment list --all` lists them)"
                              + (f"; running: {', '.join(running)}" if running else "; none is running"))
    port = record.get("port")
    stopped = (f"experiment {experiment_id} is not running (NNI's record says {record.get('status', '?')}). "
               f"`nnictl resume {experiment_id}` continues it (then `nni-bio search --attach {experiment_id}`), "
               f"`nnictl view {experiment_id}` shows its results")
    if not isinstance(port, int):
        raise ExperimentError(stopped)
    client = RestClient(port)
    try:
        profile = client.profile()
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{stopped} (nothing answers on port {port}: {exc})") from exc
    if profile.get("id") != experiment_id:
        raise ExperimentError(f"{stopped} (port {port} now serves experiment {profile.get('id')!r})")
    return client, port, profile


def best_trial(trials: list[Trial]) -> Trial | None:
    scored = [t for t in trials if t.status == "SUCCEEDED" and t.score is not None]
    return max(scored, key=lambda t: t.score) if scored else None
