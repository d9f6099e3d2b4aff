"""Final training: accuracy, bit-exact resume, drop-path schedule, AMP, DDP smoke, angle monitors."""

import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.distributed as dist
from torch import nn

import nni_bio
from nni_bio.data import get_dataset
from nni_bio.nas.fixed_models import build_fixed_model
from nni_bio.train.final_training import load_run, run_final_training
from nni_bio.train.model_spec import fixed_spec
from nni_bio.train.monitor import Diagnostics, feedback_angles, gradient_angles
from nni_bio.train.training import DivergenceError, EpochMetrics, TrainConfig, train

DIGITS = dict(in_channels=1, num_classes=10, image_size=8)

# Two float32 gradients that agree up to rounding differ by about K * eps32 relative to their size,
# where K is the number of products summed into one entry (at most 16 images x 64 positions here),
# so the angle between them can reach about K * eps32 radians: 1024 * 1.2e-7 rad ~ 0.007 degrees.
# (The angle is taken in float64 from the float32 tensors; an arccos of a float32 cosine would
# instead be off by ~sqrt(2 * eps32) rad ~ 0.03 degrees near 0.) The rule checks below separate
# angles > 1 degree from ones that are zero up to this rounding.
FLOAT32_ANGLE_TOL = math.degrees(16 * 64 * torch.finfo(torch.float32).eps)


def quiet(_line):
    pass


def test_tiny_usf_cnn_reaches_90_percent_on_digits_and_writes_its_folder(tmp_path):
    summary = run_final_training(fixed_spec("tiny-cnn", rule="usf"), dataset="digits", output=tmp_path,
                                 config=TrainConfig(epochs=4, lr=0.05), diagnostics_every=2, log=quiet)
    assert summary["status"] == "complete"
    assert summary["final"]["test_acc"] >= 0.90  # measured 0.955 (397 test images)
    assert summary["final"]["epoch"] == 4 and summary["final"]["test_images"] == 397
    assert 1 <= summary["best_val"]["epoch"] <= 4
    assert set(summary["rules"].values()) == {"usf"}
    assert "grad_angle/mean" in summary["history"][1]["extra"] and not summary["history"][0]["extra"]
    assert json.loads((tmp_path / "result.json").read_text())["final"] == summary["final"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    model, setup = load_run(tmp_path)
    assert setup["weights"].endswith("model.pt") and nni_bio.rule_map(model) == summary["rules"]


def _mixed_model():
    torch.manual_seed(0)
    return build_fixed_model("tiny-cnn", **DIGITS, rule="usf", rule_map={"3": "brsf", "8": "fa"})


class Killed(Exception):
    pass


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    train_set, val_set = get_dataset("digits", "train", cutout=3), get_dataset("digits", "val")  # random Cutout
    config = TrainConfig(epochs=3, seed=5, lr=0.05)
    diagnose = Diagnostics.from_dataset(val_set, 32)
    reference = _mixed_model()
    expected = train(reference, train_set, val_set, config, diagnose=diagnose)

    def kill_in_epoch_3(step, loss):  # dies mid-epoch: the epoch-2 checkpoint is the latest
        if step == 2 * 15 + 7:
            raise Killed

    with pytest.raises(Killed):
        train(_mixed_model(), train_set, val_set, config, checkpoint=tmp_path / "c.pt", on_step=kill_in_epoch_3,
              diagnose=diagnose)
    torch.manual_seed(1234), torch.rand(7)  # a fresh process starts from other random states
    resumed = _mixed_model()
    result = train(resumed, train_set, val_set, config, checkpoint=tmp_path / "c.pt", resume=True, diagnose=diagnose)
    assert result.resumed_from == 2
    ref_state, state = reference.state_dict(), resumed.state_dict()
    assert int(state["3.feedback.step"]) == 3 * 15  # brSF counter: one redraw per training step
    for key, value in ref_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[key]), key

    def metrics(history):
        return [{k: v for k, v in asdict(m).items() if k != "seconds"} for m in history]

    assert metrics(result.history) == metrics(expected.history)


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path):
    train_set, val_set = get_dataset("digits", "train"), get_dataset("digits", "val")
    train(_mixed_model(), train_set, val_set, TrainConfig(epochs=1), checkpoint=tmp_path / "c.pt")
    with pytest.raises(nni_bio.NniBioError, match="lr"):
        train(_mixed_model(), train_set, val_set, TrainConfig(epochs=1, lr=0.1), checkpoint=tmp_path / "c.pt",
              resume=True)


def test_diagnostics_never_change_the_trajectory():
    train_set, val_set = get_dataset("digits", "train", cutout=2), get_dataset("digits", "val")
    config = TrainConfig(epochs=1)
    a, b = _mixed_model(), _mixed_model()
    train(a, train_set, val_set, config)
    train(b, train_set, val_set, config, diagnose=Diagnostics.from_dataset(val_set, 32))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())
               if isinstance(x, torch.Tensor))


