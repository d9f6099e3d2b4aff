"""The training loop shared by the NNI trial, ``nni-bio train`` and the demo.

Plain PyTorch: SGD or Adam, cosine schedule, gradient clipping, optional auxiliary-head loss and
label smoothing, a validation pass per epoch, and a loud stop when the loss stops being finite.
Rules that need the network's output error (DFA) are wired automatically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nni_bio._registry import get_rule
from nni_bio.dfa import enable_dfa, main_output
from nni_bio.errors import NniBioError
from nni_bio.layers import RuleLayer


class DivergenceError(NniBioError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (defaults: a short CPU run)."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0 disables
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.4  # used when the model returns (logits, aux_logits)
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochMetrics] = field(default_factory=list)

    @property
    def final(self) -> EpochMetrics:
        return self.history[-1]

    @property
    def best_val(self) -> EpochMetrics:
        """The epoch with the best validation accuracy (reported, never used to pick a test number)."""
        return max(self.history, key=lambda m: m.val_acc)

    def as_dict(self) -> dict:
        return {"history": [asdict(m) for m in self.history]}


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise NniBioError(f"unknown optimizer {config.optimizer!r}: use 'sgd' or 'adam'")


def wire_rules(model: nn.Module) -> nn.Module:
    """Install the output-error bus if any layer's rule needs it (DFA)."""
    if any(isinstance(m, RuleLayer) and get_rule(m.rule_name).info.needs_global_error for m in model.modules()):
        enable_dfa(model)
    return model


def evaluate(model: nn.Module, loader: DataLoader, device: str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``loader`` (eval mode, no grad)."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = main_output(model(x))
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def train(
    model: nn.Module, train_set: Dataset, val_set: Dataset, config: TrainConfig, *,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` and evaluate it on ``val_set`` after every epoch.

    Raises:
        DivergenceError: the loss became NaN/inf (the message says where and what to try).

    Example:
        >>> import torch, nni_bio
        >>> from nni_bio.data import get_dataset
        >>> from nni_bio.training import TrainConfig, train
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), nni_bio.get_rule("usf").linear(64, 10))
        >>> result = train(net, get_dataset("digits", "train"), get_dataset("digits", "val"), TrainConfig(epochs=1))
        >>> 0.0 <= result.final.val_acc <= 1.0
        True
    """
    torch.manual_seed(config.seed)
    device = config.device
    model = wire_rules(model.to(device))
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
                              num_workers=config.num_workers, drop_last=len(train_set) > config.batch_size)
    val_loader = DataLoader(val_set, batch_size=max(256, config.batch_size), num_workers=config.num_workers)
    optimizer = make_optimizer(model, config)
    steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    result = TrainResult()
    step = 0
    for epoch in range(1, config.epochs + 1):
        start, model_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            output = model(x)
            logits = main_output(output)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            if isinstance(output, (tuple, list)) and len(output) > 1 and output[1] is not None:
                loss = loss + config.auxiliary_weight * F.cross_entropy(output[1], y, label_smoothing=config.label_smoothing)
            if not math.isfinite(loss.item()):
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {step}: loss is {loss.item()}. Lower the learning "
                    f"rate (now {optimizer.param_groups[0]['lr']:.3g}), keep gradient clipping on (grad_clip="
                    f"{config.grad_clip}), or pick another rule for the unstable layers."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            if on_step is not None:
                on_step(step, loss.item())
        val_loss, val_acc = evaluate(model, val_loader, device)
        metrics = EpochMetrics(epoch, loss_sum / seen, correct / seen, val_loss, val_acc, model_lr,
                               time.perf_counter() - start)
        result.history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(metrics)
    return result
