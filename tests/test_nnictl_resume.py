"""`nnictl resume` for real: an evolution experiment stopped after its trials finished resumes with the
finished trial in its population (the new trial is a mutation of it, the finished trial is not run
again), and a one-shot experiment stopped mid-search resumes its trial from the last epoch checkpoint.
Each about half a minute on 2 idle cores (most of it NNI starting Python and torch per trial)."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nni_bio.launch import experiment as ex
from nni_bio.strategies.multi_trial import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(sys.executable).parent / "nnictl").exists() and shutil.which("nnictl") is None,
    reason="nnictl is not installed")]


def nnictl(*args: str) -> subprocess.CompletedProcess:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "PYTHONWARNINGS": "ignore"}
    tool = Path(bindir) / "nnictl"
    done = subprocess.run([str(tool) if tool.exists() else "nnictl", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "ERROR" not in done.stdout, \
        f"nnictl {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:  # the manager is starting or stopping
            value = None
        if value:
            return value
        time.sleep(1.0)
    pytest.fail(f"timed out waiting for {what}")


def done(client: ex.RestClient, trials: int):
    listed = client.trials()
    status = client.status()["status"]
    if status == "ERROR":
        pytest.fail(f"the experiment failed: {client.status()}")
    finished = [t for t in listed if t.status in ex.FINISHED]
    return listed if status == "DONE" and len(finished) == trials else None


def write_config(tmp_path: Path, source: str, **changes) -> Path:
    config = yaml.safe_load((EXAMPLES / source).read_text())
    config.update(experimentName="nni-bio test_nnictl_resume", trialCodeDirectory=str(ROOT), maxExperimentDuration="5m",
                  experimentWorkingDirectory=str(tmp_path / "experiments"), **changes)
    if "searchSpaceFile" in config:
        config["searchSpaceFile"] = str(EXAMPLES / config["searchSpaceFile"])
    if "codeDirectory" in config["tuner"]:
        config["tuner"]["codeDirectory"] = str(ROOT)
    path = tmp_path / source
    path.write_text(yaml.safe_dump(config))
    return path


def test_evolution_resumes_from_the_finished_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # nnictl's experiment manifest (~/nni-experiments/.experiment) too
    path = write_config(tmp_path, "digits-evolution.yml", maxTrialNumber=1,
                        trialCommand="OMP_NUM_THREADS=1 python3 -m nni_bio.trial --space tiny --dataset digits "
                                     "--epochs 1 --train-limit 128")
    config = yaml.safe_load(path.read_text())
    config["tuner"]["classArgs"].update(population_size=1, sample_size=1)
    path.write_text(yaml.safe_dump(config))
    port = free_port(random.randrange(20000, 40000))
    experiment_id = None
    try:
        ex.create(path, port)
        client = ex.RestClient(port)
        experiment_id = client.experiment_id()
        (first,) = wait_for(lambda: done(client, 1), 150, "the first trial")
        assert first.status == "SUCCEEDED"
        ex.stop(experiment_id)

        port = free_port(port + 1)
        nnictl("resume", experiment_id, "--port", str(port))
        client = ex.RestClient(port)
        nnictl("update", "trialnum", experiment_id, "--value", "2")  # extend the finished search by one trial
        trials = wait_for(lambda: done(client, 2), 150, "the trial after the resume")
        again = next(t for t in trials if t.id == first.id)
        second = next(t for t in trials if t.id != first.id)
        # the finished trial kept its result and was not run again
        assert len(trials) == 2 and again.status == "SUCCEEDED" and again.final == first.final
        assert again.raw.get("startTime") == first.raw.get("startTime")
        # the tuner's population after the resume is the finished trial: the new one is its mutation
        assert second.status == "SUCCEEDED"
        changed = [k for k in first.parameters if ex.unwrap_choice(first.parameters[k]) !=
                   ex.unwrap_choice(second.parameters[k])]
        assert len(changed) == 1, (first.parameters, second.parameters)
        log = (tmp_path / "experiments" / experiment_id / "log" / "dispatcher.log").read_text()
        assert "EvolutionTuner imported 1 finished trials: population 1, initial individuals left 0" in log
    finally:
        if experiment_id is not None:
            ex.stop(experiment_id)


def test_a_stopped_oneshot_search_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    epochs = 40
    path = write_config(tmp_path, "digits-darts.yml", trialCommand=(
        "OMP_NUM_THREADS=1 python3 -m nni_bio.strategies.oneshot.trial --space tiny --space-args '{\"width\": 4}' --dataset digits "
        f"--epochs {epochs} --retrain-epochs 0 --threads 1 --batch-size 32 --train-limit 512 --resume"))
    port = free_port(random.randrange(20000, 40000))
    experiment_id = None
    try:
        ex.create(path, port)
        client = ex.RestClient(port)
        experiment_id = client.experiment_id()
        trials_dir = tmp_path / "experiments" / experiment_id / "environments"
        checkpoint = wait_for(lambda: next(iter(trials_dir.glob("*/trials/*/checkpoint.pt")), None), 150,
                              "the first epoch checkpoint")
        ex.stop(experiment_id)
        result = checkpoint.parent / "result.json"
        assert not result.exists(), "the search finished before it was stopped: raise epochs"

        port = free_port(port + 1)
        nnictl("resume", experiment_id, "--port", str(port))
        client = ex.RestClient(port)
        (trial,) = wait_for(lambda: done(client, 1), 240, "the resumed search")
        assert trial.status == "SUCCEEDED"
        saved = json.loads(result.read_text())
        assert saved["resumed_from"] >= 1 and len(saved["history"]) == epochs  # the same trial folder, continued
        periodical = [m for m in client.metrics(trial.id) if m["type"] == "PERIODICAL"]
        assert sorted({int(m["sequence"]) for m in periodical}) == list(range(epochs))  # every epoch reported
    finally:
        if experiment_id is not None:
            ex.stop(experiment_id)
