"""The NNI manager for real: `nnictl create` end to end (`nni-bio search` on examples/digits-policy-gradient.yml cut to 2
one-epoch trials), and the Python API on the training-service engine.

Covers NNI's manager, the className tuner (nni_bio.strategies.policy_gradient.PolicyGradientTuner) in NNI's dispatcher,
trials running `python3 -m nni_bio.trial` from this environment, the REST API and `nnictl stop`. About a minute
on 2 idle cores (most of it is NNI starting Python + torch for each trial).
"""

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from nni_bio import is_rule
from nni_bio.commands import search
from nni_bio.launch import experiment as ex
from nni_bio.nas.candidates import parse_candidate
from nni_bio.strategies.multi_trial import free_port
from nni_bio.strategies.policy_gradient import STATE_FILE_NAME

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TRIALS = 2

pytestmark = pytest.mark.slow


def nnictl_available() -> bool:
    return (Path(sys.executable).parent / "nnictl").exists() or shutil.which("nnictl") is not None


def tiny_copy(tmp_path: Path) -> Path:
    """examples/digits-policy-gradient.yml with 2 one-epoch trials, absolute paths, and everything written under tmp_path."""
    config = yaml.safe_load((EXAMPLES / "digits-policy-gradient.yml").read_text())
    config.update(
        experimentName="nni-bio test_nnictl",
        searchSpaceFile=str(EXAMPLES / config["searchSpaceFile"]),
        trialCommand=config["trialCommand"].replace("--epochs 5", "--epochs 1") + " --train-limit 256",
        trialCodeDirectory=str(ROOT),
        maxTrialNumber=TRIALS,
        maxExperimentDuration="4m",
        experimentWorkingDirectory=str(tmp_path / "experiments"),
    )
    config["tuner"]["codeDirectory"] = str(ROOT)
    path = tmp_path / "digits-policy-gradient-test.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.skipif(not nnictl_available(), reason="nnictl is not installed")
def test_nni_bio_search_runs_the_rl_tuner_under_nnictl(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # nnictl's experiment manifest (~/nni-experiments/.experiment) too
    config = tiny_copy(tmp_path)
    port = free_port(random.randrange(20000, 40000))
    args = argparse.Namespace(config=str(config), port=port, timeout=300, stop_when_done=False, no_progress=True)
    experiment_id = None
    try:
        code = search.run(args)
        client = ex.RestClient(port)
        experiment_id = client.experiment_id()
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"{TRIALS} trials: {TRIALS} succeeded" in out and "architecture (slot: op @ learning rule)" in out

        space = json.loads((EXAMPLES / "digits.choice_space.json").read_text())
        trials = client.trials()
        assert len(trials) == TRIALS and {t.status for t in trials} == {"SUCCEEDED"}
        for trial in trials:
            assert set(trial.parameters) == set(space)
            for label, value in trial.parameters.items():
                assert value in space[label]["_value"]
                op, rule = parse_candidate(value)
                assert rule is None or is_rule(rule), f"{label}={value}: {rule!r} is not a registered rule"
            assert 0.0 <= trial.score <= 1.0

        state = json.loads((tmp_path / "experiments" / experiment_id / "checkpoint" / STATE_FILE_NAME).read_text())
        assert state["step"] == TRIALS  # the tuner learnt from both results and saved its policy for `nnictl resume`
        assert sorted(json.dumps(h["parameters"], sort_keys=True) for h in state["history"]) == \
            sorted(json.dumps(t.parameters, sort_keys=True) for t in trials)
    finally:
        if experiment_id is None:
            try:
                experiment_id = ex.RestClient(port).experiment_id()
            except OSError:
                pass
        if experiment_id is not None:
            ex.stop(experiment_id)


@pytest.mark.skipif(not nnictl_available(), reason="NNI's manager is not installed")
def test_python_api_on_the_training_service_engine(tmp_path, monkeypatch):
    """run_multi_trial(engine="ts"): NNI manager, one trial process each, results collected before the stop."""
    from nni_bio.strategies.multi_trial import run_multi_trial

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trial processes inherit it
    result = run_multi_trial("tiny", "policy_gradient", max_trials=2, epochs=1, space_args={"width": 4},
                             train_args={"train_limit": 256}, engine="ts", working_dir=tmp_path / "experiments",
                             port=free_port(random.randrange(20000, 40000)))
    assert [t.status for t in result.trials] == ["trained", "trained"]
    assert all(0.0 <= t.metric <= 1.0 and len(t.intermediates) == 1 for t in result.trials)
    assert result.genotype["sample"] == dict(sorted(result.best.sample.items()))
