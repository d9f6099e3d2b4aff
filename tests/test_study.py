"""`nni-bio study`: the study file, the folder's ownership, the statistics, the scheduler, and a real
cut-down digits study killed with SIGKILL and run again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nni_bio.study import StudyConfigError, load_study
from nni_bio.study.config import BIO_RULES, parse_study
from nni_bio.study.report import verdict
from nni_bio.study.runner import Task, claim_folder, execute
from nni_bio.study.statistics import compare, mean_std

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "studies" / "digits.yml"


def raw(**changes):
    base = {"name": "t", "dataset": "digits", "space": "tiny", "arms": {"mixed": "bio", "usf": ["usf"]}}
    return {**base, **changes}


@pytest.mark.parametrize("search, message", [
    ({"strategy": "halving", "tuner_args": {"rungs": [3, 1]}}, "rungs must be increasing"),
    ({"strategy": "halving", "epochs": 4, "tuner_args": {"rungs": [1, 3]}}, "must be the top rung's epochs"),
    ({"strategy": "halving", "max_trials": 2, "epochs": 9}, "below the 3 trials"),
    ({"strategy": "halving", "tuner_args": {"population_size": 4}}, "successive halving takes rungs"),
    ({"strategy": "halving", "tuner_args": {"eta": 1}}, "eta must be a number > 1"),
    ({"repeats": 0}, "search.repeats must be an integer >= 1"),
])
def test_bad_multi_fidelity_and_repeat_settings_are_refused_before_any_work(search, message):
    with pytest.raises(StudyConfigError, match=message):
        parse_study(raw(search=search))


def test_halving_fits_its_schedule_into_the_trial_budget():
    from nni_bio.strategies.halving import rung_schedule
    from nni_bio.study import stages

    config = parse_study(raw(search={"strategy": "halving", "max_trials": 20, "epochs": 9}))
    assert stages.halving_rungs(config) == ([1, 3, 9], 3.0)
    population = stages.halving_population(config, always=2)
    assert sum(rung_schedule(population, 3, 3, 2)) <= 20 < sum(rung_schedule(population + 1, 3, 3, 2))
    assert parse_study(raw(search={"repeats": 1})).fingerprint() == parse_study(raw()).fingerprint()


@pytest.mark.parametrize("name", ["digits", "fashion-mnist"])
def test_the_committed_studies_follow_the_protocol(name):
    """The studies whose reports are committed: multi-fidelity search, 3+ searches per searched arm, 5+ seeds,
    a landscape of 20+ networks, a proxy check of 6+ candidates, one augmentation for search and retraining."""
    config = load_study(ROOT / "examples" / "studies" / f"{name}.yml")
    assert config.search.strategy == "halving" and config.search.repeats >= 3
    assert len(config.retrain.seeds) >= 5 and config.landscape.networks >= 20 and config.search.proxy_check >= 6
    assert "no_augment" in config.retrain.args and "no_augment" not in config.search.train


def test_shipped_study_files_are_valid():
    for path in sorted((ROOT / "examples" / "studies").glob("*.yml")):
        config = load_study(path)
        assert config.compare in config.arms, path
        assert len(config.arms["mixed"]) >= 2 and "backprop" not in config.arms["mixed"]
        assert len(config.retrain.seeds) >= 3


def test_search_trials_train_with_the_retraining_s_augmentation():
    from nni_bio.study.stages import Slot, trial_command

    config = parse_study(raw(retrain={"args": {"no_augment": True, "cutout": 2}}))
    module, args = trial_command(config, "mixed", Slot(), Path("search"))
    assert module == "nni_bio.trial" and "--no-augment" in args and args[args.index("--cutout") + 1] == "2"
    _, args = trial_command(parse_study(raw()), "mixed", Slot(), Path("search"))
    assert "--no-augment" not in args and "--cutout" not in args


def test_shipped_study_files_make_valid_train_and_attack_commands(tmp_path):
    """Every retraining and attack option of a shipped study is a real flag of nni-bio train / attack."""
    from nni_bio.cli import build_parser
    from nni_bio.study.stages import Slot, attack_arguments, retrain_arguments

    parser = build_parser()
    for path in sorted((ROOT / "examples" / "studies").glob("*.yml")):
        config = load_study(path)
        for arm in config.arms:
            train = parser.parse_args(retrain_arguments(config, arm, 0, tmp_path, Slot()))
            assert train.epochs == config.retrain.epochs and train.genotype.endswith("genotype.json")
            attack = parser.parse_args(attack_arguments(config, arm, 0, tmp_path, Slot()))
            assert attack.num_images == config.attack.num_images


def test_a_multi_rule_arm_s_corners_are_the_single_rule_arms_it_offers():
    from nni_bio.study.corners import corner_arms

    config = parse_study(raw(arms={"mixed": "bio", "usf": ["usf"], "fa": ["fa"], "backprop": ["backprop"],
                                   "pair": ["fa", "kp"]}))
    assert corner_arms(config, "mixed") == ["usf", "fa"]  # backprop is not offered by "bio"
    assert corner_arms(config, "pair") == ["fa"] and corner_arms(config, "usf") == []
    one_shot = parse_study(raw(search={"strategy": "darts"}))
    assert corner_arms(one_shot, "mixed") == []  # a supernet's search has no trials to spend on corners


def test_bio_expands_to_every_built_in_bio_rule_and_arms_are_sorted_sets():
    config = parse_study(raw(arms={"mixed": "bio", "mixed_bp": ["bio", "backprop"], "two": ["usf", "fa", "usf"]}))
    assert config.arms == {"mixed": sorted(BIO_RULES), "mixed_bp": sorted(BIO_RULES + ("backprop",)),
                           "two": ["fa", "usf"]}


@pytest.mark.parametrize("change, message", [
    ({"arms": {"x": ["usff"]}}, "usf"),                        # unknown rule: did-you-mean
    ({"search": {"max_trial": 3}}, "max_trials"),               # unknown field: did-you-mean
    ({"search": {"strategy": "genetic"}}, "evolution"),
    ({"space": "tinny"}, "tiny"),
    ({"space_args": {"rules": ["fa"]}}, "each arm sets its own"),
    ({"retrain": {"seeds": [0, 0]}}, "distinct"),
    ({"attack": {"attacks": ["cw"]}}, "fgsm"),
    ({"color": 1}, "unknown field"),
    ({"search": {"strategy": "darts", "hparams": {"arch_learning_rate": 0.1}}}, "arch_lr"),
])
def test_malformed_study_files_fail_early_with_a_hint(change, message):
    with pytest.raises(Exception, match=message):
        parse_study(raw(**change))


@pytest.mark.parametrize("change, message", [
    ({"retrain": {"seeds": ["a", 0]}}, "retrain.seeds must be integers >= 0; not usable: 'a'"),
    ({"retrain": {"seeds": -2}}, "retrain.seeds must be a non-empty list"),
    ({"retrain": {"seeds": [-1, 0]}}, "not usable: -1"),
    ({"retrain": {"epochs": "eight"}}, "retrain.epochs must be an integer >= 1, got 'eight'"),
    ({"search": {"epochs": 0}}, "search.epochs must be an integer >= 1, got 0"),
    ({"search": {"max_trials": True}}, "search.max_trials must be an integer"),
    ({"search": {"max_duration": "6 hours"}}, "search.max_duration"),
    ({"search": {"proxy_check": 3}}, "search.proxy_check needs a multi-trial search and at least 6 candidates"),
    ({"landscape": {"networks": -1}}, "landscape.networks must be an integer >= 0"),
    ({"search": {"train": {"no_augment": False}}, "retrain": {"args": {"no_augment": True}}},
     "search.train.no_augment (False) differs from retrain.args.no_augment (True)"),
    ({"attack": {"num_images": -5}}, "attack.num_images must be an integer >= 1, got -5"),
    ({"attack": {"eps": "0,x"}}, "attack.eps: cannot read"),
    ({"attack": {"gradients": ["exact"]}}, "attack.gradients: unknown ['exact']"),
    ({"compare": "nosucharm"}, "compare 'nosucharm' must name one of the arms: mixed, usf"),
    ({"name": "../elsewhere"}, "plain folder name"),
    ({"retrain": {"args": {"lr": "fast"}}}, "retrain.args: `nni-bio train` refuses it: argument --lr: invalid float"),
    ({"search": {"train": {"batch_sise": 8}}}, "search.train: the search trial refuses it: unrecognized arguments"),
    ({"space_args": {"width": "eight"}}, "space_args {\"width\": \"eight\"}: the space 'tiny' cannot be built"),
])
def test_every_bad_field_is_refused_before_any_work_in_one_line(change, message):
    with pytest.raises(StudyConfigError) as caught:
        parse_study(raw(**change), "s.yml")
    header, *problems = str(caught.value).splitlines()
    assert header == "s.yml: 1 problem(s), nothing was run:" and len(problems) == 1
    assert message in problems[0], problems[0]


def test_every_problem_is_listed_not_only_the_first():
    with pytest.raises(StudyConfigError) as caught:
        parse_study(raw(retrain={"seeds": -2, "epochs": "eight"}, attack={"num_images": -5}, compare="x"))
    assert "4 problem(s)" in str(caught.value) and len(str(caught.value).splitlines()) == 5


def test_a_data_dir_that_does_not_exist_is_refused_before_the_folder_is_made(tmp_path):
    from nni_bio.study import run_study

    config = parse_study(raw(data_dir=str(tmp_path / "no-such-folder")), "s.yml")
    with pytest.raises(StudyConfigError, match="data_dir .*no-such-folder.* is not a folder"):
        run_study(config, tmp_path / "study", progress=False, say=lambda s: None)
    assert not (tmp_path / "study").exists()


def test_missing_study_file_is_named(tmp_path):
    with pytest.raises(StudyConfigError, match="not found"):
        load_study(tmp_path / "nope.yml")


def test_a_folder_of_another_study_is_refused_and_left_untouched(tmp_path):
    folder = tmp_path / "study"
    claim_folder(parse_study(raw()), folder)
    before = (folder / "study.json").read_text()
    claim_folder(parse_study(raw()), folder)  # the same config: fine
    with pytest.raises(StudyConfigError, match="another study.*search"):
        claim_folder(parse_study(raw(search={"max_trials": 99})), folder)
    assert (folder / "study.json").read_text() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(StudyConfigError, match="not a study folder"):
        claim_folder(parse_study(raw()), other)


def test_learning_curves_and_the_convergence_warning():
    from nni_bio.study.report import learning_curves, unconverged

    def run(*val):
        return {"history": [{"val_acc": v} for v in val]}

    arms = {"flat": {"seeds": {0: run(0.5, 0.8, 0.9, 0.9, 0.9), 1: run(0.5, 0.8, 0.9, 0.902, 0.9)}},
            "rising": {"seeds": {0: run(0.3, 0.5, 0.6, 0.7, 0.8)}},
            "none": {"seeds": {}}}
    curves = learning_curves(arms)
    assert set(curves) == {"flat", "rising"} and curves["flat"][3] == pytest.approx(0.901)
    assert unconverged(curves) == {"rising": pytest.approx(0.1)}  # the last fifth (2 epochs of 5) moved 10 points


def test_the_landscape_reads_validation_and_counts_only_searched_rules():
    from nni_bio.study.landscape import analyse, clopper_pearson, one_rule_networks, pick_networks, rules_of

    space = {"stem": {"_value": ["conv_3x3@dfa"]}, "a": {"_value": ["fa", "usf"]}, "b": {"_value": ["fa", "usf"]}}
    assert rules_of({"stem": "conv_3x3@dfa", "a": "usf", "b": "usf"}, space) == ["usf"]  # the stem's rule is fixed
    assert one_rule_networks(space) == {"fa": {"stem": "conv_3x3@dfa", "a": "fa", "b": "fa"},
                                        "usf": {"stem": "conv_3x3@dfa", "a": "usf", "b": "usf"}}
    assert len(pick_networks(space, networks=3, seed=1)) == 3 and len(pick_networks(space, 99, 0)) == 4
    rows = [{"sample": {"stem": "conv_3x3@dfa", "a": a, "b": b}, "val_acc": v,
             "one_rule": a if a == b else None, "test_acc": 1.0 - v}
            for (a, b), v in {("fa", "fa"): 0.5, ("usf", "usf"): 0.7, ("fa", "usf"): 0.8, ("usf", "fa"): 0.6}.items()]
    land = analyse(rows, space)
    assert (land.best_one_rule, land.rank, land.mixed, land.mixed_better) == ("usf", 2, 2, 1)
    assert land.fraction[0] == 0.5 and land.fraction[1:] == pytest.approx(clopper_pearson(1, 2))
    assert land.by_rule_count[1][:2] == (2, pytest.approx(0.6)) and land.per_slot["a"]["usf"][:2] == (2, pytest.approx(0.65))
    low, high = clopper_pearson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1684, abs=1e-4)  # the exact interval's known value


def test_rank_agreement_intervals():
    from nni_bio.study.statistics import rank_agreement

    perfect = rank_agreement(range(10), range(10))
    assert perfect.tau == pytest.approx(1) and perfect.rho == pytest.approx(1) and 0.8 < perfect.rho_low < 1
    noise = rank_agreement([1, 2, 3, 4, 5, 6], [3, 1, 6, 2, 5, 4])
    assert noise.rho_low < 0 < noise.rho_high and noise.tau_low < 0 < noise.tau_high
    assert math.isnan(rank_agreement([1, 2, 3, 4], [1, 2, 3, 4]).tau_low)  # too few for tau's interval


def test_the_proxy_check_reads_the_search_and_the_final_recipe_on_validation(tmp_path):
    from nni_bio.study import stages
    from nni_bio.study.report import proxy_section

    config = parse_study(raw(search={"strategy": "random", "proxy_check": 6}))
    search = {"trials": [{"id": f"t{i}", "status": "SUCCEEDED", "val_acc": 0.1 * i, "sample": {"fc": f"r{i}"}}
                         for i in range(7)] + [{"id": "dup", "status": "SUCCEEDED", "val_acc": 0.05,
                                                "sample": {"fc": "r6"}}],
              "corners": [{"arm": "usf", "val_acc": 0.35, "sample": {"fc": "usf"}}]}
    (tmp_path / "search" / "mixed").mkdir(parents=True)
    (tmp_path / "search" / "mixed" / "search.json").write_text(json.dumps(search))
    chosen = stages.proxy_candidates(config, tmp_path)
    assert [c["id"] for c in chosen] == ["t6", "t5", "t4", "corner:usf", "t3", "t2"]  # distinct, best first
    for index, candidate in enumerate(chosen):  # the final recipe reverses the order: the proxy misleads
        run = stages.proxy_dir(tmp_path, index) / "run"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"status": "complete", "final": {
            "val_acc": 1 - candidate["search_val_acc"], "test_acc": 0.0}}))
    text = "\n".join(proxy_section(config, tmp_path, tmp_path))
    assert "| 3 epoch(s) | 6 | -1.00" in text and "cannot be trusted" in text and (tmp_path / "proxy.png").is_file()
    assert len((tmp_path / "proxy.csv").read_text().splitlines()) == 7


def test_the_proxy_check_gives_one_row_per_rung_of_a_multi_fidelity_search(tmp_path):
    """Successive halving: candidates are ranked by the highest rung they reached; each rung's scores are checked
    against the final recipe on the candidates it trained. Here rung 1 orders them right, the top rung wrong."""
    from nni_bio.study import stages
    from nni_bio.study.report import proxy_section

    config = parse_study(raw(search={"strategy": "halving", "max_trials": 13, "epochs": 3,
                                     "tuner_args": {"rungs": [1, 3]}, "proxy_check": 6}))
    trials = [{"id": f"a{i}", "status": "SUCCEEDED", "epochs": 1, "val_acc": 0.1 * i, "sample": {"fc": f"r{i}"}}
              for i in range(8)]
    trials += [{"id": f"b{i}", "status": "SUCCEEDED", "epochs": 3, "val_acc": 1 - 0.1 * i, "sample": {"fc": f"r{i}"}}
               for i in (3, 4, 5, 6, 7)]
    corners = [{"arm": "usf", "val_acc": 0.2, "sample": {"fc": "r2"}, "in_search": True}]
    (tmp_path / "search" / "mixed").mkdir(parents=True)
    (tmp_path / "search" / "mixed" / "search.json").write_text(json.dumps({"trials": trials, "corners": corners}))
    chosen = stages.proxy_candidates(config, tmp_path)
    assert [c["id"] for c in chosen] == ["b3", "b4", "b5", "b6", "b7", "corner:usf"]
    assert chosen[0]["rungs"] == {"1": pytest.approx(0.3), "3": pytest.approx(0.7)} and chosen[0]["search_epochs"] == 3
    for index, candidate in enumerate(chosen):  # final = the rung-1 order
        run = stages.proxy_dir(tmp_path, index) / "run"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"status": "complete", "final": {
            "val_acc": candidate["rungs"]["1"], "test_acc": 0.0}}))
    text = "\n".join(proxy_section(config, tmp_path, tmp_path))
    assert "| 1 epoch(s) | 6 | +1.00" in text and "| 3 epoch(s) | 5 | -1.00" in text
    assert "cannot be trusted" in text and "the fidelity the search chooses by, 3 epochs" in text


def test_statistics():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    same = compare([0.9, 0.91, 0.92], [0.9, 0.91, 0.92])
    assert same.difference == 0 and not same.significant
    far = compare([0.95, 0.951, 0.952], [0.80, 0.801, 0.802])
    assert far.significant and far.low > 0.14 and far.p_value < 1e-4
    assert math.isnan(compare([0.9], [0.8, 0.81]).low)  # no interval from one value


def test_the_interval_is_welch_s_and_covers_as_often_as_it_says():
    """On synthetic accuracies with a known difference (0.01) and unequal spreads, 3 vs 3 values: the 95 %
    interval covers the truth in about 95 % of 2,000 draws (a percentile bootstrap would in about 75 %)."""
    import numpy as np
    from scipy import stats

    a, b = [0.8554 - 0.006, 0.8554, 0.8554 + 0.006], [0.8894 - 0.0018, 0.8894, 0.8894 + 0.0018]
    c = compare(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert c.p_value == pytest.approx(welch.pvalue) and c.dof == pytest.approx(welch.df)
    assert c.high - c.low < 2 * c.detectable  # 80 % power needs more than the interval's half-width
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        c = compare(rng.normal(0.86, 0.006, 3), rng.normal(0.85, 0.002, 3))
        covered += c.low <= 0.01 <= c.high
    assert 0.93 <= covered / 2000 <= 0.975
    # a true difference of the size the design says it detects is found about 80 % of the time (about 70 % with
    # 3 vs 3 values: the power is computed at the design's Welch dof, which vary from sample to sample)
    design = compare([0.0, 0.01, 0.02], [0.0, 0.01, 0.02])
    found = sum(compare(rng.normal(design.detectable, 0.01, 3), rng.normal(0.0, 0.01, 3)).significant
                for _ in range(2000))
    assert 0.65 <= found / 2000 <= 0.90


def test_verdict_says_what_the_numbers_say_and_chooses_the_best_single_rule_on_validation():
    config = parse_study(raw(arms={"mixed": "bio", "usf": ["usf"], "fa": ["fa"], "backprop": ["backprop"]}))
    acc = {"mixed": [[0.80, 0.801, 0.802]], "usf": [[0.90, 0.901, 0.902]], "fa": [[0.7, 0.7, 0.71]],
           "backprop": [[0.99] * 3]}
    val = {"mixed": [[0.8] * 3], "usf": [[0.9] * 3], "fa": [[0.7] * 3], "backprop": [[0.99] * 3]}
    assert "mixed is worse than the best single bio rule (usf)" in verdict(config, acc, val)
    assert "search-to-search variance is not in it" in verdict(config, acc, val)
    acc["mixed"] = [[0.90, 0.905, 0.899]]
    assert "No significant difference between mixed and the best single bio rule (usf)" in verdict(config, acc, val)
    # fa has the best test accuracy but the worse validation accuracy: usf is still the one compared with
    acc["fa"] = [[0.95, 0.951, 0.952]]
    assert "best single bio rule (usf)" in verdict(config, acc, val)
    assert "No verdict" in verdict(config, acc, {**val, "usf": [[None] * 3]})  # never falls back to test
    acc["mixed"] = [[]]
    assert verdict(config, acc, val).startswith("No verdict")


def test_verdict_with_repeated_searches_holds_search_variance():
    """Three searches that found networks 3 points apart: flat over their 9 runs the gap to usf looks certain; the
    nested verdict sees 3 searches, not 9 independent networks, and says no significant difference."""
    config = parse_study(raw(arms={"mixed": "bio", "usf": ["usf"]}))
    acc = {"mixed": [[0.93, 0.931, 0.929], [0.90, 0.901, 0.899], [0.96, 0.961, 0.959]],
           "usf": [[0.90, 0.902, 0.898]]}
    val = {arm: [[0.9] * 3 for _ in groups] for arm, groups in acc.items()}
    text = verdict(config, acc, val)
    assert "No significant difference" in text and "3 searches x 3 seeds vs 1 search x 3 seeds" in text
    assert "holds search-to-search and seed variance" in text
    flat = compare([v for g in acc["mixed"] for v in g], acc["usf"][0])
    assert flat.significant  # what a flat interval over the 9 runs would have claimed


def test_nested_interval_matches_welch_on_the_search_means():
    """A known answer: units are the searches' means (2, 5, 8) against the single arm's seeds (0, 1, 2); the
    difference is 4 with variance 9/3 + 1/3, Welch-Satterthwaite dof (10/3)^2 / ((9/3)^2/2 + (1/3)^2/2)."""
    from scipy import stats

    from nni_bio.study.statistics import nested_compare

    c = nested_compare([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[0, 1, 2]])
    dof = (10 / 3) ** 2 / ((9 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)
    half = stats.t.ppf(0.975, dof) * math.sqrt(10 / 3)
    assert c.difference == pytest.approx(4) and c.dof == pytest.approx(dof)
    assert (c.low, c.high) == (pytest.approx(4 - half), pytest.approx(4 + half))
    assert c.p_value == pytest.approx(stats.ttest_ind([2, 5, 8], [0, 1, 2], equal_var=False).pvalue)
    assert (c.n_a, c.n_b) == (3, 3)


def test_nested_interval_covers_the_truth_when_searches_vary():
    """Simulated studies with no true difference, search-to-search sd 1.0 and seed sd 0.2 (3 searches x 5 seeds
    against one network x 5 seeds): the nested 95 % interval covers 0 about 95 % of the time, an interval that
    treats the 15 runs as independent far less often."""
    from nni_bio.study.statistics import nested_compare

    rng = np.random.default_rng(0)
    nested = flat = 0
    for _ in range(400):
        mixed = [list(rng.normal(0, 1.0) + rng.normal(0, 0.2, 5)) for _ in range(3)]
        single = [list(rng.normal(0, 0.2, 5))]
        c = nested_compare(mixed, single)
        nested += c.low <= 0 <= c.high
        f = compare([v for g in mixed for v in g], single[0])
        flat += f.low <= 0 <= f.high
    assert nested / 400 >= 0.92 and flat / 400 <= 0.8


def _task(key, deps, log, fail=False, folder=None):
    done = {"flag": False}

    def run(slot):
        log.append(key)
        if fail:
            raise RuntimeError(f"{key} diverged")
        done["flag"] = True

    return Task(key, key.split("/")[0], key.split("/")[1], None, deps, folder / key.replace("/", "_"),
                lambda: done["flag"], run)


def test_a_broken_arm_skips_its_dependents_and_the_other_arms_finish(tmp_path):
    log: list[str] = []
    tasks = [_task("search/a", [], log, fail=True, folder=tmp_path), _task("search/b", [], log, folder=tmp_path),
             _task("retrain/a/s0", ["search/a"], log, folder=tmp_path),
             _task("retrain/b/s0", ["search/b"], log, folder=tmp_path)]
    execute(tasks, jobs=2, progress=False, say=lambda s: None)
    state = {t.key: t.state for t in tasks}
    assert state == {"search/a": "failed", "search/b": "done", "retrain/a/s0": "skipped", "retrain/b/s0": "done"}
    assert "retrain/a/s0" not in log and "diverged" in tasks[2].reason
    assert json.loads((tmp_path / "search_a" / "failed.json").read_text())["reason"].endswith("diverged")
    # a second run keeps the failure (no retry) unless asked
    again = [_task("search/a", [], log, fail=True, folder=tmp_path)]
    execute(again, jobs=1, progress=False, say=lambda s: None)
    assert again[0].state == "failed" and log.count("search/a") == 1


def test_a_study_with_a_failed_or_skipped_stage_exits_non_zero_and_names_them(tmp_path, monkeypatch, capsys):
    from nni_bio.cli import main
    from nni_bio.study import run as study_run

    log: list[str] = []
    tasks = [_task("search/a", [], log, fail=True, folder=tmp_path), _task("search/b", [], log, folder=tmp_path),
             _task("retrain/a/s0", ["search/a"], log, folder=tmp_path),
             _task("retrain/b/s0", ["search/b"], log, folder=tmp_path)]
    monkeypatch.setattr(study_run, "plan", lambda config, study_dir, say: tasks)

    def write_report(config, study_dir, report_dir, **kwargs):
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.md").write_text("**verdict**\n")
        return report_dir / "report.md"

    monkeypatch.setattr(study_run, "write_report", write_report)
    path = tmp_path / "s.yml"
    path.write_text(yaml.safe_dump(raw()))
    code = main(["study", str(path), "--output", str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 3 and "report: " in out
    assert "2 stage(s) did not finish: search/a: failed (search/a diverged); retrain/a/s0: skipped" in err
    assert "--retry-failed" in err
    for t in tasks:  # and a report rebuild of the same folder says the same
        t.state, t.reason = "pending", ""
    assert main(["study", str(path), "--output", str(tmp_path / "out"), "--report-only"]) == 3
    assert "search/a: failed (search/a diverged)" in capsys.readouterr().err
    tasks[0].run, tasks[2].done = (lambda slot: None), (lambda: True)
    tasks[0].done = lambda: True
    assert main(["study", str(path), "--output", str(tmp_path / "out"), "--no-progress", "--retry-failed"]) == 0


def _child_inside(import_line: str, context: str, folder: Path) -> subprocess.Popen:
    """A child process that enters ``with <context>:`` (``folder`` bound to the given folder) and sleeps there
    until it is killed; returned once it is inside."""
    script = (f"import sys, time, pathlib\n{import_line}\nfolder = pathlib.Path(sys.argv[1])\n"
              f"with {context}:\n    print('inside', flush=True)\n    time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "inside"
    return child


def test_wall_time_adds_up_across_a_kill_and_a_rerun(tmp_path):
    from nni_bio.study.run_log import RunLog, read_runs, wall_seconds

    child = _child_inside("from nni_bio.study.run_log import RunLog as Held",
                          "Held(folder, command='first', counted=True, heartbeat=0.05)", tmp_path)
    time.sleep(1.0)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed = read_runs(tmp_path)
    assert len(killed) == 1 and not killed[0]["finished"] and 0.9 <= killed[0]["end"] - killed[0]["start"] < 5
    with RunLog(tmp_path, command="second", counted=True):
        time.sleep(0.3)
    with RunLog(tmp_path, command="report", counted=False):
        time.sleep(0.2)
    runs = read_runs(tmp_path)
    assert [r["command"] for r in runs] == ["first", "second", "report"] and runs[1]["finished"]
    second = runs[1]["end"] - runs[1]["start"]
    assert second >= 0.3 and wall_seconds(tmp_path) == pytest.approx(killed[0]["end"] - killed[0]["start"] + second)


def test_a_port_taken_between_choosing_and_binding_it_is_retried(tmp_path, monkeypatch):
    """Both pick a port under one machine-wide lock, and a port taken meanwhile is retried."""
    from nni_bio.launch import experiment as ex
    from nni_bio.launch import preflight

    picked, created = [], []

    def create(path, port, listen=None, keep_open=None):
        created.append(port)
        if len(created) == 1:  # the first port was taken between choosing and binding it
            raise ex.PortTakenError(f"Port {port} is not idle")
        return subprocess.CompletedProcess([], 0, stdout='Run "nnictl stop abc" to stop', stderr="")

    monkeypatch.setattr(ex, "create", create)
    monkeypatch.setattr(preflight, "pick_port", lambda config, start=8080: picked.append(start) or start)
    monkeypatch.setattr(ex.RestClient, "experiment_id", lambda self: "abc")
    done, port, exp_id = ex.create_on_free_port("x.yml", {}, start=9000)
    assert created == [9000, 9001] and port == 9001 and exp_id == "abc"


def cut_down_digits(tmp_path: Path) -> Path:
    """examples/studies/digits.yml with three arms and seconds-long stages."""
    config = yaml.safe_load(DIGITS.read_text())
    config["arms"] = {"mixed": "bio", "usf": ["usf"], "backprop": ["backprop"]}
    config["space_args"] = {"width": 4}
    config["search"].update(strategy="random", max_trials=2, epochs=1, train={"train_limit": 200, "batch_size": 32},
                            repeats=1)
    config["search"].pop("tuner_args", None)
    config["retrain"].update(seeds=[0, 1], epochs=1)
    config["retrain"]["args"].update(train_limit=200)
    config["attack"].update(num_images=40, eps="0,0.1", pgd_steps=2, square_queries=5)
    config["landscape"] = {"networks": 2, "seed": 0}  # 2 random networks of mixed's space + its corner (usf's)
    config["search"]["proxy_check"] = 6  # mixed has 2 candidates (1 trial, 1 corner): 2 retrained, 4 "no candidate"
    path = tmp_path / "digits-cut.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_cut_down_digits_study_survives_kill_9_and_resumes(tmp_path):
    config, out, report = cut_down_digits(tmp_path), tmp_path / "study", tmp_path / "report"
    command = [sys.executable, "-m", "nni_bio.cli", "study", str(config), "--output", str(out), "--jobs", "2",
               "--report-dir", str(report), "--no-progress"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=tmp_path)
    deadline = time.time() + 600
    finished = lambda: sorted(out.glob("retrain/*/s*/result.json"))  # noqa: E731
    while time.time() < deadline and first.poll() is None:
        done = [p for p in finished() if json.loads(p.read_text()).get("status") == "complete"]
        if done:
            break
        time.sleep(0.5)
    assert first.poll() is None, f"the study ended before it could be killed:\n{first.stdout.read()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    searched = sorted(out.glob("search/*/search.json"))
    kept = {p: p.stat().st_mtime_ns for p in searched + done}
    assert done and searched  # at least one search and one retraining had finished

    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming:" in second.stdout and "already finished" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished work was not redone
    assert not any(f"done   search/{p.parent.name} " in second.stdout for p in searched)
    assert not any(f"done   retrain/{p.parent.parent.name}/{p.parent.name} " in second.stdout for p in done)
    text = (report / "report.md").read_text()
    assert "mixed" in text and ("No significant difference" in text or "is better" in text or "is worse" in text)
    rows = (report / "accuracy.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2
    for png in ("accuracy.png", "robustness.png", "architectures.png", "weights_per_rule.png", "learning_curves.png"):
        assert (report / png).stat().st_size > 1000, png
    assert sorted(p.name for p in (report / "genotypes").iterdir()) == ["backprop.json", "mixed.json", "usf.json"]
    trials = (report / "search_trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 2 + 2 + 2 and any(",corner,corner:usf," in row for row in trials)
    assert "`usf`: `nni-bio train --genotype genotypes/usf.json" in text and "## Learning curves" in text
    landscape = (report / "landscape.csv").read_text().splitlines()
    assert len(landscape) == 1 + 3 and landscape[-1].startswith("corner-usf,corner,usf,")
    assert "## Rule landscape (no search)" in text and "The best one-rule network (**usf**" in text
    assert len((report / "proxy.csv").read_text().splitlines()) == 1 + 2 and "Only 2 of the 2 candidates" in text
    robustness = (report / "robustness.csv").read_text()
    assert ",pgd,rule," in robustness and ",pgd,bp," in robustness and ",square,none," in robustness
    # the multi-rule arm's search reached its corner (the usf arm's network, in its own space) inside its budget
    mixed = json.loads((out / "search" / "mixed" / "search.json").read_text())
    usf = json.loads((out / "search" / "usf" / "genotype.json").read_text())["sample"]
    assert [c["arm"] for c in mixed["corners"]] == ["usf"] and len(mixed["trials"]) == 2 - 1
    assert mixed["corners"][0]["sample"]["conv2"] == usf["conv2"] and mixed["corners"][0]["sample"]["fc"] == usf["fc"]
    assert mixed["best_val_acc"] >= mixed["corners"][0]["val_acc"]
    assert "## What each search saw" in text and "| mixed | 0 / 0 | 1/1 | usf 0." in text
    # the wall time counts the killed run too (up to its last heartbeat) and the report lists both runs
    from nni_bio.study.run_log import read_runs, wall_seconds

    runs = read_runs(out)
    assert [r["finished"] for r in runs] == [False, True] and all(r["counted"] for r in runs)
    assert wall_seconds(out) == pytest.approx(sum(r["end"] - r["start"] for r in runs))
    assert runs[0]["end"] - runs[0]["start"] > 1.0 and "| 2 |" in text and "killed or interrupted" in text
    # the report can be rebuilt from the folder alone, and another config is refused
    again = subprocess.run(command + ["--report-only"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0
    assert [r["counted"] for r in read_runs(out)] == [True, True, False]
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 2"))
    refused = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "another study" in refused.stderr


def run_cut_down_study(config: dict, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """Run ``config`` as ``nni-bio study`` (2 jobs) and return its study folder and report folder; it must exit 0."""
    path, out, report = tmp_path / f"{name}.yml", tmp_path / "study", tmp_path / "report"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "nni_bio.cli", "study", str(path), "--output", str(out), "--jobs",
                           "2", "--report-dir", str(report), "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, report


@pytest.mark.slow
def test_cut_down_digits_study_with_successive_halving_and_repeated_searches(tmp_path):
    """The committed studies' protocol, cut down: successive halving (rungs of 1 and 2 epochs) with the corner at
    every rung, two seeded searches per searched arm whose winners are all retrained, the proxy checked per rung
    and the nested verdict."""
    config = yaml.safe_load(cut_down_digits(tmp_path).read_text())
    config.update(arms={"mixed": "bio", "usf": ["usf"]}, compare="mixed")
    config.pop("landscape")
    config["search"].update(strategy="halving", max_trials=8, epochs=2, repeats=2, tuner_args={"rungs": [1, 2]})
    config["attack"].update(attacks=["fgsm"], gradients=["bp"], num_images=20, eps="0")
    out, report = run_cut_down_study(config, tmp_path, "halving")
    for arm in ("mixed", "usf"):
        for k, folder in enumerate([out / "search" / arm, out / "search" / arm / "repeat1"]):
            search = json.loads((folder / "search.json").read_text())
            assert search["tuner_seed"] == k and search["trial_seed"] == k and search["rungs"] == [1, 2]
            assert len(search["trials"]) <= 8
            top = [t for t in search["trials"] if t["epochs"] == 2]
            assert search["best_val_acc"] == max(t["val_acc"] for t in top)  # chosen at the top rung only
            assert len(top) < len(search["trials"])  # rung 0 screened more networks than the top rung trained
    mixed = json.loads((out / "search" / "mixed" / "search.json").read_text())
    corner = mixed["corners"][0]
    assert corner["arm"] == "usf" and corner["in_search"]
    assert sorted(t["epochs"] for t in mixed["trials"] if t["sample"] == corner["sample"]) == [1, 2]  # every rung
    assert mixed["best_val_acc"] >= corner["val_acc"]
    repeat1 = json.loads((out / "search" / "mixed" / "repeat1" / "search.json").read_text())
    usf1 = json.loads((out / "search" / "usf" / "repeat1" / "genotype.json").read_text())["sample"]
    assert repeat1["corners"][0]["sample"]["conv2"] == usf1["conv2"]  # repeat k meets the usf arm's repeat k
    rows = (report / "accuracy.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # 2 arms x 2 searches x 2 seeds
    assert sorted(p.name for p in (report / "genotypes").iterdir()) == [
        "mixed-repeat1.json", "mixed.json", "usf-repeat1.json", "usf.json"]
    text = (report / "report.md").read_text()
    assert "| 2 searches x 2 seeds |" in text  # every search's winner, every seed
    # seconds-long trainings can give two arms the very same network and numbers: then there is no interval
    assert ("2 searches x 2 seeds vs 2 searches x 2 seeds" in text and "search-to-search and seed variance" in text) \
        or "with no spread there is no interval" in text
    assert "Successive halving" in text and "| mixed/repeat1 |" in text
    assert "| 1 epoch(s) | 5 |" in text and "| 2 epoch(s) |" in text and (report / "proxy.png").is_file()
    trials = (report / "search_trials.csv").read_text().splitlines()
    assert trials[0] == "arm,search_repeat,kind,id,status,epochs,val_acc,sample" and len(trials) == 1 + 4 * 8


@pytest.mark.slow
def test_two_real_studies_started_at_once_both_succeed(tmp_path):
    """Each study's search is an nnictl experiment whose port is chosen at start-up: two studies launched together
    used to both choose 8080, and one search failed with "Port 8080 is not idle"."""
    config = yaml.safe_load(cut_down_digits(tmp_path).read_text())
    config.update(arms={"mixed": "bio"}, compare="mixed")
    config["search"].update(max_trials=1)
    config["retrain"].update(seeds=[0])
    config["attack"].update(attacks=["fgsm"], gradients=["bp"], num_images=20, eps="0")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = []
    for name in ("one", "two"):
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump({**config, "name": name}))
        runs.append(subprocess.Popen([sys.executable, "-m", "nni_bio.cli", "study", str(path), "--output",
                                      str(tmp_path / name), "--no-progress"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path))
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n\n".join(outputs)
    ports = {json.loads((tmp_path / name / "search" / "mixed" / "experiment.json").read_text())["port"]
             for name in ("one", "two")}
    assert len(ports) == 2


def test_one_runner_per_study_folder_and_a_killed_runner_s_lock_is_taken_over(tmp_path):
    from nni_bio.study import run_study
    from nni_bio.study.folder_lock import StudyBusyError, StudyLock

    folder = tmp_path / "study"
    first = _child_inside("from nni_bio.study.folder_lock import StudyLock as Held",
                          "Held(folder, command='nni-bio study first.yml')", folder)
    try:
        config = parse_study(raw())
        for report_only in (False, True):  # a report rebuild waits its turn too
            with pytest.raises(StudyBusyError, match=rf"PID {first.pid}, started .*: nni-bio study first.yml\)"):
                run_study(config, folder, progress=False, report_only=report_only, say=lambda s: None)
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # the second runner changed nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    notes: list[str] = []
    with StudyLock(folder, command="second", say=notes.append):  # the kernel dropped the killed runner's lock
        pass
    assert len(notes) == 1 and f"PID {first.pid}" in notes[0] and "taking over" in notes[0]
    with StudyLock(folder, command="third", say=notes.append):  # a clean exit leaves nothing to take over
        pass
    assert len(notes) == 1


def _study_command(config: Path, out: Path, report: Path) -> list[str]:
    return [sys.executable, "-m", "nni_bio.cli", "study", str(config), "--output", str(out), "--jobs", "2",
            "--report-dir", str(report), "--no-progress"]


def _csv_without_timings(path: Path) -> list[list[str]]:
    import csv

    rows = list(csv.reader(path.open()))
    drop = {i for i, name in enumerate(rows[0]) if name.endswith("_seconds")}
    return [[cell for i, cell in enumerate(row) if i not in drop] for row in rows]


def _leftovers(root: Path) -> list[str]:
    """NNI experiments not stopped, and processes (managers, trials, stages) still working under ``root``."""
    import psutil

    from nni_bio.launch.experiment import experiments_in

    found = [f"experiment {exp_id} ({record.get('status')})" for nni in root.glob("*/search/*/nni")
             for exp_id, record in experiments_in(nni).items()]
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.Error, TypeError):
            continue
        if proc.info["pid"] != me and str(root) in text:
            found.append(f"process {proc.info['pid']}: {text[:200]}")
    return found


@pytest.mark.slow
def test_a_study_killed_at_seeded_random_moments_ends_exactly_like_an_uninterrupted_one(tmp_path):
    """SIGKILL at 5 moments (seeded), one aimed at each part of a study: start-up (loading, claiming the folder,
    starting NNI's manager), a search, a retraining, an attack, the report. After each kill the same command runs
    again; the last run's CSVs equal an uninterrupted run's, and no experiment or process is left behind."""
    import random

    rng = random.Random(20261206)
    config = cut_down_digits(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    straight = subprocess.run(_study_command(config, tmp_path / "straight", tmp_path / "straight-report"),
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    out, report = tmp_path / "killed", tmp_path / "killed-report"
    attacks = len(load_study(config).arms) * len(load_study(config).retrain.seeds)
    aims = [("start-up", lambda: True, (0.5, 4.0)),
            ("search", lambda: any(out.glob("search/*/experiment.json")), (0.0, 2.0)),
            ("retraining", lambda: any(out.glob("retrain/*/s*.log")), (0.0, 1.5)),
            ("attack", lambda: any(out.glob("attack/*/s*.log")), (0.0, 1.5)),
            ("report", lambda: len(list(out.glob("attack/*/s*/attack.json"))) >= attacks, (0.0, 1.0))]
    landed = []
    for aim, reached, (low, high) in aims:
        run = subprocess.Popen(_study_command(config, out, report), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        deadline = time.time() + 600
        while run.poll() is None and not reached() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(rng.uniform(low, high))
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            landed.append(aim)
        run.wait()
    assert len(landed) >= 4, f"only these kills landed before the study ended: {landed}"
    final = subprocess.run(_study_command(config, out, report), capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=900)
    assert final.returncode == 0, final.stdout + final.stderr
    for name in ("accuracy.csv", "robustness.csv"):
        assert _csv_without_timings(report / name) == _csv_without_timings(tmp_path / "straight-report" / name), name
    deadline = time.time() + 60  # a stopped manager takes a moment to exit
    while (left := _leftovers(tmp_path)) and time.time() < deadline:
        time.sleep(1)
    assert not left, left


@pytest.mark.parametrize("module", ["nni_bio.study.statistics", "nni_bio.study.corners", "nni_bio.study.run_log",
                                    "nni_bio.study.folder_lock", "nni_bio.core.safe_json", "nni_bio.core.errors", "nni_bio.core.swap"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module), raise_on_error=False).failed == 0


def test_a_repeated_search_runs_its_trials_and_its_tuner_with_seeds_of_its_own(tmp_path):
    """Repeat k's NNI experiment: the tuner seeded with seed + k and the trial command with --seed + k (its
    weights, batches and split), both recorded where the report reads them."""
    from nni_bio.study import stages

    config = parse_study(raw(seed=3, search={"strategy": "halving", "max_trials": 9, "epochs": 3, "repeats": 3,
                                             "tuner_args": {"rungs": [1, 3]}, "train": {"seed": 10}}))
    for k in range(3):
        folder = tmp_path / f"r{k}"
        folder.mkdir()
        experiment = stages.experiment_yaml(config, "mixed", folder, stages.Slot(), 9, k, [])
        (folder / "experiment.yml").write_text(yaml.safe_dump(experiment))
        assert experiment["tuner"]["classArgs"]["seed"] == 3 + k
        assert stages.trial_seed(folder) == 10 + k and f"--seed {10 + k}" in experiment["trialCommand"]


def test_parallel_proxy_tasks_choose_the_candidates_once(tmp_path):
    """The proxy tasks run in parallel threads; they used to write candidates.json at the same time and one of
    them failed with 'cannot write (No such file or directory)'."""
    from concurrent.futures import ThreadPoolExecutor

    from nni_bio.study import stages

    config = parse_study(raw(search={"strategy": "random", "proxy_check": 6}))
    trials = [{"id": f"t{i}", "status": "SUCCEEDED", "val_acc": 0.1 * i, "sample": {"fc": f"r{i}"}} for i in range(8)]
    (tmp_path / "search" / "mixed").mkdir(parents=True)
    (tmp_path / "search" / "mixed" / "search.json").write_text(json.dumps({"trials": trials}))
    with ThreadPoolExecutor(8) as pool:
        chosen = list(pool.map(lambda _: stages.proxy_candidates(config, tmp_path), range(32)))
    assert all(c == chosen[0] for c in chosen) and len(chosen[0]) == 6


def test_a_timm_model_is_a_fixed_skeleton():
    pytest.importorskip("timm")
    raw = yaml.safe_load(DIGITS.read_text())
    raw.update(space="timm:resnet10t", space_args={"granularity": "stage"})
    config = parse_study(raw, "timm.yml")
    assert config.space == "timm_rules" and config.space_args == {"granularity": "stage", "model": "resnet10t"}
    with pytest.raises(StudyConfigError, match="disagree"):
        parse_study({**raw, "space_args": {"model": "resnet18"}}, "timm.yml")
    with pytest.raises(StudyConfigError, match="needs a model name"):
        parse_study({**raw, "space": "timm:"}, "timm.yml")


@pytest.mark.slow
def test_cut_down_study_on_a_timm_skeleton(tmp_path):
    """`space: timm:resnet10t`: a rule per stage of timm's ResNet-10-T, searched with its corners, retrained,
    attacked and reported like any space."""
    pytest.importorskip("timm")
    config = yaml.safe_load(cut_down_digits(tmp_path).read_text())
    config.update(space="timm:resnet10t", space_args={}, arms={"mixed": ["fa", "usf"], "fa": ["fa"], "usf": ["usf"]})
    config["retrain"].update(seeds=[0])
    config["attack"].update(attacks=["fgsm"], gradients=["bp"], num_images=20, eps="0")
    config["landscape"] = {"networks": 2, "seed": 0}
    out, report = run_cut_down_study(config, tmp_path, "timm")
    mixed = json.loads((out / "search" / "mixed" / "search.json").read_text())
    assert sorted(c["arm"] for c in mixed["corners"]) == ["fa", "usf"]
    assert set(mixed["trials"][0]["sample"]) == {"conv1", "layer1", "layer2", "layer3", "layer4", "fc"}  # per stage
    genotype = json.loads((report / "genotypes" / "mixed.json").read_text())
    assert genotype["space"] == "timm_rules" and genotype["args"]["model"] == "resnet10t"
    text = (report / "report.md").read_text()
    assert "timm_rules" in text and "resnet10t" in text
