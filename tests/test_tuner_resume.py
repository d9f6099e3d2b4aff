"""Multi-trial resume keeps the search's memory: after `nnictl resume` NNI builds the tuner afresh and
replays the finished trials through import_data (records as NNI exports them); evolution continues
from their population, TPE from their history, the policy-gradient tuner from its saved policy, and
none of them proposes a finished architecture again."""

import json
from pathlib import Path

import pytest
import yaml

from nni_bio.strategies.evolution import EvolutionTuner

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHOICE = {"conv": {"_type": "choice", "_value": ["conv_3x3@fa", "conv_3x3@usf", "skip_connect"]},
          "fc": {"_type": "choice", "_value": ["fa", "usf"]}}
NAS = {label: {"_type": "layer_choice", "_value": spec["_value"]} for label, spec in CHOICE.items()}


def nas(sample: dict) -> dict:
    """A sample as a NAS-format tuner hands it out (and NNI's database keeps it)."""
    return {label: {"_value": v, "_idx": NAS[label]["_value"].index(v)} for label, v in sample.items()}


FINISHED = [  # what NNI's exportData sends on resume: parameters as the tuner gave them, the trial's final metric
    {"parameter": nas({"conv": "conv_3x3@fa", "fc": "fa"}), "value": {"default": 0.5, "loss": 1.2}},
    {"parameter": nas({"conv": "conv_3x3@usf", "fc": "usf"}), "value": {"default": 0.9, "loss": 0.4}},
    {"parameter": nas({"conv": "skip_connect", "fc": "fa"}), "value": {"default": 0.7, "loss": 0.8}},
]


def differs_in_one_label(a: dict, b: dict) -> bool:
    return sum(json.dumps(a[k]) != json.dumps(b[k]) for k in a) == 1


def test_nnis_own_evolution_tuner_forgets_the_finished_trials():
    """Why EvolutionTuner exists: NNI's tuner ignores import_data, so a resume starts a new random population."""
    from nni.algorithms.hpo.regularized_evolution_tuner import RegularizedEvolutionTuner

    tuner = RegularizedEvolutionTuner(population_size=3, sample_size=2)
    tuner.update_search_space(NAS)
    tuner.import_data(FINISHED)
    assert len(tuner.population) == 0 and len(tuner.initial_population) == 3


def test_evolution_continues_from_the_imported_population():
    tuner = EvolutionTuner(population_size=3, sample_size=2, seed=0)
    tuner.update_search_space(NAS)
    tuner.import_data(FINISHED)
    assert [i.parameters for i in tuner.population] == [e["parameter"] for e in FINISHED]  # NNI's order: aging
    assert [i.result for i in tuner.population] == [0.5, 0.9, 0.7]
    assert len(tuner.initial_population) == 0 and tuner.evaluated == 3
    finished = [e["parameter"] for e in FINISHED]
    for parameter_id in range(3):  # no random individual: tournaments over the finished trials
        child = tuner.generate_parameters(parameter_id)
        assert child not in finished and any(differs_in_one_label(child, p) for p in finished)
        tuner.receive_trial_result(parameter_id, child, {"default": 0.1})
    assert tuner.evaluated == 6 and len(tuner.population) == 3  # the oldest left


def test_imports_fill_the_initial_population_and_minimize_negates():
    tuner = EvolutionTuner(optimize_mode="minimize", population_size=5, sample_size=2, seed=1)
    tuner.update_search_space(NAS)
    tuner.import_data(FINISHED[:2])
    assert len(tuner.initial_population) == 3 and [i.result for i in tuner.population] == [-0.5, -0.9]
    drawn = [tuner.generate_parameters(i) for i in range(3)]
    assert all(d not in [e["parameter"] for e in FINISHED[:2]] for d in drawn)  # random, but never a finished one
    assert len(tuner.initial_population) == 0


