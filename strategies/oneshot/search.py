"""What every one-shot strategy shares: the configuration, the search state (data split, weight
optimizer, weight step, evaluation) and the strategy interface.

A strategy is a small class with hooks called by :func:`nni_bio.strategies.oneshot.run_oneshot`::

    setup(search)        once, after the supernet and the optimizers exist
    epoch_start(epoch)   before each epoch's weight training (1-based epochs)
    step(x, y)           one training step on a weight batch; returns (loss, logits)
    epoch_end(epoch)     after the epoch's weight training; returns extra metrics
    derive()             the current derived architecture (an NNI sample)
    evaluating()         context in which the supernet computes what ``val_acc`` reports
    state_dict()         what the strategy carries from one epoch to the next (checkpoints), as
    load_state_dict(s)   tensors and plain data; restored after ``setup`` on resume

The weights are always trained with the learning rules of the candidates (the rule layers' own
backward passes); only the architecture step differs between strategies.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from nni_bio.core.error_bus import main_output
from nni_bio.train.training import AMP_DTYPES, DivergenceError, clip_grad_norm, evaluate, scaled_backward

from nni_bio.strategies.supernet import Supernet


@dataclass
class OneShotConfig:
    """Hyperparameters shared by all one-shot strategies (defaults: DARTS' search, paper-digest §4.1).

    Attributes:
        epochs: search epochs.
        batch_size: batch of the weight step and of the architecture step.
        lr, lr_min, momentum, weight_decay, grad_clip: SGD on the weights, cosine from ``lr`` to
            ``lr_min`` over the epochs (stepped per epoch, as DARTS), gradient-norm clipping.
        train_portion: share of the training split that trains the weights; the rest drives the
            architecture (DARTS' 50/50 split). ``val_acc`` is measured on the held-out ``val`` split.
        train_limit: use only the first N training images (0: all), for tests and smoke runs.
        eval_derived: also measure the derived architecture inside the supernet (``derived_val_acc``).
        seed: seeds torch, numpy and Python's ``random`` and the data split.
        device: ``cpu`` or ``cuda``.
        amp: ``none``, ``bf16`` (autocast) or ``fp16`` (autocast, a GradScaler for the weight step,
            and architecture gradients taken from the loss scaled by the scaler's scale).
        channels_last: the supernet and its input batches in channels-last memory format (faster
            convolutions on GPUs with tensor cores, with ``amp``).
        partial_channels: PC-DARTS' k: each cell edge mixes its candidates on 1/k of its channels
            (:func:`~nni_bio.strategies.supernet.build_supernet`; DARTS space, mixture/gumbel supernets).
        edge_normalization: PC-DARTS' edge normalization: a learned architecture weight beta per
            incoming edge of every cell node, ``softmax(beta)`` weighing the node's sum and the
            derivation's ranking of its inputs (independent of ``partial_channels``; spaces with
            cells, mixture/gumbel supernets: darts, darts2, gumbel, egnas).
    """

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    train_portion: float = 0.5
    train_limit: int = 0
    eval_derived: bool = True
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: str = "none"
    channels_last: bool = False
    compile: str = "none"
    partial_channels: int = 1
    edge_normalization: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, not {self.amp!r}")
        if int(self.partial_channels) < 1:
            raise ValueError(f"partial_channels must be >= 1, not {self.partial_channels!r}")


@dataclass
class EpochRecord:
    """What one search epoch measured. ``val_acc`` is the supernet's validation accuracy as the
    strategy evaluates it (see :meth:`OneShotStrategy.evaluating`); ``derived_val_acc`` that of the
    derived architecture ``sample`` computed with the shared supernet weights, no retraining (BatchNorm
    statistics re-estimated on 10 weight batches). ``probs``: noise-free choice probabilities."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    derived_val_acc: float
    lr: float
    seconds: float
    sample: dict[str, Any]
    extra: dict[str, float] = field(default_factory=dict)
    probs: dict[str, dict[Any, float]] = field(default_factory=dict)


class Search:
    """The state of one search: supernet, data loaders, weight optimizer and schedule."""

    def __init__(self, supernet: Supernet, config: OneShotConfig, weight_set: Dataset, arch_set: Dataset,
                 val_set: Dataset):
        self.supernet, self.config = supernet, config
        self.model = supernet.model.to(config.device)
        self.device = config.device
        self.memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.model  # the weight and architecture steps' forward: torch.compile'd with config.compile
        if config.compile != "none":
            from nni_bio.train.compiling import compile_model

            self.forward = compile_model(self.model, config.compile)
        self.device_type = torch.device(config.device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=config.amp == "fp16")
        seed = config.seed
        self.train_loader = DataLoader(weight_set, batch_size=config.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed),
                                       drop_last=len(weight_set) > config.batch_size, num_workers=config.num_workers)
        self.arch_loader = DataLoader(arch_set, batch_size=config.batch_size, shuffle=True,
                                      generator=torch.Generator().manual_seed(seed + 1),
                                      drop_last=len(arch_set) > config.batch_size, num_workers=config.num_workers)
        self.val_loader = DataLoader(val_set, batch_size=max(256, config.batch_size), num_workers=config.num_workers)
        self._arch_iter: Iterator | None = None
        self._arch_pass: Tensor | None = None  # arch_loader's generator state before the current pass began
        self._arch_taken = 0  # batches taken from the current pass
        self.optimizer = torch.optim.SGD(supernet.weights, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(1, config.epochs),
                                                                    eta_min=config.lr_min)
        self.epoch = 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A batch on the search's device (and in its memory format)."""
        fmt = self.memory_format if x.dim() == 4 else torch.preserve_format
        return x.to(self.device, memory_format=fmt), y.to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision of ``config.amp`` for forward passes (a no-op without)."""
        dtype = AMP_DTYPES[self.config.amp]
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def next_arch_batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of the architecture split (cycling through it)."""
        if self._arch_iter is None:
            self._start_arch_pass()
        try:
            x, y = next(self._arch_iter)
        except StopIteration:
            self._start_arch_pass()
            x, y = next(self._arch_iter)
        self._arch_taken += 1
        return self.batch(x, y)

    def _start_arch_pass(self) -> None:
        self._arch_pass = self.arch_loader.generator.get_state()
        self._arch_iter, self._arch_taken = iter(self.arch_loader), 0

    # -- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The search's state between epochs, as tensors and plain data: the supernet (weights,
        architecture parameters, rule state such as brSF's step counters), the weight optimizer and
        schedule, and the data order (both loaders' generators; the architecture split's pass in
        progress as the generator state it started from and the batches taken from it)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                "train_generator": self.train_loader.generator.get_state(),
                "arch_generator": self.arch_loader.generator.get_state(),
                "arch_pass": self._arch_pass, "arch_taken": self._arch_taken if self._arch_iter is not None else -1,
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. An architecture pass in progress is replayed up to where it was
        (its batches are loaded again, not trained on), so the next architecture batch is the one an
        uninterrupted run would take; with ``num_workers`` > 0 the workers repeat their work exactly.
        Restore the global random states after this call: replaying may draw from them."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # fp16 AMP: the loss scale reached
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.train_loader.generator.set_state(state["train_generator"])
        self._arch_iter, self._arch_pass, self._arch_taken = None, None, 0
        if int(state["arch_taken"]) >= 0:
            self.arch_loader.generator.set_state(state["arch_pass"])
            self._start_arch_pass()
            for _ in range(int(state["arch_taken"])):
                next(self._arch_iter)
            self._arch_taken = int(state["arch_taken"])
        self.arch_loader.generator.set_state(state["arch_generator"])

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the supernet on a batch (under ``config.amp``), and its logits."""
        with self.autocast():
            logits = main_output(self.forward(x))
            return F.cross_entropy(logits, y), logits

    def grads(self, loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
        """d loss / d params (zeros for parameters the loss does not reach, e.g. an unused candidate).

        Under fp16 AMP the backward runs on the loss scaled by the GradScaler's current scale (small
        gradients would underflow in fp16) and the gradients are unscaled; if one is not finite, all
        are returned as zeros (the architecture step is skipped, as GradScaler skips a weight step).
        """
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        with scaled_backward(self.scaler):
            grads = torch.autograd.grad(loss * scale if scale != 1.0 else loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        if scale == 1.0:
            return grads
        grads = [g / scale for g in grads]
        finite = torch.stack([g.isfinite().all() for g in grads]).all()
        return [torch.where(finite, g, torch.zeros_like(g)) for g in grads]  # no host sync

    def weight_step(self, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
        """One SGD step on the weights (the architecture parameters are held fixed)."""
        with frozen(self.supernet.arch_parameters()):
            loss, logits = self.loss(x, y)
            if not math.isfinite(loss.item()):
                raise DivergenceError(
                    f"one-shot search diverged at epoch {self.epoch}: the training loss is {loss.item()}. Lower "
                    f"the learning rate (now {self.lr:.3g}) or keep gradient clipping on (grad_clip="
                    f"{self.config.grad_clip}).")
            self.optimizer.zero_grad(set_to_none=True)
            with scaled_backward(self.scaler):
                self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            clip_grad_norm(self.supernet.model, self.config.grad_clip, self.supernet.weights)  # KP's B counted once
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item(), logits.detach()

    def evaluate(self) -> tuple[float, float]:
        """Validation loss and accuracy of the supernet as it computes now (eval mode)."""
        with self.autocast():
            loss, acc = evaluate(self.model, self.val_loader, self.device)
        self.model.train()
        return loss, acc


@contextlib.contextmanager
def frozen(parameters: list[nn.Parameter]) -> Iterator[None]:
    """No gradient for ``parameters`` inside the block (saves the architecture gradient in weight steps)."""
    states = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad_(False)
        yield
    finally:
        for p, state in zip(parameters, states):
            p.requires_grad_(state)


class OneShotStrategy:
    """Base class of the one-shot strategies (see the module docstring for the hooks).

    Attributes:
        name: the strategy's name in ``run_oneshot(strategy=...)`` and ``--strategy``.
        supernet_kind: ``mixture``, ``gumbel`` or ``path`` (:func:`~nni_bio.strategies.supernet.build_supernet`).
        mixes_feedback: whether a weight step sends the layer below a mixture of the candidates'
            feedback signals (README, "One-shot semantics").
    """

    name: ClassVar[str] = ""
    supernet_kind: ClassVar[str] = "mixture"
    mixes_feedback: ClassVar[bool] = True

    search: Search

    def setup(self, search: Search) -> None:
        self.search = search

    def epoch_start(self, epoch: int) -> None:
        pass

    def step(self, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
        return self.search.weight_step(x, y)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def derive(self) -> dict[str, Any]:
        return self.search.supernet.derive()

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        yield

    def hparams(self) -> dict[str, Any]:
        """The strategy's own hyperparameters (recorded in results)."""
        plain = (bool, int, float, str, tuple, list, type(None))
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, plain)}

    def state_dict(self) -> dict[str, Any]:
        """What the strategy carries across epochs beyond the supernet (optimizers, controllers), as
        tensors and plain data only: checkpoints are read with ``torch.load(weights_only=True)``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called after :meth:`setup`)."""




def recalibrated_evaluate(search: Search, batches: int) -> tuple[float, float]:
    """Validation loss/accuracy after re-estimating BatchNorm statistics on ``batches`` weight batches
    (the statistics are put back afterwards)."""
    bns = [m for m in search.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        search.model.train()
        with torch.no_grad():
            for i, (x, y) in enumerate(search.train_loader):
                if i >= batches:
                    break
                x, _ = search.batch(x, y)
                with search.autocast():
                    search.model(x)
        return search.evaluate()
    finally:
        for m, state, momentum in zip(bns, saved, momenta):
            m.load_state_dict(state)
            m.momentum = momentum


__all__ = ["EpochRecord", "OneShotConfig", "OneShotStrategy", "Search", "frozen", "recalibrated_evaluate"]
