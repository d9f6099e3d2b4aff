"""The trial runtime (nni_bio.train.trial_runtime): one way to report, shared by both trial entry points and
the Python multi-trial route."""

import doctest
import json
from pathlib import Path

import pytest

import nni_bio.train.trial_runtime as runtime


def test_docstring_example_runs(monkeypatch):
    import nni

    for name in ("report_intermediate_result", "report_final_result"):  # outside NNI they log to stdout
        monkeypatch.setattr(nni, name, lambda metric: None)
    assert doctest.testmod(runtime, raise_on_error=False).failed == 0


def test_output_folder_is_the_argument_then_nni_then_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    assert runtime.trial_output(None, "runs/x") == Path("runs/x") and (tmp_path / "runs/x").is_dir()
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "nni"))
    assert runtime.trial_output(None, "runs/x") == tmp_path / "nni"
    assert runtime.trial_output(tmp_path / "given", "runs/x") == tmp_path / "given"
    assert (tmp_path / "nni").is_dir() and (tmp_path / "given").is_dir()


def test_reporter_sends_every_metric_to_nni_and_all_but_default_to_tensorboard(tmp_path, monkeypatch):
    import nni

    sent = []
    monkeypatch.setattr(nni, "report_intermediate_result", sent.append)
    monkeypatch.setattr(nni, "report_final_result", lambda m: sent.append(("final", m)))
    with runtime.TrialReporter(tmp_path, tags={"val_acc": "val/acc"}) as reporter:
        scalars = []
        monkeypatch.setattr(type(reporter.tensorboard), "add_scalar", lambda self, *a: scalars.append(a))
        reporter.epoch({"default": 0.5, "val_acc": 0.5, "loss": 1.0}, 3)
        reporter.genotype({"space": "tiny"})
        reporter.final({"default": 0.5}, {"history": [1, 2]})
    assert sent == [{"default": 0.5, "val_acc": 0.5, "loss": 1.0}, ("final", {"default": 0.5})]
    assert scalars == [("val/acc", 0.5, 3), ("loss", 1.0, 3)]
    assert json.loads((tmp_path / "genotype.json").read_text()) == {"space": "tiny"}
    assert json.loads((tmp_path / "result.json").read_text()) == {"default": 0.5, "history": [1, 2]}


def test_a_diverging_trial_exits_with_its_own_status(capsys):
    from nni_bio.train.training import DivergenceError

    def diverge(_args):
        raise DivergenceError("loss is nan at epoch 1")

    assert runtime.run_as_trial(diverge, None, "test trial") == runtime.EXIT_DIVERGED
    assert "nni-bio test trial FAILED: loss is nan" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["nni_bio.search_spaces", "nni_bio.strategies.oneshot"])
def test_package_docstring_examples_run(module):
    import importlib

    assert doctest.testmod(importlib.import_module(module), raise_on_error=False).failed == 0


def test_a_trial_trains_with_or_without_augmentation_as_asked():
    """nni-bio study's search trials use the retraining's augmentation (python -m nni_bio.trial --no-augment)."""
    import torch

    from nni_bio.trial import parse_args

    plain, _ = runtime.load_splits("digits", None, 0, 8, augment=False, cutout=2)
    assert all(torch.equal(plain[i][0], plain[i][0]) for i in range(8))  # deterministic: nothing random applied
    augmented, _ = runtime.load_splits("digits", None, 0, 8, augment=True, cutout=2)  # digits: Cutout is its only one
    torch.manual_seed(0)
    assert any(not torch.equal(augmented[i][0], augmented[i][0]) for i in range(8) for _ in range(5))
    args = parse_args(["--space", "tiny", "--no-augment", "--cutout", "2"])
    assert args.no_augment and args.cutout == 2
