"""The training loop shared by the NNI trial, ``nni-bio train`` and the demo.

Plain PyTorch: SGD or Adam, cosine schedule, gradient clipping, optional auxiliary-head loss and
label smoothing, a validation pass per epoch, and a loud stop when the loss stops being finite.
Rules that need the network's output error (DFA) are wired automatically.

For longer runs (``nni-bio train``) the same loop also does, when asked:

- mixed precision (``TrainConfig.amp``: ``bf16`` autocast, or ``fp16`` autocast with a GradScaler)
  and channels-last memory format (``TrainConfig.channels_last``);
- scheduled drop path (``TrainConfig.drop_path_prob``: ``model.drop_path_prob`` rises linearly
  from 0, epoch by epoch, as in DARTS);
- a checkpoint after every epoch (``checkpoint=PATH``), written atomically, with everything a
  bit-exact continuation needs: model (brSF step counters are buffers), optimizer, scheduler,
  scaler, the torch/CUDA/numpy/Python random states and the DataLoader generator (shuffling
  order; in-process augmentation draws from torch's global generator). ``resume=True`` continues
  from it and ends with the same weights and metrics as an uninterrupted run of the same seed;
- per-epoch diagnostics (``diagnose``, e.g. :class:`nni_bio.train.monitor.Diagnostics`), computed
  with the random state forked so they never change the training trajectory;
- DistributedDataParallel when ``torch.distributed`` is initialised (``torchrun``): a
  DistributedSampler shards the data, rank 0 writes the checkpoint;
- tqdm progress bars (``TrainConfig.progress``).

Two rule-specific details of the loop. Rules with learned feedback (Kolen-Pollack, ``kp``) give
their feedback Parameter a copy of W's gradient: gradient clipping counts it once
(:func:`clip_grad_norm`), and :func:`make_optimizer` warns when such layers train without weight
decay (then B never approaches W). Rules whose weight update ignores the loss (pseudo-gradients,
e.g. the example plugin's ``softhebb``) read the fp16 loss scale declared by
:func:`scaled_backward`, so that ``GradScaler.unscale_`` leaves their update intact.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from nni_bio.core._registry import get_rule
from nni_bio.core.error_bus import enable_dfa, main_output
from nni_bio.core.errors import NniBioError
from nni_bio.core.layers import RuleLayer
from nni_bio.train.distributed import is_main

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: TrainConfig fields a resumed run must share with the checkpoint (they shape the trajectory)
RESUME_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "grad_clip",
                 "label_smoothing", "auxiliary_weight", "seed", "amp", "drop_path_prob", "lr_schedule", "lr_gamma")
LR_SCHEDULES = ("cosine", "step")


class DivergenceError(NniBioError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (defaults: a short CPU run)."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.05
    lr_schedule: str = "cosine"  # "cosine" (to 0 over all steps) or "step" (x lr_gamma after every epoch)
    lr_gamma: float = 0.97  # the "step" schedule's factor per epoch (DARTS ImageNet: 0.97)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0 disables
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.4  # used when the model returns (logits, aux_logits)
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: str = "none"  # "none", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    channels_last: bool = False  # model and batches in channels-last memory format (GPU convolutions)
    drop_path_prob: float = 0.0  # final drop-path probability, reached linearly (needs model.drop_path_prob)
    progress: bool = False  # tqdm bars for epochs and batches
    compile: str = "none"  # "none" (eager), "inductor" or "aot_eager": torch.compile (nni_bio.train.compiling)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None  # None: trained without a validation set (train+val)
    val_acc: float | None
    lr: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)  # drop-path probability, diagnostics (angles)


@dataclass
class TrainResult:
    history: list[EpochMetrics] = field(default_factory=list)
    resumed_from: int = 0  # the epoch of the checkpoint a resumed run started from (0: fresh start)

    @property
    def final(self) -> EpochMetrics:
        return self.history[-1]

    @property
    def best_val(self) -> EpochMetrics | None:
        """The epoch with the best validation accuracy (reported, never used to pick a test number);
        None without a validation set."""
        scored = [m for m in self.history if m.val_acc is not None]
        return max(scored, key=lambda m: m.val_acc) if scored else None

    def as_dict(self) -> dict:
        return {"history": [asdict(m) for m in self.history]}


def learned_feedback_layers(model: nn.Module) -> list[RuleLayer]:
    """The rule layers whose feedback is learned (``RuleInfo.learned_feedback``, e.g. ``kp``).

    Their feedback Parameters receive a copy of W's gradient (see ``Feedback.feedback_weight``).
    """
    return [m for m in model.modules() if isinstance(m, RuleLayer) and get_rule(m.rule_name).info.learned_feedback]


def _mirrored_parameters(model: nn.Module) -> set[int]:
    """ids of the learned-feedback Parameters, whose gradient is a copy of their layer's W gradient."""
    return {id(p) for m in learned_feedback_layers(model) for p in m.feedback.parameters()}


