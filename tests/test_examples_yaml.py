"""Every experiment YAML in examples/ is a valid NNI config whose shipped search space is up to date."""

import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import yaml

from nni_bio import is_rule
from nni_bio.launch.experiment_config import check_search_space, load_config
from nni_bio.search_spaces import SPACES
from nni_bio.trial import parse_args

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yml"))


def space_is_installed(name: str) -> bool:
    module = SPACES[name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


def trial_arguments(config: dict):
    """The nni_bio.trial arguments of the config's trialCommand, or None for another entry point."""
    words = shlex.split(config["trialCommand"])
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words = words[1:]
    if words[1:3] != ["-m", "nni_bio.trial"]:
        return None
    return parse_args(words[3:])  # unknown or malformed options fail here


def test_the_multi_trial_examples_exist():
    names = {path.name for path in CONFIGS}
    for strategy in ("evolution", "random", "tpe", "policy-gradient"):
        assert f"digits-{strategy}.yml" in names and f"cifar10-{strategy}.yml" in names
    assert {"digits.yml", "cifar10-remote.yml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid_for_nni(path, tmp_path):
    from nni.experiment.config import ExperimentConfig

    config = load_config(path)  # nni-bio's own checks: required fields, search-space file next to it
    assert config.get("searchSpaceFile") or config.get("searchSpace"), "no search space"
    raw = yaml.safe_load(path.read_text())
    for machine in raw["trainingService"].get("machineList", []):
        assert machine["pythonPath"].endswith("/bin"), "pythonPath is the venv's bin directory"
        key = tmp_path / "id_key"  # NNI checks that the key file exists; the example's is a placeholder
        key.write_text("")
        machine["sshKeyFile"] = str(key)
    for name in ("searchSpaceFile", "trialCodeDirectory"):
        if name in raw:
            raw[name] = str((path.parent / raw[name]).resolve())
    if "codeDirectory" in raw["tuner"]:
        raw["tuner"]["codeDirectory"] = str((path.parent / raw["tuner"]["codeDirectory"]).resolve())
    copy = tmp_path / path.name  # with absolute paths, so it validates from tmp_path
    copy.write_text(yaml.safe_dump(raw))
    ExperimentConfig.load(copy).canonical_copy()  # what nnictl create validates


#: configs whose trials run nni_bio.trial over a search-space file (one-shot configs name only a strategy)
SPACE_FILE_CONFIGS = [p for p in CONFIGS if "searchSpaceFile" in load_config(p)
                      and trial_arguments(load_config(p)) is not None]


def test_one_shot_configs_are_the_only_ones_without_a_search_space_file():
    assert {p.name for p in CONFIGS} - {p.name for p in SPACE_FILE_CONFIGS} == {
        p.name for p in CONFIGS if "nni_bio.strategies.oneshot.trial" in load_config(p)["trialCommand"]}


@pytest.mark.parametrize("path", SPACE_FILE_CONFIGS, ids=lambda p: p.name)
def test_shipped_search_space_is_what_export_space_writes(path):
    """The check `nni-bio search` runs before launching: file = the space the trial command builds, in the
    tuner's format (its error gives the export-space command that regenerates the file)."""
    config = load_config(path)
    args = trial_arguments(config)
    if not space_is_installed(args.space):
        pytest.skip(f"search space {args.space!r} is not written yet")
    missing = [r for r in json.loads(args.space_args).get("rules", []) if not is_rule(r)]
    if missing:
        pytest.skip(f"{path.name} offers rules from a plugin that is not installed: {missing} "
                    "(pip install -e examples/plugins/nni-bio-hebbian)")
    assert check_search_space(path, config) == "ok"


def test_a_plugin_rule_is_offered_by_a_shipped_config():
    config = load_config(EXAMPLES / "digits-softhebb.yml")
    assert "softhebb" in json.loads(trial_arguments(config).space_args)["rules"]
    shipped = json.loads((EXAMPLES / config["searchSpaceFile"]).read_text())
    assert all(any(c.split("@")[-1] == "softhebb" for c in choice["_value"]) for choice in shipped.values())
    assert "digits-softhebb.yml" in (EXAMPLES / "README.md").read_text()


@pytest.mark.parametrize("path", [p for p in CONFIGS if "className" in (yaml.safe_load(p.read_text())["tuner"])],
                         ids=lambda p: p.name)
def test_custom_tuners_are_importable_and_accept_their_arguments(path):
    from nni.tools.package_utils.tuner_factory import create_customized_class_instance

    tuner = yaml.safe_load(path.read_text())["tuner"]
    assert tuner.get("codeDirectory"), "NNI 3.0 rejects a className tuner without codeDirectory"
    instance = create_customized_class_instance({**tuner, "codeDirectory": str(path.parent)})  # what the dispatcher does
    assert type(instance).__name__ == tuner["className"].rsplit(".", 1)[1]


def test_search_space_files_are_all_used():
    used = {load_config(p).get("searchSpaceFile") for p in CONFIGS}
    assert {p.name for p in EXAMPLES.glob("*.json")} <= used


@pytest.mark.parametrize("path", [p for p in CONFIGS if "SuccessiveHalvingTuner" in p.read_text()], ids=lambda p: p.name)
def test_halving_examples_run_their_whole_schedule(path):
    """maxTrialNumber is what the successive-halving schedule needs: fewer would stop before the top rung, more
    would leave the experiment waiting for trials the tuner never sends."""
    from nni_bio.strategies.halving import SuccessiveHalvingTuner

    config = yaml.safe_load(path.read_text())
    tuner = SuccessiveHalvingTuner(**config["tuner"]["classArgs"])
    tuner.update_search_space(json.loads((EXAMPLES / config["searchSpaceFile"]).read_text()))
    assert config["maxTrialNumber"] == tuner.total_trials()

