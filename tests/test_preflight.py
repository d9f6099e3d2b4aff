"""`nni-bio search` checks a config before it starts NNI: data set, search space, rules, port.

Every test replaces ``nnictl create`` with a failure: a config that fails a check must stop before NNI (and so
before any trial) starts, with the reason and exit status 2.
"""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path

import pytest
import yaml

from nni_bio.cli import main
from nni_bio.data.fixtures import write_cifar10
from nni_bio.launch import experiment as ex
from nni_bio.launch import preflight
from nni_bio.launch.experiment_config import check_search_space


class Started(Exception):
    """nnictl create was reached."""


@pytest.fixture
def no_nnictl(monkeypatch):
    """nnictl create raises Started; the port picked is fixed (no scan of the machine's ports)."""
    def create(*args, **kwargs):
        raise Started

    monkeypatch.setattr(ex, "create", create)
    monkeypatch.setattr(preflight, "pick_port", lambda config, start=8080: 1)


def write_config(folder: Path, trial_command: str, *, space: dict | None = None, platform: str = "local",
                 **extra) -> Path:
    """An experiment YAML in ``folder`` (its search-space file next to it), like the shipped examples."""
    config = {"experimentName": "preflight test", "trialCommand": trial_command, "trialCodeDirectory": ".",
              "trialConcurrency": 1, "maxTrialNumber": 2, "tuner": {"name": "TPE"},
              "trainingService": {"platform": platform}, **extra}
    if space is not None:
        (folder / "space.json").write_text(json.dumps(space))
        config["searchSpaceFile"] = "space.json"
    path = folder / "experiment.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def cifar_space(space_args: dict | None = None) -> dict:
    from nni_bio.search_spaces import space_json

    return space_json("tiny", "cifar10", space_args or {"width": 4})


def trial(dataset: str = "cifar10", extra: str = "", space_args: dict | None = None) -> str:
    args = json.dumps(space_args or {"width": 4})
    return (f"OMP_NUM_THREADS=1 python3 -m nni_bio.trial --space tiny --dataset {dataset} --epochs 1 "
            f"--space-args {shlex.quote(args)} {extra}").strip()


# -- data set ------------------------------------------------------------------------------------------

def test_a_wrong_data_dir_is_caught_before_nni_starts(tmp_path, no_nnictl, capsys):
    path = write_config(tmp_path, trial(extra="--data-dir no/such/folder"), space=cifar_space())
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    # the data layer's own message, with where the trial would look (relative to trialCodeDirectory)
    assert "data set 'cifar10' is not usable where the trial command points (--data-dir no/such/folder" in err
    assert "data set 'cifar10' not found: expected data_batch_1" in err
    assert str(tmp_path / "no/such/folder" / "cifar-10-batches-py") in err
    assert "nothing was started" in err and "--no-preflight" in err


def test_a_valid_copy_passes_relative_to_the_trial_code_directory(tmp_path, no_nnictl, capsys):
    write_cifar10(tmp_path / "code" / "data")
    (tmp_path / "code").mkdir(exist_ok=True)
    path = write_config(tmp_path, trial(extra="--data-dir data"), space=cifar_space(), trialCodeDirectory="code")
    with pytest.raises(Started):
        main(["search", str(path)])
    out = capsys.readouterr().out
    assert f"preflight: data set cifar10: found at {tmp_path / 'code' / 'data' / 'cifar-10-batches-py'}" in out
    assert "preflight: search space: the one the trial command builds" in out


def test_a_corrupt_copy_is_caught_with_the_data_layer_s_reason(tmp_path, no_nnictl, capsys):
    folder = write_cifar10(tmp_path / "data")
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    path = write_config(tmp_path, trial(extra=f"--data-dir {tmp_path / 'data'}"), space=cifar_space())
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data set 'cifar10' is not usable" in err and "data_batch_3" in err


def test_the_data_dir_may_come_from_nni_bio_data_in_the_command_or_the_environment(tmp_path, no_nnictl, capsys,
                                                                                 monkeypatch):
    write_cifar10(tmp_path / "data")
    path = write_config(tmp_path, f"NNI_BIO_DATA={tmp_path / 'data'} " + trial(), space=cifar_space())
    with pytest.raises(Started):
        main(["search", str(path)])
    path = write_config(tmp_path, trial(), space=cifar_space())
    monkeypatch.setenv("NNI_BIO_DATA", str(tmp_path / "elsewhere"))  # the trials inherit nni-bio search's environment
    assert main(["search", str(path)]) == 2
    assert f"$NNI_BIO_DATA={tmp_path / 'elsewhere'}" in capsys.readouterr().err
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_config(tmp_path, trial(extra="--data-dir ~/data"), space=cifar_space())  # the shell expands ~
    with pytest.raises(Started):
        main(["search", str(path)])


