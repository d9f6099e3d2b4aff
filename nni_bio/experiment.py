"""Launch an ``nnictl create`` experiment, follow it through NNI's REST API, report the best trial.

This is what ``nni-bio search CONFIG.yml`` runs. The experiment itself is plain NNI: the same YAML
works with ``nnictl create --config CONFIG.yml`` directly (with this environment's ``bin`` on PATH,
so the trial command's ``python3`` is the one with nni-bio installed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nni_bio.errors import NniBioError

FINISHED = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}


class ExperimentError(NniBioError):
    """An experiment could not be created or followed."""


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


def free_port(start: int = 8080) -> int:
    for port in range(start, start + 200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise ExperimentError(f"no free port in {start}..{start + 199}")


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


def decode_trial(raw: dict[str, Any]) -> Trial:
    """Unwrap NNI's JSON-in-JSON trial record into a :class:`Trial`."""
    params: dict[str, Any] = {}
    for blob in raw.get("hyperParameters") or []:
        params = json.loads(blob).get("parameters", {}) if isinstance(blob, str) else blob.get("parameters", {})
    final = None
    for metric in raw.get("finalMetricData") or []:
        value = json.loads(metric["data"])
        value = json.loads(value) if isinstance(value, str) else value
        final = value if isinstance(value, dict) else {"default": value}
    return Trial(raw.get("trialJobId", "?"), raw.get("status", "?"), params, final, raw)


def unwrap_choice(value: Any) -> Any:
    """Tuners of NNI's NAS format send ``{"_value": v, "_idx": i}``; others send ``v``."""
    return value["_value"] if isinstance(value, dict) and "_value" in value else value


def create(config_path: str | os.PathLike, port: int) -> subprocess.CompletedProcess:
    """Run ``nnictl create`` with this interpreter's environment first on PATH."""
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "PYTHONWARNINGS": "ignore"}
    nnictl = Path(bindir) / "nnictl"
    command = [str(nnictl) if nnictl.exists() else "nnictl", "create", "--config", str(config_path), "--port", str(port)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or "ERROR" in done.stdout:
        raise ExperimentError(f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}")
    return done


def stop(experiment_id: str) -> None:
    bindir = str(Path(sys.executable).parent)
    nnictl = Path(bindir) / "nnictl"
    subprocess.run([str(nnictl) if nnictl.exists() else "nnictl", "stop", experiment_id],
                   capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def wait(client: RestClient, max_trials: int | None, timeout: float, progress: bool = True) -> list[Trial]:
    """Poll until the experiment is DONE (or every trial finished); show a progress bar meanwhile."""
    from tqdm import tqdm

    bar = tqdm(total=max_trials, unit="trial", disable=not progress, dynamic_ncols=True)
    deadline, trials = time.monotonic() + timeout, []
    try:
        while True:
            status = client.status()
            trials = client.trials()
            finished = [t for t in trials if t.status in FINISHED]
            scores = [t.score for t in finished if t.score is not None]
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
            time.sleep(2)
    finally:
        bar.close()


def best_trial(trials: list[Trial]) -> Trial | None:
    scored = [t for t in trials if t.status == "SUCCEEDED" and t.score is not None]
    return max(scored, key=lambda t: t.score) if scored else None
