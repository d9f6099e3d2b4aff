"""Faults injected into real NNI experiments (nnictl, the digits trial cut to one epoch on 256 images).

One local experiment of 4 trials, one after the other, meets three faults (module fixture, about a minute
and a half on 2 busy cores): trial 0 diverges (NaN loss), trial 1's training process is killed with SIGKILL
mid-run, the NNI manager is killed with SIGKILL while trial 3 runs and the experiment is resumed with
`nnictl resume`. A remote experiment (examples/digits-remote.yml against an SSH server on 127.0.0.1, as in
test_remote.py) loses its only worker, first its sshd, then the whole machine.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from nni_tools import (EXAMPLES, Nnictl, free_port, manager_pid, remote_config, rest_text, start_ssh_server,
                       trial_processes, training_process, wait_for)

from nni_bio.launch.experiment import RestClient, Trial

pytestmark = pytest.mark.slow

FINISHED = {"SUCCEEDED", "FAILED", "USER_CANCELED", "EARLY_STOPPED"}
# per trial (NNI_TRIAL_SEQ_ID): 0 diverges, 1 trains long enough to be killed, the others train one epoch
PER_TRIAL = '$(case "$NNI_TRIAL_SEQ_ID" in (0) echo --lr 1e30 --grad-clip 0;; (1) echo --epochs 1000;; esac)'


def by_sequence(client: RestClient) -> dict[int, Trial]:
    return {t.raw["sequenceId"]: t for t in client.trials()}


def intermediates(client: RestClient, trial_id: str) -> int:
    return sum(m["type"] == "PERIODICAL" for m in client.get(f"metric-data/{trial_id}"))


def local_config(tmp_path: Path) -> Path:
    config = yaml.safe_load((EXAMPLES / "digits-random.yml").read_text())
    config.update(
        experimentName="nni-bio faults test",
        searchSpaceFile=str(EXAMPLES / config["searchSpaceFile"]),
        trialCodeDirectory=str(EXAMPLES),
        # exec: with a command substitution bash would stay between NNI and the trial (and outlive NNI)
        trialCommand=f"OMP_NUM_THREADS=1 exec {sys.executable} -m nni_bio.trial --space tiny --dataset digits "
                     f"--train-limit 256 --epochs 1 {PER_TRIAL}",
        trialConcurrency=1,
        maxTrialNumber=4,
        maxExperimentDuration="10m",
        experimentWorkingDirectory=str(tmp_path / "experiments"),
    )
    path = tmp_path / "faults.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Faults:
    """What the local experiment showed: trials before the manager died, after the resume, trial logs."""

    before_kill: dict[int, Trial]
    after_resume: dict[int, Trial]
    stderr: dict[int, str]
    killed_pid: int
    orphans: list[int]
    status: str


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> Faults:
    tmp_path = tmp_path_factory.mktemp("faults")
    nnictl = Nnictl(tmp_path / "manager-home")
    port = free_port()
    try:
        experiment_id = nnictl.create(local_config(tmp_path), port)
        client = RestClient(port)
        wait_for(lambda: by_sequence(client).get(0, None) and by_sequence(client)[0].status in FINISHED, 120,
                 "trial 0 to end")
        # trial 1: SIGKILL its training process once it has reported an epoch (mid-run: 1000 epochs to go)
        trial1 = wait_for(lambda: by_sequence(client).get(1), 60, "trial 1")
        wait_for(lambda: intermediates(client, trial1.id) >= 1, 120, "trial 1's first epoch")
        victim = wait_for(lambda: training_process(trial1.id), 10, "trial 1's training process")
        os.kill(victim.pid, signal.SIGKILL)
        # trial 3 running: SIGKILL the NNI manager (the web UI, REST API and local trial keeper die with it)
        wait_for(lambda: (t := by_sequence(client).get(3)) and t.status == "RUNNING", 120, "trial 3 to run")
        before_kill = by_sequence(client)
        stderr = {seq: rest_text(port, f"trial-file/{t.id}/stderr") for seq, t in before_kill.items() if seq < 3}
        trial3 = before_kill[3].id
        wait_for(lambda: training_process(trial3), 60, "trial 3's training process")
        os.kill(manager_pid(tmp_path / "experiments" / experiment_id), signal.SIGKILL)
        time.sleep(3)
        orphans = [p.pid for p in trial_processes(trial3)]  # a trial outliving its manager would run twice

        port = free_port()
        assert nnictl.resume(experiment_id, port) == experiment_id
        client = RestClient(port)
        status = wait_for(lambda: (s := client.status()["status"]) in ("DONE", "ERROR") and s, 180,
                          "the resumed experiment to end")
        return Faults(before_kill, by_sequence(client), stderr, victim.pid, orphans, status)
    finally:
        nnictl.stop_all()


def test_a_diverging_trial_is_failed_with_its_reason_in_the_trial_log(faults):
    assert faults.before_kill[0].status == "FAILED"
    # the trial log the web UI shows (Trials detail -> Log), through NNI's REST API
    assert "nni-bio trial FAILED: training diverged at epoch 1" in faults.stderr[0]
    assert "Lower the learning rate" in faults.stderr[0]


def test_a_sigkilled_trial_is_failed_and_the_experiment_goes_on(faults):
    # NNI alone would say USER_CANCELED (a signal death has no exit code); nni_bio.nas._compat.supervise_trial
    # turns it into exit status 137 with the reason on stderr
    assert faults.before_kill[1].status == "FAILED"
    assert f"the training process {faults.killed_pid} was killed by SIGKILL" in faults.stderr[1]
    assert faults.before_kill[2].status == "SUCCEEDED"  # the next trial ran


def test_a_killed_manager_is_resumed_without_losing_a_finished_trial(faults):
    assert faults.orphans == [], "trial 3's processes died with the manager"
    assert faults.status == "DONE"
    assert sorted(faults.after_resume) == [0, 1, 2, 3]
    for seq in (0, 1, 2):  # finished before the kill: kept as they were, not run again
        before, after = faults.before_kill[seq], faults.after_resume[seq]
        assert (after.id, after.status, after.parameters, after.final) == \
            (before.id, before.status, before.parameters, before.final)
        assert after.raw["endTime"] == before.raw["endTime"]
    # the trial that was running is run again, under its own id, to the end
    assert faults.after_resume[3].id == faults.before_kill[3].id
    assert faults.after_resume[3].status == "SUCCEEDED" and 0 <= faults.after_resume[3].score <= 1


def test_an_ssh_worker_that_disappears(tmp_path, monkeypatch):
    """sshd stopped: the trials go on (they talk to the manager over NNI's own channel). The machine gone:
    its running trial ends USER_CANCELED, nnimanager.log says why, and NNI 3.0 waits for a worker that
    never comes back (its one reconnection fails): the experiment stays RUNNING, starts no other trial,
    until `nnictl stop`."""
    server = start_ssh_server(tmp_path / "ssh")
    nnictl = Nnictl(tmp_path / "manager-home")
    port = free_port()
    try:
        per_trial = '--epochs 1 --train-limit 256 $([ "$NNI_TRIAL_SEQ_ID" = 1 ] && echo --epochs 1000)'
        experiment_id = nnictl.create(remote_config(tmp_path, server, trials=3, concurrency=1, epochs=per_trial), port)
        client = RestClient(port)
        wait_for(lambda: (t := by_sequence(client).get(0)) and t.status == "RUNNING", 240, "trial 0 to run")
        server.stop_listener()  # `systemctl stop ssh`: no new SSH connection, open sessions stay
        wait_for(lambda: by_sequence(client)[0].status in FINISHED, 120, "trial 0 to end")
        assert by_sequence(client)[0].status == "SUCCEEDED"
        trial1 = wait_for(lambda: by_sequence(client).get(1), 60, "trial 1 (started without sshd)")
        wait_for(lambda: intermediates(client, trial1.id) >= 1, 120, "trial 1's first epoch")

        server.vanish()  # the machine goes away: sshd, its sessions, NNI's trial keeper and the trials
        trials = wait_for(lambda: (t := by_sequence(client))[1].status in FINISHED and t, 60, "trial 1 to end")
        assert trials[1].status == "USER_CANCELED" and trials[1].final is None
        log_file = tmp_path / "experiments" / experiment_id / "log" / "nnimanager.log"
        log = wait_for(lambda: "Failed to recover worker" in (text := log_file.read_text()) and text, 30,
                       "the manager to give up on the worker")
        assert "Failed to recover worker 127.0.0.1: Error: connect ECONNREFUSED" in log
        time.sleep(10)
        assert client.status()["status"] == "RUNNING" and sorted(by_sequence(client)) == [0, 1]
        # nni-bio search's follower says why and what to do, instead of waiting for ever
        from nni_bio.launch import experiment

        monkeypatch.setattr(experiment, "STALLED_AFTER", 2.0)
        with pytest.raises(experiment.ExperimentError, match=f"lost a remote worker.*nnictl resume {experiment_id}"):
            experiment.wait(client, 3, 120, progress=False, poll=0.5)
        assert nnictl("stop", experiment_id).returncode == 0
    finally:
        nnictl.stop_all()
        server.stop()
