"""The policy-gradient tuner (nni_bio.strategies.policy_gradient), driven directly: no nnictl, no training."""

import json

import numpy as np
import pytest

from nni_bio.strategies.policy_gradient import STATE_FILE_NAME, PolicyGradientTuner

SPACE = {
    "conv": {"_type": "choice", "_value": ["conv_3x3@fa", "conv_3x3@usf", "skip_connect"]},
    "fc": {"_type": "choice", "_value": ["backprop", "fa", "usf"]},
}


def tuner(**kwargs) -> PolicyGradientTuner:
    t = PolicyGradientTuner(**{"seed": 0, **kwargs})
    t.update_search_space(SPACE)
    return t


def accuracy(parameters: dict, rng: np.random.Generator) -> float:
    """A fake objective: usf in the classifier is best, and conv matters a little."""
    return 0.6 + 0.3 * (parameters["fc"] == "usf") + 0.05 * (parameters["conv"] == "conv_3x3@fa") + rng.normal(0, 0.02)


def test_generated_parameters_are_candidates_of_every_label():
    t = tuner()
    for i in range(20):
        parameters = t.generate_parameters(i)
        assert set(parameters) == set(SPACE)
        assert all(parameters[label] in SPACE[label]["_value"] for label in SPACE)


def test_dedup_avoids_repeating_architectures_while_new_ones_exist():
    t = tuner()
    drawn = [json.dumps(t.generate_parameters(i), sort_keys=True) for i in range(9)]
    assert len(set(drawn)) == 9  # the space has exactly 9 architectures


def test_policy_moves_toward_the_rewarded_candidate():
    t, rng = tuner(learning_rate=0.3, dedup=False), np.random.default_rng(1)
    for i in range(200):
        parameters = t.generate_parameters(i)
        t.receive_trial_result(i, parameters, {"default": accuracy(parameters, rng)})
        t.trial_end(i, True)
    probabilities = t.probabilities()
    assert probabilities["fc"]["usf"] > 0.8
    assert probabilities["conv"]["conv_3x3@fa"] > 1 / 3
    assert t.step == 200 and t.baseline == pytest.approx(0.9, abs=0.08)


def test_minimize_mode_prefers_the_lowest_metric():
    t, rng = tuner(optimize_mode="minimize", dedup=False), np.random.default_rng(2)
    for i in range(200):
        parameters = t.generate_parameters(i)
        t.receive_trial_result(i, parameters, 1.0 - accuracy(parameters, rng))  # a loss, as a plain float
    assert t.probabilities()["fc"]["usf"] > 0.8


def test_same_seed_same_samples():
    a, b = tuner(seed=7), tuner(seed=7)
    assert [a.generate_parameters(i) for i in range(5)] == [b.generate_parameters(i) for i in range(5)]


def test_state_round_trip_restores_logits_baseline_step_and_sampler(tmp_path):
    path, rng = tmp_path / STATE_FILE_NAME, np.random.default_rng(0)
    first = tuner(state_file=path)
    for i in range(12):
        parameters = first.generate_parameters(i)
        first.receive_trial_result(i, parameters, accuracy(parameters, rng))
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()

    second = tuner(state_file=path)  # a resumed dispatcher: new object, same file
    for label in SPACE:
        np.testing.assert_array_equal(second.logits[label], first.logits[label])
    assert (second.baseline, second.variance, second.step) == (first.baseline, first.variance, first.step)
    assert second.history == first.history and second.sampled == first.sampled
    assert second.generate_parameters(100) == first.generate_parameters(100)  # the sampler continues too


def test_state_goes_to_the_nni_checkpoint_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path))
    t = tuner()
    t.receive_trial_result(0, t.generate_parameters(0), 0.5)
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["step"] == 1
    assert tuner().step == 1  # nnictl resume: the dispatcher's new tuner picks it up


def test_state_of_another_space_keeps_only_matching_labels(tmp_path, caplog):
    path = tmp_path / "state.json"
    t = tuner(state_file=path)
    t.logits["fc"][:] = [1.0, 2.0, 3.0]
    t.receive_trial_result(0, {"conv": "skip_connect", "fc": "fa"}, 0.5)
    other = PolicyGradientTuner(seed=0, state_file=path)
    other.update_search_space({"fc": SPACE["fc"], "conv": {"_type": "choice", "_value": ["skip_connect", "x"]}})
    assert other.logits["fc"].tolist() == t.logits["fc"].tolist()
    assert other.logits["conv"].tolist() == [0.0, 0.0]
    assert "another search space" in caplog.text