def clip_grad_norm(model: nn.Module, max_norm: float, parameters: list[nn.Parameter] | None = None) -> Tensor:
    """``clip_grad_norm_`` over ``model``'s gradients (or ``parameters`` of it), counting every gradient once.

    A learned-feedback Parameter (Kolen-Pollack's B) holds a copy of W's gradient: it is left out of
    the norm (which would otherwise count W's gradient twice) and scaled by the same factor as
    everything else, so that B and W still receive the same update. Returns the total norm.
    """
    mirrored = _mirrored_parameters(model)
    parameters = list(model.parameters()) if parameters is None else list(parameters)
    counted = [p for p in parameters if id(p) not in mirrored]
    norm = nn.utils.clip_grad_norm_(counted, max_norm)
    copies = [p.grad for p in parameters if id(p) in mirrored and p.grad is not None]
    if copies:
        coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # the factor clip_grad_norm_ applied
        for grad in copies:
            grad.mul_(coefficient.to(grad.device))
    return norm


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over the trainable parameters, all in one group.

    Warns when Kolen-Pollack (learned-feedback) layers train with ``weight_decay=0``: B and W then
    receive identical updates and B - W never shrinks (see :mod:`nni_bio.rules.kolen_pollack`).
    """
    kp = learned_feedback_layers(model)
    if kp and config.weight_decay <= 0:
        names = sorted({m.rule_name for m in kp})
        warnings.warn(
            f"{len(kp)} layer(s) with learned feedback ({', '.join(names)}) train without weight decay: their "
            f"feedback B receives W's gradient, so B - W stays at its initial value and B never approaches W "
            f"(the rule then acts as feedback alignment with a drifting B). Set weight_decay > 0 (e.g. 3e-4).",
            stacklevel=2)
    from nni_bio.train._optim import lean  # torch's optimizers, without importing torch._dynamo when nothing compiles

    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return lean(torch.optim.SGD)(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return lean(torch.optim.Adam)(params, lr=config.lr, weight_decay=config.weight_decay)
    raise NniBioError(f"unknown optimizer {config.optimizer!r}: use 'sgd' or 'adam'")


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped after every batch: ``cosine`` anneals to 0 over all steps
    (DARTS CIFAR); ``step`` multiplies by ``lr_gamma`` after every epoch (DARTS ImageNet: 0.97)."""
    steps_per_epoch = max(1, steps_per_epoch)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=steps_per_epoch, gamma=config.lr_gamma)
    raise NniBioError(f"unknown lr_schedule {config.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")


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


