"""One-shot checkpoints: a search killed with SIGKILL in the middle of an epoch resumes with --resume
and ends with the same per-epoch numbers and derived architecture as a search never interrupted, for
every strategy; what the checkpoint holds and what a resume refuses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_bio.strategies.oneshot import STRATEGIES, run_oneshot
from nni_bio.train.checkpoint import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = {"width": 4, "rules": ["usf", "fa", "brsf"]}  # brsf: rule state (step counters) that must survive
# 128 images: 2 weight and 2 architecture batches of 32 per epoch, so EG-NAS (one architecture batch
# per epoch) stops mid-pass and ENAS (3 trajectories per policy update) carries a half-full buffer
FAST = ["--train-limit", "128", "--batch-size", "32", "--retrain-epochs", "0", "--threads", "1"]
STRATEGY_SETS = {"enas": ["--set", "batches_per_update=3", "--set", "update_times=1", "--set", "update_batch_size=4"],
                 "egnas": ["--set", "population_size=4", "--set", "generations=1", "--warmup-epochs", "0"]}
EPOCHS = 3

# Runs python -m nni_bio.strategies.oneshot.trial, blocking inside epoch 2's second weight step (one step of epoch 2 done
# in memory, epoch 1's checkpoint on disk) after saying so in a marker file: the test then kills it.
BLOCKER = """
import sys, time, pathlib
from nni_bio.strategies.oneshot import search as oneshot_search
marker, argv, calls = pathlib.Path(sys.argv[1]), sys.argv[2:], []
step = oneshot_search.Search.weight_step
def weight_step(self, x, y):
    if self.epoch == 2:
        calls.append(1)
        if len(calls) == 2:
            marker.write_text("blocked")
            time.sleep(600)
    return step(self, x, y)
