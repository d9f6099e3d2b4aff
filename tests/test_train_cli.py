"""``nni-bio train`` and ``nni-bio attack`` end to end: kill -9 + --resume, genotypes, attack folders."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nni_bio.cli import main
from nni_bio.train.checkpoint import load_checkpoint

EPOCHS = 4


def train_args(output, *extra):
    return ["train", "--model", "tiny-cnn", "--rule", "usf", "--rule-map", '{"3": "brsf"}', "--dataset", "digits",
            "--cutout", "3", "--epochs", str(EPOCHS), "--lr", "0.05", "--seed", "2", "--diagnostics-batch", "32",
            "--no-progress", "--output", str(output), *extra]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "straight"
    assert main(train_args(folder)) == 0
    return folder


def _history(folder):
    history = json.loads((folder / "result.json").read_text())["history"]
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def test_kill_9_then_resume_ends_exactly_like_an_uninterrupted_run(straight_run, tmp_path):
    folder = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same threads as this process
    proc = subprocess.Popen([sys.executable, "-m", "nni_bio.cli", *train_args(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint, deadline = folder / "checkpoint.pt", time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= killed_after < EPOCHS

    assert main(train_args(folder)) == 2  # an existing run is never overwritten silently
    assert main(train_args(folder, "--resume")) == 0
    result = json.loads((folder / "result.json").read_text())
    assert result["resumed_from"] == killed_after and result["status"] == "complete"
    assert _history(folder) == _history(straight_run)
    expected, got = load_checkpoint(straight_run / "model.pt")["model"], load_checkpoint(folder / "model.pt")["model"]
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, got[key]), key
    assert result["final"] == json.loads((straight_run / "result.json").read_text())["final"]


def test_train_reports_final_test_and_best_val(straight_run):
    result = json.loads((straight_run / "result.json").read_text())
    assert result["rules"] == {"0": "usf", "3": "brsf", "8": "usf"}
    assert result["final"]["epoch"] == EPOCHS and result["final"]["test_acc"] > 0.8
    assert result["best_val"]["val_acc"] == max(m["val_acc"] for m in result["history"])
    assert "feedback_angle/3" in result["history"][-1]["extra"]


def test_attack_cli_writes_both_gradient_views_and_merges_later_runs(straight_run, capsys):
    assert main(["attack", str(straight_run), "--attacks", "fgsm,pgd", "--eps", "0,0.1", "--num-images", "100",
                 "--pgd-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "| FGSM | rule (own backward) | 100 |" in out and "| PGD-3 | bp (exact-gradient view) | 100 |" in out
    report = json.loads((straight_run / "attack.json").read_text())
    assert report["num_images"] == 100 and len(report["rows"]) == 8
    assert {r["clean_acc"] for r in report["rows"]} == {report["rows"][0]["clean_acc"]}
    assert main(["attack", str(straight_run), "--attacks", "fgsm", "--gradient", "bp", "--eps", "0.2",
                 "--num-images", "100"]) == 0
    assert len(json.loads((straight_run / "attack.json").read_text())["rows"]) == 9
    assert (straight_run / "attack.md").read_text().count("eps 0.2") == 1


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--model", "tiny-cnn", "--rule-map", '{"conv9": "fa"}', "--output", str(tmp_path)]) == 2
    assert "match no layer" in capsys.readouterr().err
    assert main(["train", "--model", "resnet21", "--output", str(tmp_path)]) == 2
    assert "6n+2" in capsys.readouterr().err
    assert main(["train", "--model", "lenet", "--rule", "fa", "--print-layers"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["0", "fa"]


def test_darts_genotype_with_auxiliary_head_and_scheduled_drop_path(tmp_path):
    from nni_bio.search_spaces.darts_net import BIODARTS

    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(BIODARTS))
    out = tmp_path / "darts"
    assert main(["train", "--genotype", str(genotype), "--width", "4", "--cells", "3", "--auxiliary",
                 "--drop-path", "0.2", "--dataset", "digits", "--epochs", "2", "--train-limit", "128",
                 "--diagnostics-every", "0", "--no-progress", "--output", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [m["extra"]["drop_path_prob"] for m in result["history"]] == [0.0, 0.1]
    assert any(name.startswith("auxiliary_head") for name in result["rules"])
    assert result["model"]["options"] == {"width": 4, "cells": 3, "auxiliary": True}
    assert main(["attack", "--genotype", str(genotype), "--weights", str(out / "model.pt"), "--dataset", "digits",
                 "--width", "4", "--cells", "3", "--auxiliary", "--attacks", "fgsm", "--eps", "0", "--num-images", "20",
                 "--output", str(tmp_path / "attack")]) == 0
    assert (tmp_path / "attack" / "attack.md").is_file()


def test_bad_arguments_fail_before_the_run_folder_exists(tmp_path, capsys):
    out = tmp_path / "runs" / "typo"
    assert main(["train", "--model", "tiny-cnn", "--rule", "nope", "--no-progress", "--output", str(out)]) == 2
    assert "unknown learning rule 'nope'" in capsys.readouterr().err
    assert main(["train", "--model", "tiny-cnn", "--dataset", "cifar10", "--data-dir", str(tmp_path / "no-data"),
                 "--no-progress", "--output", str(out)]) == 2
    assert "data set 'cifar10' not found" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()  # before: runs/typo/spec.json stayed behind


def test_genotype_rule_map_pattern_that_matches_nothing_is_an_error(tmp_path, capsys):
    from nni_bio.search_spaces.darts_net import BIODARTS

    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(BIODARTS))
    base = ["train", "--genotype", str(genotype), "--width", "4", "--cells", "3", "--dataset", "digits",
            "--print-layers"]
    assert main([*base, "--rule-map", '{"cells.0.*": "fa", "cell.0.*": "usf"}']) == 2  # "cell" is a typo
    err = capsys.readouterr().err
    assert "rule-map patterns ['cell.0.*'] match no layer" in err and "cells.0." in err
    assert main([*base, "--rule-map", '{"cells.0.*": "fa"}']) == 0
    rules = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert {r for n, r in rules.items() if n.startswith("cells.0.")} == {"fa"}


def _tiny_genotype(tmp_path, **replace):
    from nni_bio.search_spaces import space_json
    from nni_bio.search_spaces import space_arguments, space_class

    space_args = {"width": 4, "rules": ["usf", "fa"]}
    space = space_json("tiny", "digits", space_args, "choice")
    sample = {**{label: v["_value"][0] for label, v in space.items()}, **replace}
    genotype = space_class("tiny").export_genotype(sample, space_arguments(space_class("tiny"), space_args, "digits"))
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(genotype))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_genotype_with_an_op_its_space_lacks_gets_one_line_with_the_slot_s_candidates(tmp_path, capsys):
    genotype = _tiny_genotype(tmp_path, conv2="conv_9x9@usf")
    out = tmp_path / "out"
    assert main(["train", "--genotype", str(genotype), "--epochs", "1", "--no-progress", "--output", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(genotype) in err and "slot 'conv2': 'conv_9x9@usf' is not offered" in err
    assert "conv_3x3@usf, sep_conv_3x3@fa" in err and not out.exists()


def test_an_unwritable_output_folder_gets_one_line(tmp_path, capsys, read_only_dir):
    genotype = _tiny_genotype(tmp_path)
    out = read_only_dir / "run"
    assert main(["train", "--genotype", str(genotype), "--epochs", "1", "--no-progress", "--output", str(out)]) == 1
    err = _one_line_error(capsys)
    assert f"{out}: cannot write (Read-only file system)" in err and "choose another --output" in err


def test_a_checkpoint_over_the_file_size_limit_gets_one_line_and_leaves_no_partial_file(tmp_path):
    import resource

    genotype = _tiny_genotype(tmp_path)
    out = tmp_path / "out"
    limit = 30 * 1024  # spec.json and result.json fit; the ~40 kB checkpoint does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "nni_bio.cli", "train", "--genotype", str(genotype), "--epochs", "2",
               "--train-limit", "100", "--no-progress", "--output", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=small_files, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{out / 'checkpoint.pt'}: cannot write (File too large)" in done.stderr and "ulimit -f" in done.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "result.json").read_text())["status"] == "complete"