def distributed_world_size() -> int:
    """World size of an initialised ``torch.distributed`` process group, else 0."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 0


_SCALERS: list[torch.amp.GradScaler | None] = []  # declared by scaled_backward (process-wide: backward may
#                                                  run on autograd's device threads, which see no thread-locals)


@contextlib.contextmanager
def scaled_backward(scaler: torch.amp.GradScaler | None):
    """Declare the GradScaler (or ``None``: no loss scaling) of the backward passes run inside.

    A rule whose weight update ignores the loss (a Hebbian pseudo-gradient) must multiply it by the
    loss scale, as every true gradient is, or ``scaler.unscale_`` divides it by the scale (2**16 by
    default) and the layer stops learning. Such rules read the scale with :func:`loss_scale`.
    :func:`train` declares its scaler; a hand-written fp16 loop does the same::

        with scaled_backward(scaler):
            scaler.scale(loss).backward()
    """
    _SCALERS.append(scaler)
    try:
        yield scaler
    finally:
        _SCALERS.pop()


def loss_scale(device: torch.device | str) -> Tensor | float | None:
    """The loss scale of the backward in progress, as a 0-d fp32 tensor on ``device`` (no host sync).

    ``1.0`` when :func:`scaled_backward` declared ``None`` or a disabled scaler; ``None`` when nothing
    was declared (the caller cannot know whether a GradScaler scaled the loss).
    """
    if not _SCALERS:
        return None
    scaler = _SCALERS[-1]
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return scaler.scale(torch.ones((), dtype=torch.float32, device=device))


def _autocast(device: str, amp: str) -> contextlib.AbstractContextManager:
    if amp not in AMP_DTYPES:
        raise NniBioError(f"unknown amp mode {amp!r}: use one of {', '.join(AMP_DTYPES)}")
    if AMP_DTYPES[amp] is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def _fork_rng(device: str) -> contextlib.AbstractContextManager:
    cuda = torch.device(device).type == "cuda"
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


def _progress(iterable, *, enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def _resume_state(path: Path, config: TrainConfig) -> dict:
    from nni_bio.train.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    saved = state.get("config", {})
    saved = {k: saved.get(k, getattr(TrainConfig, k)) for k in RESUME_FIELDS}  # fields added later: defaults
    changed = {k: (saved.get(k), getattr(config, k)) for k in RESUME_FIELDS if saved.get(k) != getattr(config, k)}
    if changed:
        diff = ", ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in changed.items())
        raise CheckpointError(f"cannot resume from {path}: the run was started with other settings ({diff}). "
                              f"Resume with the original options, or start a new run in another output folder.")
    return state


def train(
    model: nn.Module, train_set: Dataset, val_set: Dataset | None, config: TrainConfig, *,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    diagnose: Callable[[nn.Module, int], dict[str, float]] | None = None,
    checkpoint_extra: dict | None = None,
) -> TrainResult:
    """Train ``model`` and evaluate it on ``val_set`` after every epoch (``val_set=None``: no
    validation, the metrics' ``val_loss``/``val_acc`` are None).

    Args:
        on_epoch_end: called with each epoch's metrics (before that epoch's checkpoint is written).
        on_step: called with (global step, training loss) after every optimizer step.
        checkpoint: file to write after every epoch (atomically; see :mod:`nni_bio.train.checkpoint`).
        resume: continue from ``checkpoint`` if it exists (a fresh start otherwise). The settings
            listed in :data:`RESUME_FIELDS` must match the checkpoint's.
        diagnose: ``(model, epoch) -> {name: value}`` run after validation; the values go into
            ``EpochMetrics.extra``. It runs with the random state forked: it cannot change training.
        checkpoint_extra: plain data stored in every checkpoint (e.g. how to rebuild the model).

    Raises:
        DivergenceError: the loss became NaN/inf (the message says where and what to try).
        nni_bio.train.checkpoint.CheckpointError: the checkpoint is unreadable or from other settings.

    Example:
        >>> import torch, nni_bio
        >>> from nni_bio.data import get_dataset
        >>> from nni_bio.train.training import TrainConfig, train
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), nni_bio.get_rule("usf").linear(64, 10))
        >>> result = train(net, get_dataset("digits", "train"), get_dataset("digits", "val"), TrainConfig(epochs=1))
        >>> 0.0 <= result.final.val_acc <= 1.0
        True
    """
    from nni_bio.train.checkpoint import CHECKPOINT_VERSION, rng_state, save_checkpoint, set_rng_state

    torch.manual_seed(config.seed)
    device = config.device
    model = wire_rules(model.to(device))
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    world = distributed_world_size()
    generator = torch.Generator().manual_seed(config.seed)
    drop_last = len(train_set) > config.batch_size
    sampler = None
    if world:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed, drop_last=drop_last)
        train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                                  num_workers=config.num_workers, drop_last=drop_last)
    else:
        train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
                                  num_workers=config.num_workers, drop_last=drop_last)
    val_loader = None if val_set is None else DataLoader(val_set, batch_size=max(256, config.batch_size),
                                                         num_workers=config.num_workers)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=config.amp == "fp16")
    autocast = _autocast(device, config.amp)
    result = TrainResult()
    step, start_epoch, saved_rng = 0, 1, None
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _resume_state(checkpoint, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        result.history = [EpochMetrics(**m) for m in state["history"]]
        step, start_epoch, saved_rng = int(state["step"]), int(state["epoch"]) + 1, state["rng"]
        result.resumed_from = int(state["epoch"])
    schedule_drop_path = config.drop_path_prob > 0
    if schedule_drop_path and not hasattr(model, "drop_path_prob"):
        warnings.warn(f"drop_path_prob={config.drop_path_prob} ignored: {type(model).__name__} has no "
                      f"drop_path_prob attribute", stacklevel=2)
        schedule_drop_path = False
    net = model
    if world:
        from torch.nn.parallel import DistributedDataParallel

        index = torch.device(device).index
        net = DistributedDataParallel(model, device_ids=[index] if index is not None else None)
    if config.compile != "none":
        from nni_bio.train.compiling import compile_model

        net = compile_model(net, config.compile)
    main = is_main()
    epochs = _progress(range(start_epoch, config.epochs + 1), enabled=config.progress and main, desc="epochs",
                       initial=start_epoch - 1, total=config.epochs)
    for epoch in epochs:
        if saved_rng is not None:  # continue the random streams exactly where the checkpoint left them
            set_rng_state(saved_rng, generator)
            saved_rng = None
        start, model_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        extra: dict[str, float] = {}
        if schedule_drop_path:
            model.drop_path_prob = config.drop_path_prob * (epoch - 1) / config.epochs
            extra["drop_path_prob"] = model.drop_path_prob
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        seen, loss_sum, correct = 0, 0.0, 0
        batches = _progress(train_loader, enabled=config.progress and main, desc=f"epoch {epoch}", leave=False)
        for x, y in batches:
            x = x.to(device, non_blocking=True, memory_format=memory_format if x.dim() == 4 else torch.preserve_format)
            y = y.to(device, non_blocking=True)
            with autocast:
                output = net(x)
                logits = main_output(output)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                if isinstance(output, (tuple, list)) and len(output) > 1 and output[1] is not None:
                    loss = loss + config.auxiliary_weight * F.cross_entropy(
                        output[1], y, label_smoothing=config.label_smoothing)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {step}: loss is {loss_value}. Lower the learning "
                    f"rate (now {optimizer.param_groups[0]['lr']:.3g}), keep gradient clipping on (grad_clip="
                    f"{config.grad_clip}), or pick another rule for the unstable layers."
                )
            optimizer.zero_grad(set_to_none=True)
            with scaled_backward(scaler):
                scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                clip_grad_norm(model, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(y)
            loss_sum += loss_value * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            batches.set_postfix(loss=f"{loss_value:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            if on_step is not None:
                on_step(step, loss_value)
        if world:
            import torch.distributed as dist

            totals = torch.tensor([seen, loss_sum, correct], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            seen, loss_sum, correct = int(totals[0]), float(totals[1]), int(totals[2])
        val_loss, val_acc = evaluate(model, val_loader, device) if val_loader is not None else (None, None)
        seconds = time.perf_counter() - start
        if diagnose is not None:
            with _fork_rng(device):
                extra.update(diagnose(model, epoch))
        metrics = EpochMetrics(epoch, loss_sum / max(seen, 1), correct / max(seen, 1), val_loss, val_acc, model_lr,
                               seconds, extra)
        result.history.append(metrics)
        epochs.set_postfix(train_acc=f"{metrics.train_acc:.3f}", val_acc="-" if val_acc is None else f"{val_acc:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(metrics)
        if checkpoint is not None and main:
            save_checkpoint(checkpoint, {
                "version": CHECKPOINT_VERSION, "epoch": epoch, "step": step, "config": asdict(config),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(generator),
                "history": [asdict(m) for m in result.history], **(checkpoint_extra or {}),
            })
    epochs.close()
    return result