def test_angles_behave_as_the_rules_say():
    torch.manual_seed(0)
    net = build_fixed_model("tiny-cnn", **DIGITS, rule_map={"0": "fa", "3": "usf", "8": "backprop"})
    angles = feedback_angles(net)
    assert set(angles) == {"0", "3"}  # backprop has no feedback tensor
    assert 80 < angles["0"] < 100  # fresh random B: about orthogonal to W
    assert angles["3"] < 60  # sign-concordant
    x, y = get_dataset("digits", "val")[0][0].expand(16, 1, 8, 8), torch.arange(16) % 10
    grads = gradient_angles(net, x, y)
    assert grads["8"] == pytest.approx(0, abs=FLOAT32_ANGLE_TOL)  # top layer: exact error, exact local gradient
    assert grads["0"] > 1  # below a sign-symmetric layer the error is approximate
    bp = gradient_angles(nni_bio.swap_rule(net, "backprop"), x, y)
    assert max(bp.values()) == pytest.approx(0, abs=FLOAT32_ANGLE_TOL)


class DropPathNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop_path_prob = 0.0
        self.body = nn.Sequential(nn.Flatten(), nni_bio.get_rule("usf").linear(64, 10))

    def forward(self, x):
        return self.body(x)


def test_drop_path_rises_linearly_per_epoch():
    result = train(DropPathNet(), get_dataset("digits", "train"), get_dataset("digits", "val"),
                   TrainConfig(epochs=4, drop_path_prob=0.2))
    assert [m.extra["drop_path_prob"] for m in result.history] == pytest.approx([0.0, 0.05, 0.1, 0.15])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(amp):
    result = train(_mixed_model(), get_dataset("digits", "train"), get_dataset("digits", "val"),
                   TrainConfig(epochs=2, amp=amp))
    assert result.final.val_acc > 0.5


def test_ddp_path_runs_as_a_one_process_gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        result = train(_mixed_model(), get_dataset("digits", "train"), get_dataset("digits", "val"),
                       TrainConfig(epochs=2), checkpoint=tmp_path / "c.pt")
    finally:
        dist.destroy_process_group()
    assert result.final.val_acc > 0.5 and (tmp_path / "c.pt").is_file()


def test_a_diverged_run_says_so_in_result_json(tmp_path):
    with pytest.raises(DivergenceError):
        run_final_training(fixed_spec("tiny-cnn", rule="usf"), dataset="digits", output=tmp_path, log=quiet,
                           config=TrainConfig(epochs=2, lr=1e30, grad_clip=0), diagnostics_every=0)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "diverged" and "loss is nan" in result["error"].lower()


def test_a_run_diverging_after_an_epoch_keeps_its_history(tmp_path, monkeypatch):
    import nni_bio.train.final_training as final_training

    def one_epoch_then_nan(model, train_set, val_set, config, *, on_epoch_end, **kwargs):
        on_epoch_end(EpochMetrics(1, 0.5, 0.8, 0.6, 0.75, 0.05, 1.0))
        raise DivergenceError("training diverged at epoch 2, step 30: loss is nan. Lower the learning rate")

    monkeypatch.setattr(final_training, "train", one_epoch_then_nan)
    with pytest.raises(DivergenceError):
        run_final_training(fixed_spec("tiny-cnn"), dataset="digits", output=tmp_path, config=TrainConfig(epochs=3),
                           diagnostics_every=0, log=quiet)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "diverged"  # before: "running", as written after epoch 1
    assert result["error"].startswith("DivergenceError: training diverged at epoch 2")
    assert [m["epoch"] for m in result["history"]] == [1]


def test_bad_arguments_leave_no_output_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(nni_bio.NniBioError, match="unknown learning rule"):
        run_final_training(fixed_spec("tiny-cnn", rule="nope"), dataset="digits", output=out,
                           config=TrainConfig(epochs=1), log=quiet)
    with pytest.raises(nni_bio.NniBioError, match="not found"):
        run_final_training(fixed_spec("tiny-cnn"), dataset="cifar10", data_dir=str(tmp_path / "none"), output=out,
                           config=TrainConfig(epochs=1), log=quiet)
    assert not out.exists()


def test_weights_per_rule_do_not_count_kps_feedback_matrix():
    import nni_bio
    from nni_bio.train.final_training import weight_counts

    model = torch.nn.Sequential(nni_bio.get_rule("kp").linear(4, 3), torch.nn.BatchNorm1d(3))
    assert weight_counts(model) == {"kp": 4 * 3 + 3, "other": 2 * 3}
