"""Successive halving as an NNI tuner: the schedule it promises, the best networks promoted, the corners kept at
every rung, proposals sent later when a rung waits for its results, a resume that does not rerun finished work,
and the trial that honours the budget it is handed."""

import json

import pytest
from nni import NoMoreTrialError

from nni_bio.strategies.halving import BUDGET_KEY, SuccessiveHalvingTuner, rung_schedule
from nni_bio.trial import budget_epochs, main

LABELS = ["a", "b", "c"]
SPACE = {label: {"_type": "choice", "_value": [0, 1, 2, 3]} for label in LABELS}  # 64 networks
ONE_RULE = [{label: v for label in LABELS} for v in (0, 3)]  # the corners


def score(network: dict) -> float:
    """A known landscape: accuracy grows with the sum of the values, and with the budget."""
    return sum(network[label] for label in LABELS) / 9 + network[BUDGET_KEY] / 100


def run_schedule(tuner: SuccessiveHalvingTuner, fail: set = frozenset()) -> list[dict]:
    """Drive the tuner as NNI's dispatcher does with one trial at a time; return every proposal in order."""
    proposals, parameter_id = [], 0
    while True:
        try:
            proposal = tuner.generate_parameters(parameter_id)
        except NoMoreTrialError:
            return proposals
        proposals.append(proposal)
        if parameter_id not in fail:
            tuner.receive_trial_result(parameter_id, proposal, {"default": score(proposal)})
        tuner.trial_end(parameter_id, parameter_id not in fail)
        parameter_id += 1


def test_rung_schedule_halves_and_keeps_the_corners_at_every_rung():
    assert rung_schedule(9, 3, 3) == [9, 3, 1]
    assert rung_schedule(8, 3, 2, always=2) == [10, 6, 4]
    assert rung_schedule(1, 3, 3) == [1, 1, 1]


def test_the_schedule_runs_exactly_total_trials_and_promotes_the_best_of_each_rung():
    tuner = SuccessiveHalvingTuner(rungs=[1, 3, 9], population=9, seed=0)
    tuner.update_search_space(SPACE)
    proposals = run_schedule(tuner)
    assert len(proposals) == tuner.total_trials() == 13
    by_rung = {epochs: [p for p in proposals if p[BUDGET_KEY] == epochs] for epochs in (1, 3, 9)}
    assert [len(v) for v in by_rung.values()] == [9, 3, 1]
    assert len({json.dumps({k: p[k] for k in LABELS}) for p in by_rung[1]}) == 9  # distinct networks
    best_three = sorted(by_rung[1], key=score, reverse=True)[:3]
    strip = lambda p: {k: p[k] for k in LABELS}  # noqa: E731
    assert sorted(map(json.dumps, map(strip, by_rung[3]))) == sorted(map(json.dumps, map(strip, best_three)))
    assert strip(by_rung[9][0]) == strip(max(by_rung[3], key=score))


def test_corners_are_trained_at_every_rung_and_never_halved_away():
    tuner = SuccessiveHalvingTuner(rungs=[1, 2, 4], population=6, eta=3, always=ONE_RULE, seed=1)
    tuner.update_search_space(SPACE)
    proposals = run_schedule(tuner)
    assert len(proposals) == tuner.total_trials() == 6 + 2 + 1 + 3 * 2
    for corner in ONE_RULE:
        budgets = sorted(p[BUDGET_KEY] for p in proposals if {k: p[k] for k in LABELS} == corner)
        assert budgets == [1, 2, 4]  # seen at the search's own top fidelity, even the worst one (all zeros)


def test_same_seed_same_schedule_other_seed_other_networks():
    def first_rung(seed):
        tuner = SuccessiveHalvingTuner(rungs=[1, 3], population=5, seed=seed)
        tuner.update_search_space(SPACE)
        return run_schedule(tuner)

    assert first_rung(3) == first_rung(3)
    assert first_rung(3) != first_rung(4)


def test_a_failed_trial_ranks_last_and_the_rung_still_completes():
    tuner = SuccessiveHalvingTuner(rungs=[1, 3], population=4, eta=2, seed=0)
    tuner.update_search_space(SPACE)
    proposals = run_schedule(tuner, fail={0})
    assert len(proposals) == 6
    failed = {k: proposals[0][k] for k in LABELS}
    assert failed not in [{k: p[k] for k in LABELS} for p in proposals[4:]]


def test_a_waiting_rung_sends_its_proposals_when_the_results_are_in():
    """With two trials at once, NNI asks for a trial while the last of a rung still runs: the request is
    remembered and answered through the dispatcher's callback when the rung is complete."""
    sent = []
    tuner = SuccessiveHalvingTuner(rungs=[1, 3], population=2, eta=2, seed=0)
    tuner.update_search_space(SPACE)
    first = tuner.generate_parameters(0, st_callback=lambda pid, p: sent.append((pid, p)))
    second = tuner.generate_parameters(1)
    with pytest.raises(NoMoreTrialError):
        tuner.generate_parameters(2)  # rung 0 has no more proposals and waits
    for pid, proposal in ((0, first), (1, second)):
        tuner.receive_trial_result(pid, proposal, score(proposal))
        tuner.trial_end(pid, True)
    assert [pid for pid, _ in sent] == [2]
    assert sent[0][1][BUDGET_KEY] == 3
    assert {k: sent[0][1][k] for k in LABELS} == {k: max((first, second), key=score)[k] for k in LABELS}


def test_a_resumed_tuner_does_not_rerun_finished_trials():
    tuner = SuccessiveHalvingTuner(rungs=[1, 3], population=4, eta=2, seed=0)
    tuner.update_search_space(SPACE)
    done = []
    for pid in range(3):  # three trials of rung 0 finished before the experiment stopped
        proposal = tuner.generate_parameters(pid)
        done.append({"parameter": proposal, "value": {"default": score(proposal)}})  # as NNI decodes it
    resumed = SuccessiveHalvingTuner(rungs=[1, 3], population=4, eta=2, seed=0)
    resumed.update_search_space(SPACE)
    resumed.import_data(done)
    rest = run_schedule(resumed)
    assert [p[BUDGET_KEY] for p in rest] == [1, 3, 3]
    assert all(p not in [d["parameter"] for d in done] for p in rest[:1])


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="increasing"):
        SuccessiveHalvingTuner(rungs=[3, 1])
    with pytest.raises(ValueError, match="choice format"):
        SuccessiveHalvingTuner().update_search_space({"a": {"_type": "layer_choice", "_value": [1]}})


def test_the_trial_takes_the_budget_out_of_the_sample():
    sample = {"fc": "fa", BUDGET_KEY: 4}
    assert budget_epochs(sample, 10) == 4 and sample == {"fc": "fa"}
    assert budget_epochs({"fc": "fa"}, 10) == 10
    from nni_bio.core.errors import NniBioError

    with pytest.raises(NniBioError, match="whole number of epochs"):
        budget_epochs({BUDGET_KEY: 0.5}, 10)


def test_the_trial_trains_for_the_budget_it_is_handed(tmp_path):
    sample = json.dumps({"conv1": "conv_3x3", "conv2": "skip_connect", "fc": "fa", BUDGET_KEY: 2})
    assert main(["--space", "tiny", "--dataset", "digits", "--epochs", "5", "--sample", sample,
                 "--output", str(tmp_path), "--train-limit", "200"]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["history"]) == 2
    assert BUDGET_KEY not in json.loads((tmp_path / "genotype.json").read_text())["sample"]