def test_choice_format_plain_values_and_waiting_imports():
    tuner = EvolutionTuner(population_size=2, sample_size=1, seed=0)
    plain = [{"parameter": {k: v["_value"] for k, v in e["parameter"].items()}, "value": e["value"]} for e in FINISHED]
    tuner.import_data(plain[:2] + [{"parameter": {"conv": "avg_pool", "fc": "fa"}, "value": 1.0}])  # before the space
    tuner.update_search_space(CHOICE)
    assert [i.parameters for i in tuner.population] == [p["parameter"] for p in plain[:2]]  # the unknown one skipped
    child = tuner.generate_parameters(0)
    assert all(isinstance(v, str) for v in child.values()) and set(child) == set(CHOICE)


def test_dedup_proposes_the_one_architecture_left():
    tuner = EvolutionTuner(population_size=2, sample_size=2, seed=3)
    tuner.update_search_space(NAS)
    every = [nas({"conv": c, "fc": f}) for c in NAS["conv"]["_value"] for f in NAS["fc"]["_value"]]
    tuner.import_data([{"parameter": p, "value": 0.5} for p in every[1:]])
    assert tuner.generate_parameters(0) == every[0]


def test_a_failed_random_individual_is_replaced():
    tuner = EvolutionTuner(population_size=2, sample_size=1, seed=0)
    tuner.update_search_space(NAS)
    first = tuner.generate_parameters(0)
    tuner.trial_end(0, success=False)
    assert len(tuner.initial_population) == 2 and first not in list(tuner.initial_population)


def test_tpe_continues_from_its_history():
    """NNI's TPE implements import_data: the history is restored and finished architectures are not proposed."""
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    tuner = TpeTuner(optimize_mode="maximize", seed=0)
    tuner.update_search_space(CHOICE)
    every = [{"conv": c, "fc": f} for c in CHOICE["conv"]["_value"] for f in CHOICE["fc"]["_value"]]
    tuner.import_data([{"parameter": p, "value": {"default": 0.1 * i}} for i, p in enumerate(every[:-1])])
    assert {key: len(records) for key, records in tuner._history.items()} == {("conv",): 5, ("fc",): 5}
    assert max(r.loss for r in tuner._history[("fc",)]) == 0.0  # maximized: the loss is the negated metric
    assert tuner.generate_parameters(0) == every[-1]


def test_policy_gradient_tuner_resumes_its_saved_policy(tmp_path, monkeypatch):
    """NNI's resume sequence on PolicyGradientTuner: a new object, the search space, then every finished trial."""
    import numpy as np

    from nni_bio.strategies.policy_gradient import STATE_FILE_NAME, PolicyGradientTuner

    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path))
    before = PolicyGradientTuner(seed=0, learning_rate=0.5)
    before.update_search_space(CHOICE)
    records = []
    for parameter_id in range(3):
        parameters = before.generate_parameters(parameter_id)
        before.receive_trial_result(parameter_id, parameters, {"default": 0.3 * parameter_id})
        records.append({"parameter": parameters, "value": {"default": 0.3 * parameter_id}})
    assert (tmp_path / STATE_FILE_NAME).is_file()

    after = PolicyGradientTuner(seed=0, learning_rate=0.5)  # the dispatcher after `nnictl resume`
    after.update_search_space(CHOICE)
    after.import_data(records)
    assert after.step == before.step == 3  # the saved policy, no reward counted twice
    assert all(np.allclose(after.logits[k], before.logits[k]) for k in CHOICE)
    assert after.generate_parameters(3) not in [r["parameter"] for r in records]


@pytest.mark.parametrize("name", ["digits.yml", "digits-evolution.yml", "cifar10-evolution.yml", "cifar10.yml"])
def test_shipped_evolution_configs_use_the_resumable_tuner(name):
    tuner = yaml.safe_load((EXAMPLES / name).read_text())["tuner"]
    assert tuner["className"] == "nni_bio.strategies.evolution.EvolutionTuner" and "codeDirectory" in tuner
    EvolutionTuner(**tuner["classArgs"])
