"""`nni-bio study`: the study file, the folder's ownership, the statistics, the scheduler, and a real
cut-down digits study killed with SIGKILL and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_shipped_study_files_are_valid():
    for path in sorted((ROOT / "examples" / "studies").glob("*.yml")):
        config = load_study(path)
        assert config.compare in config.arms, path
        assert len(config.arms["mixed"]) >= 2 and "backprop" not in config.arms["mixed"]
        assert len(config.retrain.seeds) >= 3


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


def test_statistics():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    same = compare([0.9, 0.91, 0.92], [0.9, 0.91, 0.92])
    assert same.difference == 0 and not same.significant
    far = compare([0.95, 0.951, 0.952], [0.80, 0.801, 0.802])
    assert far.significant and far.low > 0.14 and far.p_value < 1e-4


def test_verdict_says_what_the_numbers_say():
    config = parse_study(raw(arms={"mixed": "bio", "usf": ["usf"], "fa": ["fa"], "backprop": ["backprop"]}))
    acc = {"mixed": [0.80, 0.801, 0.802], "usf": [0.90, 0.901, 0.902], "fa": [0.7, 0.7, 0.71], "backprop": [0.99] * 3}
    assert "mixed is worse than the best single bio rule (usf)" in verdict(config, acc)
    acc["mixed"] = [0.90, 0.905, 0.899]
    assert "No significant difference between mixed and the best single bio rule (usf)" in verdict(config, acc)
    acc["mixed"] = []
    assert verdict(config, acc).startswith("No verdict")


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


def cut_down_digits(tmp_path: Path) -> Path:
    """examples/studies/digits.yml with three arms and seconds-long stages."""
    config = yaml.safe_load(DIGITS.read_text())
    config["arms"] = {"mixed": "bio", "usf": ["usf"], "backprop": ["backprop"]}
    config["space_args"] = {"width": 4}
    config["search"].update(strategy="random", max_trials=2, epochs=1, train={"train_limit": 200, "batch_size": 32})
    config["search"].pop("tuner_args", None)
    config["retrain"].update(seeds=[0, 1], epochs=1)
    config["retrain"]["args"].update(train_limit=200)
    config["attack"].update(num_images=40, eps="0,0.1", pgd_steps=2, square_queries=5)
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
    for png in ("accuracy.png", "robustness.png", "architectures.png", "weights_per_rule.png"):
        assert (report / png).stat().st_size > 1000, png
    robustness = (report / "robustness.csv").read_text()
    assert ",pgd,rule," in robustness and ",pgd,bp," in robustness and ",square,none," in robustness
    # the report can be rebuilt from the folder alone, and another config is refused
    again = subprocess.run(command + ["--report-only"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 2"))
    refused = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "another study" in refused.stderr
