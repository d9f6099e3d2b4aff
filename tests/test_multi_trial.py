"""Multi-trial search from Python (nni_bio.strategies.multi_trial) on the sequential engine: in-process, tiny."""

import importlib.util
import runpy
from pathlib import Path

import pytest

from nni_bio import is_rule
from nni_bio.core.errors import NniBioError
from nni_bio.nas.candidates import parse_candidate
from nni_bio.search_spaces import space_class
from nni_bio.strategies.multi_trial import STRATEGIES, make_strategy, run_multi_trial

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = {"width": 4}
FAST = {"train_limit": 256, "batch_size": 64}


def candidates_are_rules(sample: dict) -> bool:
    rules = [parse_candidate(value)[1] for value in sample.values()]
    return all(rule is None or is_rule(rule) for rule in rules) and any(rules)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_searches_the_tiny_space(strategy, tmp_path):
    result = run_multi_trial("tiny", strategy, max_trials=2, epochs=1, space_args=TINY, train_args=FAST,
                             working_dir=tmp_path, seed=0)
    assert len(result.trials) == 2
    assert all(t.status == "trained" and 0.0 <= t.metric <= 1.0 and len(t.intermediates) == 1 for t in result.trials)
    assert all(sorted(t.sample) == ["conv1", "conv2", "fc"] and candidates_are_rules(t.sample) for t in result.trials)
    assert result.best.metric == max(t.metric for t in result.trials)
    assert result.genotype == {"space": "tiny", "args": result.space_args, "sample": dict(sorted(result.best.sample.items()))}
    network = space_class("tiny").build_network(result.genotype)  # the best architecture rebuilds
    assert sum(p.numel() for p in network.parameters()) > 0


def test_seeded_searches_repeat(tmp_path):
    runs = [run_multi_trial("tiny", "random", max_trials=2, epochs=1, space_args=TINY, train_args=FAST, seed=3,
                            working_dir=tmp_path) for _ in range(2)]
    assert [t.sample for t in runs[0].trials] == [t.sample for t in runs[1].trials]
    assert [t.metric for t in runs[0].trials] == [t.metric for t in runs[1].trials]


def test_diverging_architectures_fail_and_the_search_goes_on(tmp_path):
    result = run_multi_trial("tiny", "random", max_trials=2, epochs=1, space_args=TINY,
                             train_args={**FAST, "lr": 1e30, "grad_clip": 0.0}, working_dir=tmp_path)
    assert [t.status for t in result.trials] == ["failed", "failed"]
    assert result.best is None and result.genotype is None


def test_unknown_strategy_suggests_a_name():
    with pytest.raises(NniBioError, match="'random'"):
        make_strategy("randon", max_trials=2)


def test_unknown_engine_is_rejected():
    with pytest.raises(ValueError, match="engine"):
        run_multi_trial("tiny", "random", engine="cgo")


def test_python_api_example_runs(capsys, tmp_path):
    module = runpy.run_path(str(EXAMPLES / "python_api.py"), run_name="example")
    genotype = module["main"](["--max-trials", "2", "--epochs", "1", "--width", "4", "--working-dir", str(tmp_path)])
    assert genotype["space"] == "tiny" and candidates_are_rules(genotype["sample"])
    assert "best: val acc" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("nni_bio.search_spaces.darts") is None, reason="no darts space yet")
@pytest.mark.parametrize("strategy", ["tpe", "policy_gradient"])
def test_tuner_strategies_handle_the_input_choices_of_cell_spaces(strategy, tmp_path):
    # NNI's own HPOTunerStrategy fails here: input choices have no as_legacy_dict() and want [index]
    result = run_multi_trial("darts", strategy, max_trials=2, epochs=1, train_args=FAST, working_dir=tmp_path,
                             space_args={"width": 4, "num_cells": 3, "rules": ["fa", "usf"]})
    assert [t.status for t in result.trials] == ["trained", "trained"]
    inputs = [label for label in result.best.sample if "/input_" in label]
    assert inputs and all(isinstance(result.best.sample[label], list) for label in inputs)
    assert result.genotype["space"] == "darts" and result.genotype["normal"]


def test_every_trial_writes_what_a_nnictl_trial_writes(tmp_path):
    """One trial runtime (issue 10): the Python route writes genotype.json, result.json and TensorBoard
    logs per trial, as `python -m nni_bio.trial` under nnictl does."""
    import json

    result = run_multi_trial("tiny", "random", max_trials=2, epochs=1, space_args=TINY, train_args=FAST,
                             working_dir=tmp_path, seed=1)
    folders = sorted((tmp_path / result.experiment_id / "trials").iterdir())
    assert [f.name for f in folders] == ["0", "1"]
    for folder, trial in zip(folders, result.trials):
        genotype = json.loads((folder / "genotype.json").read_text())
        assert genotype["sample"] == dict(sorted(trial.sample.items()))
        saved = json.loads((folder / "result.json").read_text())
        assert saved["default"] == trial.metric and saved["genotype"] == genotype
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))


def test_the_old_strategy_name_rl_is_gone():
    with pytest.raises(NniBioError, match="ppo"):
        make_strategy("rl", max_trials=3)

