"""Modules renamed in the layout review (issue 10) keep working for a release, with a warning that names
the new place."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("old, new, name", [
    ("nni_bio.strategies.rl", "nni_bio.strategies.policy_gradient", "PolicyGradientTuner"),
    ("nni_bio.strategies.oneshot_base", "nni_bio.strategies.oneshot.search", "Search"),
    ("nni_bio.oneshot", "nni_bio.strategies.oneshot.trial", "final_metrics"),
])
def test_old_module_warns_and_gives_the_same_objects(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_old_oneshot_trial_command_still_runs_and_says_where_it_moved():
    done = subprocess.run([sys.executable, "-m", "nni_bio.oneshot", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--strategy" in done.stdout
    assert "python3 -m nni_bio.strategies.oneshot.trial" in done.stderr


def test_the_preflight_still_reads_old_oneshot_commands():
    from nni_bio.preflight import parse_trial_command

    command = parse_trial_command("python3 -m nni_bio.oneshot --space tiny --dataset digits --epochs 2")
    assert command is not None and command.oneshot and command.args.epochs == 2
