"""What to watch while a rule-trained network learns: alignment angles and TensorBoard scalars.

Two angles per rule layer, in degrees (``learning-rules.md`` §4):

- **feedback angle** (:func:`feedback_angles`): between W and the feedback tensor B the layer
  really uses to send the error down (``layer.feedback.feedback_weight(W, training=False)``),
  ``arccos(<vec W, vec B> / (|W| |B|))``. Defined for rules of family ``feedback`` (FA, uSF,
  frSF, brSF, KP, ...): B has W's shape. 0 for exact backprop, about 90 for a fresh random B.
- **gradient angle** (:func:`gradient_angles`): between the weight gradient the rule produces
  and the true gradient, on one batch. A layer's *local* weight gradient is exact under every
  feedback rule; what differs is the error arriving from the layers above. So both gradients are
  full-network gradients of the same loss on the same batch: one through a copy of the model as
  it is, one through a copy switched to exact backprop (:func:`nni_bio.swap_rule`, same weights,
  identical forward). The top layer's angle is 0 unless its own rule replaces the local update.

:class:`Diagnostics` computes both once per epoch on a fixed batch (the training loop runs it with
the random state forked, so it never changes the trajectory); :class:`TensorBoardLogger` writes
losses, accuracies, the learning rate and every diagnostic as TensorBoard scalars.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from nni_bio.core._registry import get_rule
from nni_bio.core.error_bus import main_output
from nni_bio.core.layers import RuleLayer
from nni_bio.core.swap import swap_rule

if TYPE_CHECKING:
    from nni_bio.train.training import EpochMetrics


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """Angle between two tensors seen as vectors, in degrees (NaN if either is zero)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    norm = a.norm() * b.norm()
    if norm == 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b / norm)))))


def feedback_angles(model: nn.Module) -> dict[str, float]:
    """Layer name -> angle between W and the effective feedback B, for family-``feedback`` rules.

    Reads B as an evaluation forward would (``training=False``): brSF shows its current draw and
    its step counter does not move.
    """
    angles = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not isinstance(layer, RuleLayer) or get_rule(layer.rule_name).info.family != "feedback":
                continue
            B = layer.feedback.feedback_weight(layer.weight, False)
            if isinstance(B, Tensor) and B.shape == layer.weight.shape:
                angles[name] = angle_degrees(layer.weight, B)
    return angles


def _weight_grads(view: nn.Module, x: Tensor, y: Tensor, seed: int) -> dict[str, Tensor | None]:
    view.train()
    view.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same drop-path masks in both views
    F.cross_entropy(main_output(view(x)), y).backward()
    return {name: m.weight.grad for name, m in view.named_modules() if isinstance(m, RuleLayer)}


def gradient_angles(model: nn.Module, x: Tensor, y: Tensor, *, seed: int = 0) -> dict[str, float]:
    """Layer name -> angle between the rule's weight gradient and the exact-backprop one on (x, y).

    Works on two deep copies in training mode (``model`` and its BatchNorm statistics, brSF
    counters and random state are left as they were). Loss: cross-entropy of the main output.
    """
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        rule_view = copy.deepcopy(model)
        bp_view = swap_rule(copy.deepcopy(model), "backprop")
        rule_grads = _weight_grads(rule_view, x, y, seed)
        bp_grads = _weight_grads(bp_view, x, y, seed)
    return {name: angle_degrees(g, bp_grads[name]) for name, g in rule_grads.items()
            if g is not None and bp_grads.get(name) is not None}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class Diagnostics:
    """Per-epoch angles on a fixed batch; pass it as ``train(..., diagnose=Diagnostics(...))``.

    Returns ``feedback_angle/<layer>``, ``grad_angle/<layer>`` and their means over layers
    (``feedback_angle/mean``, ``grad_angle/mean``).

    Args:
        x, y: the fixed batch (e.g. :meth:`from_dataset` on the validation set: no augmentation,
            no random draw).
        every: compute every ``every`` epochs (and always at the last one asked for).
    """

    def __init__(self, x: Tensor, y: Tensor, *, every: int = 1, gradient: bool = True):
        self.x, self.y, self.every, self.gradient = x, y, max(1, int(every)), gradient

    @classmethod
    def from_dataset(cls, dataset: Dataset, size: int = 128, **kwargs) -> Diagnostics:
        items = [dataset[i] for i in range(min(size, len(dataset)))]
        return cls(torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items]), **kwargs)

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        if epoch % self.every:
            return {}
        out: dict[str, float] = {}
        fb = feedback_angles(model)
        if fb:
            out.update({f"feedback_angle/{k}": v for k, v in fb.items()})
            out["feedback_angle/mean"] = _mean(list(fb.values()))
        if self.gradient:
            device = next(model.parameters()).device
            grad = gradient_angles(model, self.x.to(device), self.y.to(device), seed=epoch)
            if grad:
                out.update({f"grad_angle/{k}": v for k, v in grad.items()})
                out["grad_angle/mean"] = _mean(list(grad.values()))
        return out


class TensorBoardLogger:
    """Writes one epoch's metrics as TensorBoard scalars (x axis: epoch); use as ``on_epoch_end``.

    ``purge_step`` (the first epoch of a resumed run) drops events a killed run wrote after its
    last checkpoint, so a resumed run's curves have no duplicates.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def __call__(self, m: EpochMetrics) -> None:
        w = self.writer
        w.add_scalar("loss/train", m.train_loss, m.epoch)
        w.add_scalar("accuracy/train", m.train_acc, m.epoch)
        if m.val_acc is not None:  # None: trained on train+val, no validation set
            w.add_scalar("loss/val", m.val_loss, m.epoch)
            w.add_scalar("accuracy/val", m.val_acc, m.epoch)
        w.add_scalar("lr", m.lr, m.epoch)
        w.add_scalar("seconds_per_epoch", m.seconds, m.epoch)
        for key, value in m.extra.items():
            w.add_scalar(key, value, m.epoch)
        w.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["Diagnostics", "TensorBoardLogger", "angle_degrees", "feedback_angles", "gradient_angles"]
