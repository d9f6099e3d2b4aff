"""The nnictl launcher's pieces that need no running experiment."""

import json
import shlex

import pytest
import yaml

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


# -- the search space a config offers is the one its trials build --------------------------------------

def _config(tmp_path, rules_in_command, rules_in_file, *, tuner="RegularizedEvolutionTuner", fmt="nas"):
    from nni_bio.commands.export_space import space_json

    space_args = json.dumps({"width": 4, "rules": rules_in_command})
    (tmp_path / "space.json").write_text(json.dumps(space_json("tiny", "digits", {"width": 4, "rules": rules_in_file},
                                                               fmt)))
    path = tmp_path / "search.yml"
    path.write_text(yaml.safe_dump({
        "searchSpaceFile": "space.json", "tuner": {"name": tuner}, "trainingService": {"platform": "local"},
        "trialCommand": "OMP_NUM_THREADS=1 python3 -m nni_bio.trial --space tiny --dataset digits --space-args "
                        + shlex.quote(space_args)}))
    return path


def test_a_search_space_file_made_for_other_rules_is_refused_with_the_command_that_fixes_it(tmp_path, capsys):
    from nni_bio.cli import main
    from nni_bio.experiment import check_search_space

    path = _config(tmp_path, ["usf", "fa", "kp"], ["usf", "fa"])
    with pytest.raises(ExperimentError, match="nni-bio export-space") as caught:
        check_search_space(path)
    message = str(caught.value)
    assert "fc: candidates differ (the trial builds ['kp'] too)" in message
    command = next(line.strip() for line in message.splitlines() if line.strip().startswith("nni-bio export-space"))
    assert "--space-args '{\"width\": 4, \"rules\": [\"usf\", \"fa\", \"kp\"]}' --format nas" in command
    assert main(shlex.split(command)[1:]) == 0  # the command as printed regenerates the file
    assert check_search_space(path) == "ok"


def test_update_space_rewrites_a_stale_file_and_a_wrong_format_is_caught(tmp_path):
    from nni_bio.experiment import check_search_space

    path = _config(tmp_path, ["usf", "fa"], ["usf"])
    assert check_search_space(path, update=True) == "updated"
    assert check_search_space(path) == "ok"
    path = _config(tmp_path, ["usf", "fa"], ["usf", "fa"], fmt="choice")  # RegularizedEvolutionTuner reads "nas"
    with pytest.raises(ExperimentError, match="(?s)_type 'choice'.*'layer_choice'.*--format nas"):
        check_search_space(path)
    path = _config(tmp_path, ["usf", "fa"], ["usf", "fa"], tuner="TPE", fmt="choice")
    assert check_search_space(path) == "ok"


def test_a_rule_that_is_not_installed_is_named_before_launching(tmp_path):
    from nni_bio.experiment import check_search_space

    path = _config(tmp_path, ["usf"], ["usf"])
    path.write_text(path.read_text().replace('"usf"]', '"usf", "no_such_rule"]'))
    with pytest.raises(ExperimentError, match="(?s)cannot be built here.*no_such_rule.*nni-bio rules"):
        check_search_space(path)


def test_nni_bio_search_refuses_a_stale_space_before_starting_nni(tmp_path, monkeypatch, capsys):
    from nni_bio import experiment as ex
    from nni_bio.cli import main

    monkeypatch.setattr(ex, "create", lambda *a, **k: pytest.fail("nnictl was started"))
    assert main(["search", str(_config(tmp_path, ["usf", "fa"], ["usf"]))]) == 2
    assert "--update-space" in capsys.readouterr().err


def test_search_reports_what_a_one_shot_trial_s_number_is(monkeypatch, capsys):
    import argparse
    from types import SimpleNamespace

    from nni_bio import experiment as ex
    from nni_bio.commands import search
    from nni_bio.oneshot import final_metrics

    record = SimpleNamespace(val_acc=0.98, derived_val_acc=0.2425, epoch=15)
    result = SimpleNamespace(history=[record], final=record, strategy="darts",
                             sample={"conv1": "conv_3x3@fa", "conv2": "skip_connect", "fc": "usf"})
    final = final_metrics(result, SimpleNamespace(final=SimpleNamespace(val_acc=0.9125)), 5)
    trial = decode_trial(rest_trial("t1", "SUCCEEDED", {"strategy": "darts"}, final))
    monkeypatch.setattr(ex, "create", lambda *a, **k: None)
    monkeypatch.setattr(ex, "RestClient", lambda port: SimpleNamespace(experiment_id=lambda: "exp1"))
    monkeypatch.setattr(ex, "wait", lambda *a, **k: [trial])
    args = argparse.Namespace(config="examples/digits-darts.yml", port=1, timeout=1, stop_when_done=False,
                              no_progress=True)
    assert search.run(args) == 0
    out = capsys.readouterr().out
    assert trial.score == 0.9125
    assert ("best trial t1: 0.9125 = validation accuracy of the derived architecture retrained from scratch for 5 "
            "epochs") in out
    assert "shared weights: 0.2425" in out and "supernet as the search evaluates it (last epoch): 0.9800" in out
    assert "validation accuracy 0.98" not in out