def test_a_one_shot_trial_s_data_set_is_checked_too(tmp_path, no_nnictl, capsys):
    command = "python3 -m nni_bio.strategies.oneshot.trial --space tiny --dataset cifar10 --epochs 2 --data-dir /no/such/dir"
    path = write_config(tmp_path, command, searchSpace={"strategy": {"_type": "choice", "_value": ["darts"]}})
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data set 'cifar10' not found" in err and "The data directory /no/such/dir does not exist" in err


def test_remote_trials_data_is_not_checked_here_and_no_preflight_skips_every_check(tmp_path, no_nnictl, capsys):
    path = write_config(tmp_path, trial(extra="--data-dir /on/the/workers"), space=cifar_space(), platform="remote")
    with pytest.raises(Started):
        main(["search", str(path)])
    assert "preflight: data set cifar10: not checked here (remote trials read it on their workers" in \
        capsys.readouterr().out
    stale = cifar_space({"width": 4, "rules": ["usf"]})
    path = write_config(tmp_path, trial(extra="--data-dir /on/the/workers"), space=stale)
    with pytest.raises(Started):  # wrong data dir and stale space, but asked to skip: NNI is started
        main(["search", str(path), "--no-preflight"])
    assert "preflight checks skipped" in capsys.readouterr().out


# -- search space and rules ----------------------------------------------------------------------------

def test_a_stale_search_space_file_is_refused_with_the_other_failures(tmp_path, no_nnictl, capsys):
    command = trial("digits", space_args={"width": 4, "rules": ["usf", "fa", "kp"]})
    from nni_bio.search_spaces import space_json

    path = write_config(tmp_path, command, space=space_json("tiny", "digits", {"width": 4, "rules": ["usf", "fa"]}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["search", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "2 preflight checks failed" in err
    assert "fc: candidates differ (the trial builds ['kp'] too)" in err and "--update-space" in err
    assert f"port {port} is in use" in err


def test_update_space_rewrites_the_stale_file_and_goes_on(tmp_path, no_nnictl, capsys):
    from nni_bio.search_spaces import space_json

    command = trial("digits", space_args={"width": 4, "rules": ["usf", "fa"]})
    path = write_config(tmp_path, command, space=space_json("tiny", "digits", {"width": 4, "rules": ["usf"]}))
    with pytest.raises(Started):
        main(["search", str(path), "--update-space"])
    assert "preflight: search space: updated space.json" in capsys.readouterr().out
    assert check_search_space(path) == "ok"


def test_an_unknown_rule_points_to_nni_bio_rules(tmp_path, no_nnictl, capsys):
    command = trial("digits", space_args={"width": 4, "rules": ["usf", "no_such_rule"]})
    path = write_config(tmp_path, command, space={"fc": {"_type": "choice", "_value": ["usf"]}})
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_rule" in err and "`nni-bio rules` lists the installed rules" in err


def test_a_one_shot_trial_with_an_unknown_rule_or_strategy_is_refused(tmp_path, no_nnictl, capsys):
    command = ("python3 -m nni_bio.strategies.oneshot.trial --space tiny --dataset digits --epochs 2 --space-args "
               + shlex.quote(json.dumps({"rules": ["usf", "no_such_rule"]})))
    path = write_config(tmp_path, command, searchSpace={"strategy": {"_type": "choice", "_value": ["darts", "dart"]}})
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_rule" in err and "`nni-bio rules` lists the installed rules" in err
    assert "2 preflight checks failed" in err and "unknown one-shot strategy dart " in err


def test_the_shipped_digits_configs_pass(tmp_path, no_nnictl, capsys):
    for name in ("digits.yml", "digits-darts.yml"):
        with pytest.raises(Started):
            main(["search", f"examples/{name}"])
    out = capsys.readouterr().out
    assert out.count("preflight: data set digits: found") == 2
    assert "preflight: one-shot space tiny: 3 choices, rules installed" in out
    assert "preflight: one-shot strategy: darts" in out


# -- port ----------------------------------------------------------------------------------------------

def test_a_busy_port_is_refused_and_remote_platforms_need_the_next_one_too(tmp_path, no_nnictl, capsys):
    path = write_config(tmp_path, "python3 train.py", platform="remote")  # not an nni-bio trial: only the port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["search", str(path), "--port", str(port)]) == 2
        assert f"port {port} is in use" in capsys.readouterr().err
        assert main(["search", str(path), "--port", str(port - 1)]) == 2
        assert f"port {port} is in use (remote training needs port {port} as well)" in capsys.readouterr().err
        assert preflight.port_in_use(port)
    with pytest.raises(Started):
        main(["search", str(path), "--port", str(port)])  # free again
    out = capsys.readouterr().out
    assert f"preflight: port {port}: free" in out and "data set and space not checked" in out


def test_the_port_picked_for_a_remote_experiment_has_its_neighbour_free(monkeypatch):
    busy = {8080, 8082}
    monkeypatch.setattr(preflight, "port_in_use", lambda port, host="127.0.0.1": port in busy)
    assert preflight.pick_port({"trainingService": {"platform": "local"}}) == 8081
    assert preflight.pick_port({"trainingService": [{"platform": "remote"}]}) == 8083