def test_import_data_replays_results_the_state_does_not_hold(tmp_path):
    records = [{"parameter": {"conv": "skip_connect", "fc": "usf"}, "value": {"default": 0.9}},
               {"parameter": {"conv": "conv_3x3@fa", "fc": "fa"}, "value": 0.5},
               {"parameter": {"conv": {"_value": "skip_connect", "_idx": 2}, "fc": "backprop"}, "value": 0.4}]
    fresh = tuner()
    fresh.import_data(records)  # resume without a state file: every reward is replayed
    assert fresh.step == 3 and len(fresh.sampled) == 3

    path = tmp_path / "state.json"
    resumed = tuner(state_file=path)
    resumed.import_data(records[:2])
    again = tuner(state_file=path)
    again.import_data(records)  # what NNI sends on resume: all finished trials; only the third is new
    assert again.step == 3
    np.testing.assert_allclose(again.logits["fc"], fresh.logits["fc"])


def test_import_data_before_the_search_space_waits_for_it():
    t = PolicyGradientTuner(seed=0)
    t.import_data([{"parameter": {"conv": "skip_connect", "fc": "usf"}, "value": 0.9}])
    t.update_search_space(SPACE)
    assert t.step == 1


def test_failed_trial_counts_as_the_worst_result_by_default():
    t = tuner()
    good = t.generate_parameters(0)
    t.receive_trial_result(0, good, 0.9)
    t.trial_end(0, True)
    bad = t.generate_parameters(1)
    t.trial_end(1, False)  # no final result: e.g. the loss diverged
    assert t.step == 2 and t.history[-1] == (bad, 0.9)
    failed_first = tuner()
    failed_first.generate_parameters(0)
    failed_first.trial_end(0, False)  # nothing to compare with yet: no update
    assert failed_first.step == 0 and not failed_first.pending


def test_failed_trial_with_a_fixed_metric_or_ignored():
    fixed = tuner(failure_metric=0.0)
    fixed.receive_trial_result(0, fixed.generate_parameters(0), 0.9)
    bad = fixed.generate_parameters(1)
    fixed.trial_end(1, False)
    assert fixed.history[-1] == (bad, 0.0)
    before = fixed.probabilities()["fc"][bad["fc"]]
    assert before < 1 / 3  # the failure pushed its candidates down

    ignored = tuner(failure_metric="ignore")
    ignored.receive_trial_result(0, ignored.generate_parameters(0), 0.9)
    ignored.generate_parameters(1)
    ignored.trial_end(1, False)
    assert ignored.step == 1


def test_results_outside_the_space_or_not_finite_are_ignored():
    t = tuner()
    t.receive_trial_result(0, {"conv": "nope", "fc": "fa"}, 0.9)
    t.receive_trial_result(1, {"conv": "skip_connect", "fc": "fa"}, float("nan"))
    assert t.step == 0


@pytest.mark.parametrize("space, message", [
    ({"lr": {"_type": "uniform", "_value": [0, 1]}}, "'lr' is 'uniform'"),
    ({"x": {"_type": "choice", "_value": []}}, "non-empty"),
    ({"x": {"_type": "choice", "_value": [{"_name": "a"}]}}, "nested"),
])
def test_unsupported_search_spaces_fail_with_a_clear_message(space, message):
    with pytest.raises(ValueError, match=message):
        PolicyGradientTuner().update_search_space(space)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="optimize_mode"):
        PolicyGradientTuner(optimize_mode="max")
    with pytest.raises(ValueError, match="failure_metric"):
        PolicyGradientTuner(failure_metric="zero")


def test_nas_format_values_are_accepted():
    t = PolicyGradientTuner(seed=0)
    t.update_search_space({"fc": {"_type": "layer_choice", "_value": ["fa", "usf"]}})
    assert t.generate_parameters(0)["fc"] in ("fa", "usf")
    t.receive_trial_result(0, {"fc": {"_value": "usf", "_idx": 1}}, 0.9)
    assert t.step == 1


def test_entropy_bonus_keeps_the_policy_wider():
    def final_entropy(weight: float) -> float:
        t, rng = tuner(entropy_weight=weight, dedup=False), np.random.default_rng(3)
        for i in range(150):
            parameters = t.generate_parameters(i)
            t.receive_trial_result(i, parameters, accuracy(parameters, rng))
        p = np.array(list(t.probabilities()["fc"].values()))
        return float(-(p * np.log(p)).sum())

    assert final_entropy(0.5) > final_entropy(0.0)
