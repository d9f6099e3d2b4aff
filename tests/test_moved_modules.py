"""Modules moved in the layered layout (issue 16) keep working for a release, with a warning that names the
new place; the aliases of the previous rename (issue 10) are gone."""

import importlib
import importlib.machinery
import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("old, new, name", [
    ("nni_bio.rule", "nni_bio.core.rule", "LearningRule"),
    ("nni_bio.layers", "nni_bio.core.layers", "RuleLayer"),
    ("nni_bio.errors", "nni_bio.core.errors", "NniBioError"),
    ("nni_bio.training", "nni_bio.train.training", "scaled_backward"),
])
def test_old_module_warns_and_gives_the_same_objects(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert name in dir(module)


def test_a_plugin_written_against_the_old_imports_still_loads():
    """A rule file as the 0.1 plugin guide and example plugin wrote it: ``from nni_bio.rule import ...``,
    ``nni_bio.layers``, ``nni_bio.errors``, ``nni_bio.training``."""
    plugin = textwrap.dedent('''
        import warnings
        warnings.simplefilter("error", FutureWarning)
        try:
            from nni_bio.rule import Feedback, LearningRule, RuleInfo, PLUGIN_API_VERSION
        except FutureWarning as exc:
            print("warned:", exc)
        warnings.simplefilter("ignore", FutureWarning)
        from nni_bio.rule import Feedback, LearningRule, RuleInfo, PLUGIN_API_VERSION
        from nni_bio.layers import RuleLayer
        from nni_bio.errors import NniBioError
        from nni_bio.training import loss_scale, scaled_backward
        import nni_bio
        assert LearningRule is nni_bio.LearningRule and RuleLayer is nni_bio.RuleLayer
        print("loaded")
    ''')
    done = subprocess.run([sys.executable, "-c", plugin], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "warned: nni_bio.rule has moved to nni_bio.core.rule" in done.stdout and "loaded" in done.stdout


@pytest.mark.parametrize("old", ["nni_bio.oneshot", "nni_bio.strategies.oneshot_base", "nni_bio.strategies.rl"])
def test_the_aliases_of_the_previous_rename_are_gone(old):
    # looked up in the package's own folders (an editable install of another checkout may still hold them)
    parent, _, _ = old.rpartition(".")
    assert importlib.machinery.PathFinder.find_spec(old, importlib.import_module(parent).__path__) is None


def test_the_preflight_no_longer_reads_the_old_oneshot_module():
    from nni_bio.launch.experiment_config import parse_trial_command

    assert parse_trial_command("python3 -m nni_bio.oneshot --space tiny --dataset digits --epochs 2") is None
