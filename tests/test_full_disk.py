"""A disk that fills up, or a folder that cannot be written: training, a one-shot search and a study stop with
one line naming the path, the cause and the free space; what was written before stays readable, and a rerun
once there is space resumes. The disk is a 1 MiB tmpfs (root only: CI runs as root; elsewhere skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from nni_tools import fill_disk

from nni_bio.train.checkpoint import load_checkpoint

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    return lines[0]


def test_training_on_a_full_disk_keeps_its_last_checkpoint_and_resumes(tmp_path, small_disk):
    out = small_disk / "run"
    command = ["-m", "nni_bio.cli", "train", "--model", "tiny-cnn", "--rule", "usf", "--epochs", "3", "--train-limit",
               "100", "--diagnostics-every", "0", "--no-progress", "--output", str(out)]
    filler = fill_disk(small_disk, leave=100 * 1024)  # one ~70 kB checkpoint fits, not a second one beside it
    full = run(*command, cwd=tmp_path)
    assert full.returncode == 1, full.stdout + full.stderr
    line = one_error_line(full)
    assert f"{out}/" in line and "No space left on device" in line and "KiB free on that disk" in line
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1  # written before: intact and readable
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    resumed = run(*command, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "complete" and len(result["history"]) == 3


def test_a_one_shot_search_on_a_full_disk_resumes_from_its_checkpoint(tmp_path, small_disk):
    out = small_disk / "darts"
    command = ["-m", "nni_bio.strategies.oneshot.trial", "--strategy", "darts", "--space", "tiny", "--space-args",
               '{"width": 4}', "--dataset", "digits", "--epochs", "3", "--threads", "1", "--set", "train_limit=200",
               "--output", str(out)]
    filler = fill_disk(small_disk, leave=150 * 1024)  # one ~95 kB checkpoint fits, not a second one beside it
    full = run(*command, cwd=tmp_path)
    assert full.returncode != 0
    line = one_error_line(full)
    assert f"{out / 'checkpoint.pt'}: cannot write (No space left on device)" in line and "free on that disk" in line
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1
    filler.unlink()
    resumed = run(*command, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the search from its checkpoint" in resumed.stdout
    assert json.loads((out / "genotype.json").read_text())["space"] == "tiny"


def study_file(tmp_path: Path) -> Path:
    """One arm whose space holds one network (no NNI experiment): retraining and an attack, seconds each."""
    path = tmp_path / "disk.yml"
    path.write_text(yaml.safe_dump({
        "name": "disk", "dataset": "digits", "space": "rule_per_layer", "space_args": {"depth": 8, "width": 4},
        "arms": {"usf": ["usf"]}, "compare": "usf", "search": {"strategy": "random", "max_trials": 1, "epochs": 1},
        "retrain": {"seeds": [0], "epochs": 2, "args": {"train_limit": 200, "diagnostics_every": 0}},
        "attack": {"num_images": 20, "eps": "0", "attacks": ["fgsm"], "gradients": ["bp"]}}))
    return path


def test_a_study_on_a_full_disk_stops_in_one_line_and_a_rerun_finishes_it(tmp_path, small_disk):
    out = small_disk / "study"
    command = ["-m", "nni_bio.cli", "study", str(study_file(tmp_path)), "--output", str(out), "--no-progress"]
    filler = fill_disk(small_disk, leave=130 * 1024)  # the search and a first checkpoint fit, not the rest
    full = run(*command, cwd=tmp_path)
    assert full.returncode in (1, 3), full.stdout + full.stderr
    line = one_error_line(full)
    assert "No space left on device" in line and "free on that disk" in line and str(out) in line
    assert json.loads((out / "search" / "usf" / "search.json").read_text())["status"] == "complete"
    filler.unlink()
    again = run(*command, "--retry-failed", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already finished" in again.stdout and (out / "report" / "accuracy.csv").is_file()


def test_a_study_into_a_read_only_folder_gets_one_line(tmp_path, read_only_dir):
    done = run("-m", "nni_bio.cli", "study", str(study_file(tmp_path)), "--output", str(read_only_dir / "study"),
               "--no-progress", cwd=tmp_path)
    assert done.returncode == 1
    assert "cannot write (Read-only file system); the folder is not writable" in one_error_line(done)