oneshot_search.Search.weight_step = weight_step
from nni_bio.strategies.oneshot.trial import main
sys.exit(main(argv))
"""


def _args(strategy: str, output: Path) -> list[str]:
    return ["--strategy", strategy, "--space", "tiny", "--space-args", json.dumps(TINY), "--dataset", "digits",
            "--epochs", str(EPOCHS), "--output", str(output), *FAST, *STRATEGY_SETS.get(strategy, [])]


def _kill_mid_epoch(strategy: str, output: Path, tmp_path: Path) -> None:
    marker = tmp_path / "blocked"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NNI_TRIAL_JOB_ID", None)
    proc = subprocess.Popen([sys.executable, "-c", BLOCKER, str(marker), *_args(strategy, output)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the search ended before it was killed:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the search never reached epoch 2")
            time.sleep(0.1)
        assert load_checkpoint(output / "checkpoint.pt")["epoch"] == 1
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _reported(monkeypatch):
    import nni

    reported = {"intermediate": [], "final": []}
    monkeypatch.setattr(nni, "report_intermediate_result", reported["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", reported["final"].append)
    return reported


def _numbers(result: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result["history"]]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_search_killed_mid_epoch_resumes_to_the_uninterrupted_result(strategy, tmp_path, monkeypatch):
    from nni_bio.strategies.oneshot.trial import main

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    _kill_mid_epoch(strategy, killed, tmp_path)

    resumed_reports = _reported(monkeypatch)
    assert main(_args(strategy, killed) + ["--resume"]) == 0
    whole_reports = _reported(monkeypatch)
    assert main(_args(strategy, whole)) == 0

    resumed = json.loads((killed / "result.json").read_text())
    uninterrupted = json.loads((whole / "result.json").read_text())
    assert resumed["resumed_from"] == 1 and uninterrupted["resumed_from"] == 0
    assert _numbers(resumed) == _numbers(uninterrupted)
    assert resumed["sample"] == uninterrupted["sample"] and resumed["genotype"] == uninterrupted["genotype"]
    assert resumed_reports["final"] == whole_reports["final"]
    # the same folder: the restored epoch was reported by the killed run, only epochs 2..3 are new
    assert resumed_reports["intermediate"] == whole_reports["intermediate"][1:]
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == EPOCHS


KW = {"space_args": {"width": 4, "rules": ["usf", "fa"]}, "train_limit": 64, "batch_size": 32}


def test_checkpoint_holds_plain_data_and_refuses_other_settings(tmp_path):
    path = tmp_path / "checkpoint.pt"
    run_oneshot("tiny", "darts", "digits", epochs=1, checkpoint=path, **KW)
    saved = load_checkpoint(path)  # weights_only: no NNI label, numpy or tianshou object inside
    assert saved["kind"] == "oneshot" and saved["epoch"] == 1 and len(saved["history"]) == 1
    assert {"model", "optimizer", "scheduler", "train_generator", "arch_generator"} <= set(saved["search"])
    assert "arch_optimizer" in saved["strategy"] and {"torch", "numpy", "python"} <= set(saved["rng"])
    assert any(k.endswith("_arch_alpha") for k in saved["search"]["model"])
    with pytest.raises(CheckpointError, match="arch_lr"):
        run_oneshot("tiny", "darts", "digits", epochs=1, checkpoint=path, resume=True, arch_lr=0.1, **KW)
    with pytest.raises(CheckpointError, match="strategy"):
        run_oneshot("tiny", "gumbel", "digits", epochs=1, checkpoint=path, resume=True, **KW)
    # a finished search resumes to its result without training again
    result = run_oneshot("tiny", "darts", "digits", epochs=1, checkpoint=path, resume=True,
                         on_epoch_end=lambda r: pytest.fail("trained again"), **KW)
    assert result.resumed_from == 1 and result.sample == saved["history"][-1]["sample"]


def test_enas_controller_state_is_plain_and_round_trips(tmp_path):
    from nni_bio.strategies.enas import _plain, _unplain

    path = tmp_path / "checkpoint.pt"
    run_oneshot("tiny", "enas", "digits", epochs=1, checkpoint=path, batches_per_update=3, update_times=1, **KW)
    state = load_checkpoint(path)["strategy"]
    assert {"policy", "policy_optimizer", "buffer", "trajectories"} <= set(state) and state["trajectories"] == 1
    buffer = _unplain(state["buffer"])
    assert (buffer["_size"], buffer["maxsize"]) == (3, 9) and buffer["_meta"].obs.action_history.dtype == np.int32
    assert torch.equal(_plain(buffer)["_meta"]["__tianshou_batch__"]["rew"]["__numpy_array__"],
                       state["buffer"]["_meta"]["__tianshou_batch__"]["rew"]["__numpy_array__"])


def test_without_resume_a_new_search_starts_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, capsys):
    from nni_bio.strategies.oneshot.trial import main

    reported = _reported(monkeypatch)
    args = ["--strategy", "darts", "--space", "tiny", "--space-args", json.dumps(KW["space_args"]), "--epochs", "1",
            "--train-limit", "64", "--batch-size", "32", "--retrain-epochs", "0", "--output", str(tmp_path)]
    assert main(args) == 0
    first = load_checkpoint(tmp_path / "checkpoint.pt")
    assert main(args) == 0  # trains again (1 more intermediate result), the first search moved aside
    assert len(reported["intermediate"]) == 2 and "pass --resume" in capsys.readouterr().err
    assert torch.equal(load_checkpoint(tmp_path / "checkpoint.previous.pt")["rng"]["torch"], first["rng"]["torch"])
    assert main(args + ["--resume"]) == 0  # a finished search: nothing to train
    assert len(reported["intermediate"]) == 2


def test_a_relaunched_nni_trial_continues_its_own_checkpoint(tmp_path, monkeypatch):
    """`nnictl resume` relaunches an interrupted trial with its id and folder: it resumes without --resume;
    a checkpoint elsewhere (--checkpoint-dir) is kept per experiment and trial."""
    import nni_bio.strategies.oneshot.trial as entry

    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setenv("NNI_EXP_ID", "exp1")
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "trialA")
    output = tmp_path / "out"
    args = entry.parse_args(["--space", "tiny", "--checkpoint-dir", str(tmp_path / "ckpt")])
    checkpoint, owner, resume = entry.checkpoint_plan(args, output)
    assert checkpoint == tmp_path / "ckpt" / "exp1-trialA" / "checkpoint.pt" and resume == {}
    from nni_bio.train.checkpoint import save_checkpoint

    save_checkpoint(checkpoint, {"epoch": 4, **owner})
    assert entry.checkpoint_plan(args, output)[2]["epoch"] == 4  # the same trial, relaunched
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "trialB")
    other = tmp_path / "ckpt" / "exp1-trialB" / "checkpoint.pt"
    save_checkpoint(other, {"epoch": 2, **owner})  # written by trialA
    args.resume = True
    assert entry.checkpoint_plan(args, output)[2]["epoch"] == 2
    args.resume = False  # not this trial's, no --resume: a new search, the old checkpoint kept aside
    assert entry.checkpoint_plan(args, output)[2] == {} and not other.exists()
    assert load_checkpoint(other.with_name("checkpoint.previous.pt"))["epoch"] == 2

class _Killed(Exception):
    pass


def test_the_darts_cell_space_resumes_exactly(tmp_path):
    """Cells share their logits (all normal cells, all reduction cells) and mix input choices."""
    from dataclasses import asdict

    kw = {"space_args": {"width": 4, "num_cells": 4, "num_nodes": 2, "rules": ["usf", "brsf"]}, "train_limit": 64,
          "batch_size": 32}
    whole = run_oneshot("darts", "darts", "digits", epochs=2, **kw)
    path = tmp_path / "checkpoint.pt"

    def die_in_epoch_2(record):
        if record.epoch == 2:
            raise _Killed  # before epoch 2's checkpoint: as if killed in it

    with pytest.raises(_Killed):
        run_oneshot("darts", "darts", "digits", epochs=2, checkpoint=path, on_epoch_end=die_in_epoch_2, **kw)
    resumed = run_oneshot("darts", "darts", "digits", epochs=2, checkpoint=path, resume=True, **kw)
    numbers = [[{k: v for k, v in asdict(r).items() if k != "seconds"} for r in result.history]
               for result in (whole, resumed)]
    assert resumed.resumed_from == 1 and numbers[0] == numbers[1] and resumed.genotype == whole.genotype
