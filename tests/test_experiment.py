"""The nnictl launcher's pieces that need no running experiment."""

import json

import pytest

from nni_bio.experiment import ExperimentError, best_trial, decode_trial, load_config, unwrap_choice


def rest_trial(trial_id, status, params, final=None):
    raw = {"trialJobId": trial_id, "status": status,
           "hyperParameters": [json.dumps({"parameter_id": 0, "parameter_source": "algorithm", "parameters": params})]}
    if final is not None:
        raw["finalMetricData"] = [{"data": json.dumps(json.dumps(final))}]
    return raw


def test_decode_trial_unwraps_nni_json_in_json():
    trial = decode_trial(rest_trial("a", "SUCCEEDED", {"fc": "usf"}, {"default": 0.9, "val_loss": 0.3}))
    assert trial.parameters == {"fc": "usf"} and trial.score == 0.9


def test_best_trial_ignores_failed_and_unscored():
    trials = [decode_trial(rest_trial("a", "SUCCEEDED", {}, {"default": 0.5})),
              decode_trial(rest_trial("b", "FAILED", {}, {"default": 0.99})),
              decode_trial(rest_trial("c", "SUCCEEDED", {}, 0.7)),
              decode_trial(rest_trial("d", "RUNNING", {}))]
    assert best_trial(trials).id == "c"
    assert best_trial(trials[1:2]) is None


def test_unwrap_choice_handles_both_tuner_formats():
    assert unwrap_choice({"_value": "conv_3x3@fa", "_idx": 1}) == "conv_3x3@fa"
    assert unwrap_choice("fa") == "fa"


def test_shipped_digits_config_is_valid():
    config = load_config("examples/digits.yml")
    assert "nni_bio.trial" in config["trialCommand"]


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not valid YAML"),
    ("- a list", "YAML mapping"),
    ("trialCommand: x\ntuner: {name: TPE}", "trainingService"),
    ("trialCommand: x\ntuner: {name: TPE}\ntrainingService: {platform: local}\nsearchSpaceFile: nope.json", "nope.json"),
])
def test_malformed_configs_fail_early_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=message):
        load_config(path)


def test_missing_config_is_named():
    with pytest.raises(ExperimentError, match="missing.yml"):
        load_config("missing.yml")
