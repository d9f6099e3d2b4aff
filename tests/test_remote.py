"""NNI's remote training service for real: examples/digits-remote.yml against an SSH server on 127.0.0.1.

The test starts OpenSSH's sshd on a free port with a config of its own (a host key and a client key made for
the test, public-key logins only, the SFTP subsystem NNI needs) and runs the example, cut to 2 one-epoch
trials, through `nnictl create`: the trials run over SSH in this environment and their results reach the
manager. The worker is hostile the way real ones are: its ~/.bashrc puts another python3 first on PATH
(pyenv, conda) and its pip points at a package index that refuses connections. About a minute and a half
on 2 busy cores, most of it NNI starting Python on the worker. CI installs openssh-server (.ci/run runs
scripts/system-packages.sh) and fails the test without it; elsewhere it is skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from nni_tools import (EXAMPLE_PYTHON, EXAMPLES, HOME_ON_EXAMPLE_WORKERS, ROOT, free_port, listening_addresses,
                       remote_config, rest_text, start_ssh_server, venv_packages, wait_for)

from nni_bio.launch.experiment import RestClient, unwrap_choice

pytestmark = pytest.mark.slow

@pytest.fixture
def ssh_server(tmp_path):
    server = start_ssh_server(tmp_path / "ssh")
    yield server
    server.stop()


def test_the_remote_examples_are_robust_to_the_workers_shell():
    """Both remote configs: interpreter by absolute path, the worker bin as pythonPath, nniManagerIp set."""
    for name in ("digits-remote.yml", "cifar10-remote.yml"):
        config = yaml.safe_load((EXAMPLES / name).read_text())
        words = config["trialCommand"].split()
        python = next(w for w in words if "=" not in w)
        assert python == EXAMPLE_PYTHON and words[words.index(python) + 1:][:2] == ["-m", "nni_bio.trial"], name
        assert config.get("nniManagerIp"), f"{name}: without nniManagerIp NNI tells the workers 'localhost'"
        for machine in config["trainingService"]["machineList"]:
            assert machine["pythonPath"] == f"{HOME_ON_EXAMPLE_WORKERS}/scripts/nni-worker/bin", name
    assert (ROOT / "scripts/nni-worker/bin/python").stat().st_mode & 0o111
    assert (ROOT / "scripts/nni-worker/bin/python3").resolve() == (ROOT / "scripts/nni-worker/bin/python").resolve()


def test_digits_experiment_runs_on_an_ssh_worker(tmp_path, ssh_server, nnictl):
    packages = venv_packages()
    port = free_port()
    # the workers reach the manager at nniManagerIp, another loopback address here: the manager listens there and
    # on 127.0.0.1 (nnictl's own calls), nowhere else (nni_bio.nas._compat.patch_manager_listen_address)
    experiment_id = nnictl.create(remote_config(tmp_path, ssh_server, trials=2, concurrency=2,
                                                epochs="--epochs 1 --train-limit 256", manager_ip="127.0.0.2"), port)
    client = RestClient(port)
    assert listening_addresses(port) == {"127.0.0.1", "127.0.0.2"}
    status = wait_for(lambda: (s := client.status())["status"] in ("DONE", "ERROR") and s, 300, "the experiment")
    log = (tmp_path / "experiments" / experiment_id / "log" / "nnimanager.log").read_text()
    trials = client.trials()
    assert status["status"] == "DONE", f"{status}\n{log[-4000:]}"
    assert [t.status for t in trials] == ["SUCCEEDED", "SUCCEEDED"], log[-4000:]

    # NNI's worker start ran the guard instead of pip: no index asked, nothing installed or upgraded
    assert "nni-bio worker: skipped" in log and "Installed nni v3.0" in log
    assert venv_packages() == packages

    for trial in trials:
        # results reach the manager: per-epoch (intermediate) and final, with the genotype
        assert 0.0 <= trial.score <= 1.0 and {"val_loss", "best_val_acc"} <= set(trial.final)
        genotype = json.loads(trial.final["genotype"])
        assert genotype["space"] == "tiny"
        assert genotype["sample"] == {k: unwrap_choice(v) for k, v in trial.parameters.items()}
        intermediate = [m for m in client.get(f"metric-data/{trial.id}") if m["type"] == "PERIODICAL"]
        assert len(intermediate) == 1

        # the trial ran on the worker, with the project's python, and its outputs are there
        stdout = rest_text(port, f"trial-file/{trial.id}/stdout")
        assert "epoch 1: train loss" in stdout
        output = Path(stdout.split("outputs (genotype.json, result.json, tensorboard/): ")[1].split("\n")[0])
        assert ssh_server.home in output.parents, "NNI_OUTPUT_DIR is under the worker's ~/nni-experiments"
        assert json.loads((output / "genotype.json").read_text()) == genotype
        assert json.loads((output / "result.json").read_text())["default"] == trial.score
        assert any((output / "tensorboard").iterdir())
        assert "not the project's" not in rest_text(port, f"trial-file/{trial.id}/stderr")

    assert ssh_server.trial_keepers(), "NNI's trial keeper runs on the worker until the experiment stops"
    assert nnictl("stop", experiment_id).returncode == 0
    wait_for(lambda: not ssh_server.trial_keepers(), 30, "the trial keeper to stop with the experiment")
