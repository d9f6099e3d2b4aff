"""One-shot search over op x rule spaces, in-process: ``run_oneshot(space, strategy, dataset, epochs)``.

Strategies (``STRATEGIES``; details and semantics in each module):

==========  ==============================================================  ====================
name        what                                                            layer below learns
==========  ==============================================================  ====================
``darts``   DARTS, first order (:mod:`~nni_bio.strategies.darts`)           a blend of rules
``darts2``  DARTS, second order (unrolled, finite-difference Hessian)       a blend of rules
``gumbel``  GumbelDARTS (``hard=True``: one-hot straight-through forward)   a blend (hard: one)
``enas``    ENAS, NNI's RL controller on a path-sampling supernet           one rule
``egnas``   EG-NAS: CMA-ES on the architecture logits, SGD on the weights   a blend of rules
==========  ==============================================================  ====================

The supernet is the space converted by NNI's own mutation hooks; the loop is nni-bio's (data split,
SGD, architecture step, per-epoch evaluation), so every strategy reports the same per-epoch record
and runs unchanged inside an NNI trial (``python -m nni_bio.strategies.oneshot.trial``, see :mod:`nni_bio.strategies.oneshot.trial`).

**Checkpoints and resume.** With ``checkpoint=PATH`` the loop writes, after every epoch and
atomically (:mod:`nni_bio.train.checkpoint`), everything the next epoch depends on: the supernet (weights,
architecture parameters, rule state such as brSF's step counters), the weight optimizer and its
schedule, the strategy's own state (DARTS' architecture Adam, ENAS' controller, its optimizer and
replay buffer; EG-NAS keeps no CMA-ES state across epochs), the random states of torch, numpy and
Python, the data order (the loaders' generators and the architecture split's pass in progress) and
the history. ``resume=True`` continues from ``PATH`` when it exists: a search killed at any moment
ends with the same per-epoch numbers and the same derived architecture as one never interrupted
(bit for bit on a CPU; on a GPU as far as its kernels are deterministic). The file holds tensors and
plain data only, read with ``torch.load(weights_only=True)``.

The example is in the package docstring (:mod:`nni_bio.strategies.oneshot`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from nni_bio.core.errors import NniBioError
from nni_bio.strategies.oneshot.search import EpochRecord, OneShotConfig, OneShotStrategy, Search, recalibrated_evaluate
from nni_bio.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state

#: strategy name -> ("module:class", default keyword arguments)
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "darts": ("nni_bio.strategies.darts:DARTS", {}),
    "darts2": ("nni_bio.strategies.darts:DARTS", {"unrolled": True}),
    "gumbel": ("nni_bio.strategies.darts:GumbelDARTS", {}),
    "enas": ("nni_bio.strategies.enas:ENAS", {}),
    "egnas": ("nni_bio.strategies.egnas:EGNAS", {}),
}


@dataclass
class OneShotResult:
    """The outcome of a one-shot search.

    Attributes:
        sample: the derived architecture as an NNI sample (``{label: candidate}``).
        genotype: the space's JSON genotype of ``sample`` (``space_class.export_genotype``).
        history: one :class:`EpochRecord` per epoch. Its ``val_acc`` is the supernet's accuracy as the
            search evaluates it, not an architecture's; :func:`retrain_derived` measures the derived
            architecture trained on its own.
        probs: final noise-free choice probabilities (``{}`` for ENAS: see its controller).
    """

    space: str
    strategy: str
    sample: dict[str, Any]
    genotype: dict[str, Any]
    history: list[EpochRecord]
    probs: dict[str, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0  # the epoch of the checkpoint the search continued from (0: a fresh start)

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]

    def as_dict(self) -> dict[str, Any]:
        return {"space": self.space, "strategy": self.strategy, "sample": self.sample, "genotype": self.genotype,
                "probs": {k: {str(c): p for c, p in v.items()} for k, v in self.probs.items()},
                "config": self.config, "history": [asdict(r) for r in self.history], "resumed_from": self.resumed_from}


def strategy_class(name: str) -> tuple[type[OneShotStrategy], dict[str, Any]]:
    """The strategy class registered as ``name`` and its preset keyword arguments."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, STRATEGIES, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise NniBioError(f"unknown one-shot strategy {name!r}.{hint} Available: {', '.join(STRATEGIES)}")
    target, preset = STRATEGIES[name]
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls), dict(preset)


def make_strategy(name: str, **hparams: Any) -> tuple[OneShotStrategy, OneShotConfig]:
    """Split ``hparams`` into the shared :class:`OneShotConfig` and the strategy's own arguments."""
    cls, preset = strategy_class(name)
    shared = {f.name for f in fields(OneShotConfig)}
    own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    for base in cls.__mro__[1:]:  # GumbelDARTS(**kwargs) forwards to DARTS
        if base is not OneShotStrategy and "__init__" in vars(base):
            own |= set(inspect.signature(base.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(hparams) - shared - own)
    if unknown:
        known = sorted(shared | own)
        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, known, n=1)[0]!r}?)"
                 if difflib.get_close_matches(u, known, n=1) else repr(u) for u in unknown]
        raise NniBioError(f"strategy {name!r} does not take {', '.join(hints)}; it takes: {', '.join(known)}")
    try:
        strategy = cls(**{**preset, **{k: v for k, v in hparams.items() if k in own}})
    except (TypeError, ValueError) as exc:
        raise NniBioError(f"strategy {name!r}: {exc}") from exc
    strategy.name = name
    return strategy, OneShotConfig(**{k: v for k, v in hparams.items() if k in shared})


def run_oneshot(space: str = "tiny", strategy: str = "darts", dataset: str = "digits", epochs: int = 10, *,
                space_args: Mapping[str, Any] | None = None, seed: int = 0, data_dir: str | None = None,
                on_epoch_end: Callable[[EpochRecord], None] | None = None,
                checkpoint: str | os.PathLike | None = None, resume: bool = False,
                on_resume: Callable[[list[EpochRecord]], None] | None = None,
                checkpoint_extra: Mapping[str, Any] | None = None, **hparams: Any) -> OneShotResult:
    """Search ``space`` on ``dataset`` with a one-shot ``strategy``; return the derived architecture.

    Args:
        space: search-space name (``tiny``, ``darts``, ...; see ``nni_bio.search_spaces``).
        strategy: one of :data:`STRATEGIES`.
        dataset: data-set name (``digits``, ``cifar10``, ...); the space gets its shape.
        epochs: search epochs.
        space_args: extra constructor arguments of the space (e.g. ``{"width": 8, "rules": [...]}``).
        seed: seeds everything (data split, initialisation, sampling, CMA-ES).
        data_dir: where user data sets live (default ``$NNI_BIO_DATA``).
        on_epoch_end: called with each :class:`EpochRecord` this call computes (the NNI trial reports
            from here), before that epoch's checkpoint is written.
        checkpoint: file written atomically after every epoch (see the module docstring).
        resume: continue from ``checkpoint`` if it exists (a fresh start otherwise); the search's
            settings (:data:`RESUME_KEYS` of the checkpoint's ``run``) must be the same.
        on_resume: called once with the restored history before the search continues.
        checkpoint_extra: plain data stored in every checkpoint (e.g. who wrote it).
        **hparams: :class:`~nni_bio.strategies.oneshot.search.OneShotConfig` fields (``lr``, ``batch_size``,
            ``train_limit``, ``device``, ...) and the strategy's own arguments (``arch_lr``,
            ``arch_gradient``, ``temperature``, ``population_size``, ...). Unknown names raise.

    Raises:
        NniBioError: unknown strategy, space or hyperparameter.
        DivergenceError: the weight loss became NaN/inf.
        nni_bio.train.checkpoint.CheckpointError: the checkpoint is unreadable or from another search.
    """
    from nni_bio.data import get_dataset
    from nni_bio.search_spaces import space_class
    from nni_bio.strategies.supernet import build_supernet
    from nni_bio.search_spaces import space_arguments
    from nni_bio.train.training import wire_rules

    searcher, config = make_strategy(strategy, **hparams, epochs=epochs, seed=seed)
    if config.compile != "none" and searcher.supernet_kind == "path":
        raise NniBioError(f"--compile needs a supernet that runs every candidate (darts, darts2, gumbel, egnas): "
                          f"{strategy} samples one path per step, and each new path would compile again")
    run = _run_settings(space, strategy, dataset, space_args, config, searcher)
    torch.manual_seed(seed)
    np.random.seed(seed)  # tianshou's replay-buffer sampling
    random.seed(seed)
    space_cls = space_class(space)
    args = space_arguments(space_cls, dict(space_args or {}), dataset)
    supernet = build_supernet(space_cls(**args), searcher.supernet_kind, partial_channels=config.partial_channels,
                              edge_normalization=config.edge_normalization)
    wire_rules(supernet.model)  # rules needing the output error (DFA) get the bus

    train_set = get_dataset(dataset, "train", data_dir, seed=seed)
    if config.train_limit:
        train_set = Subset(train_set, range(min(config.train_limit, len(train_set))))
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, min(len(order) - 1, int(round(config.train_portion * len(order)))))
    val_set = get_dataset(dataset, "val", data_dir, seed=seed)
    search = Search(supernet, config, Subset(train_set, order[:cut]), Subset(train_set, order[cut:]), val_set)
    searcher.setup(search)

    history: list[EpochRecord] = []
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    resumed_from = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        history = _restore(checkpoint, run, search, searcher)
        resumed_from = len(history)
        if on_resume is not None:
            on_resume(list(history))
    for epoch in range(resumed_from + 1, epochs + 1):
        start, lr = time.perf_counter(), search.lr
        search.epoch = epoch
        searcher.epoch_start(epoch)
        search.model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        for x, y in search.train_loader:
            x, y = search.batch(x, y)
            loss, logits = searcher.step(x, y)
            seen += len(y)
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        extra = searcher.epoch_end(epoch)
        search.scheduler.step()
        with searcher.evaluating():
            val_loss, val_acc = search.evaluate()
        sample = searcher.derive()
        derived_acc = val_acc if searcher.supernet_kind == "path" else float("nan")
        if config.eval_derived and searcher.supernet_kind != "path":
            with supernet.discretized(sample):
                derived_acc = recalibrated_evaluate(search, 10)[1]
        probs = supernet.probs() if searcher.supernet_kind != "path" else {}
        record = EpochRecord(epoch, loss_sum / max(seen, 1), correct / max(seen, 1), val_loss, val_acc, derived_acc,
                             lr, time.perf_counter() - start, sample, extra, probs)
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "version": ONESHOT_CHECKPOINT_VERSION, "kind": "oneshot", "epoch": epoch, "run": run,
                "search": search.state_dict(), "strategy": searcher.state_dict(), "rng": rng_state(),
                "history": _plain([asdict(r) for r in history]), **(checkpoint_extra or {})})

    sample = history[-1].sample if history else searcher.derive()
    genotype = space_cls.export_genotype(sample, args)
    probs = history[-1].probs if history else {}
    return OneShotResult(space, strategy, sample, genotype, history, probs,
                         {**asdict(config), **searcher.hparams(), "space_args": args, "dataset": dataset},
                         resumed_from)


#: version of the one-shot checkpoint dict
ONESHOT_CHECKPOINT_VERSION = 1
#: settings a resumed search must share with its checkpoint (they shape the trajectory); the device,
#: the loader workers and the memory format may change
RESUME_KEYS = ("space", "strategy", "dataset", "space_args", "config", "hparams")
_FREE_FIELDS = ("device", "num_workers", "channels_last", "compile")
#: config fields added after version 1 checkpoints existed, at their defaults: left out of the
#: settings, so those checkpoints still resume
_LATER_DEFAULTS = {("amp", "none"), ("partial_channels", 1), ("edge_normalization", False)}


def _run_settings(space: str, strategy: str, dataset: str, space_args: Mapping[str, Any] | None,
                  config: OneShotConfig, searcher: OneShotStrategy) -> dict[str, Any]:
    """The search's settings as plain data (stored in checkpoints, compared on resume)."""
    plain = json.loads(json.dumps({
        "space": space, "strategy": strategy, "dataset": dataset, "space_args": dict(space_args or {}),
        "config": {k: v for k, v in asdict(config).items()
                   if k not in _FREE_FIELDS and (k, v) not in _LATER_DEFAULTS},
        "hparams": searcher.hparams()}, default=str))
    return plain


def _plain(value: Any) -> Any:
    """``value`` with str subclasses (NNI's labels) as plain str, so ``weights_only`` loading reads it."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _restore(path: Path, run: dict[str, Any], search: Search, searcher: OneShotStrategy) -> list[EpochRecord]:
    """Load a one-shot checkpoint into ``search`` and ``searcher``; return its history."""
    saved = load_checkpoint(path)
    if saved.get("kind") != "oneshot" or saved.get("version") != ONESHOT_CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a one-shot search checkpoint of version {ONESHOT_CHECKPOINT_VERSION} "
                              f"(kind {saved.get('kind')!r}, version {saved.get('version')!r})")
    changed = [f"{key}: {saved['run'].get(key)!r} in the checkpoint, {run[key]!r} now"
               for key in RESUME_KEYS if saved["run"].get(key) != run[key]]
    if changed:
        raise CheckpointError(f"cannot resume from {path}: the search was started with other settings "
                              f"({'; '.join(changed)}). Resume with the original options, or start a new search "
                              f"with another checkpoint.")
    search.load_state_dict(saved["search"])
    searcher.load_state_dict(saved["strategy"])
    set_rng_state(saved["rng"])  # last: replaying the data order may draw from the global streams
    return [EpochRecord(**r) for r in saved["history"]]


#: (space, data set) pairs whose derived architecture is cheap enough to retrain inside every one-shot
#: trial by default (seconds on a CPU); elsewhere retraining is asked for with ``retrain_epochs``
CHEAP_RETRAIN = {("tiny", "digits"): 5}


def default_retrain_epochs(space: str, dataset: str) -> int:
    """Epochs a one-shot trial retrains its derived architecture for unless told (0: not by default)."""
    return CHEAP_RETRAIN.get((space, dataset), 0)


def retrain_derived(result: OneShotResult, epochs: int, *, data_dir: str | None = None,
                    on_epoch_end: Callable[[Any], None] | None = None) -> Any:
    """Train the derived architecture of ``result`` from scratch: the number a search's user wants.

    The network is ``space.build_network(result.genotype)`` at the search's size (width and depth of
    the space), each layer with its chosen rule and fresh weights; it trains for ``epochs`` on the
    whole training split the search used (both of its halves, ``train_limit`` applied) with the
    search's weight settings (SGD ``lr``, ``momentum``, ``weight_decay``, ``grad_clip``,
    ``batch_size``, cosine schedule, ``seed``, ``device``) and is evaluated on the ``val`` split
    after every epoch. Returns the :class:`~nni_bio.train.training.TrainResult`.
    """
    from nni_bio.search_spaces import space_class
    from nni_bio.train.training import TrainConfig, train
    from nni_bio.train.trial_runtime import load_splits, network_at_search_size

    if epochs < 1:
        raise NniBioError(f"retraining needs epochs >= 1, got {epochs}")
    config, dataset = result.config, result.config["dataset"]
    torch.manual_seed(config["seed"])
    net = network_at_search_size(space_class(result.space), result.genotype)
    train_set, val_set = load_splits(dataset, data_dir, config["seed"], config.get("train_limit") or 0)
    train_config = TrainConfig(epochs=epochs, batch_size=config["batch_size"], lr=config["lr"],
                               momentum=config["momentum"], weight_decay=config["weight_decay"],
                               grad_clip=config["grad_clip"], seed=config["seed"], device=config["device"],
                               num_workers=config.get("num_workers", 0))
    return train(net, train_set, val_set, train_config, on_epoch_end=on_epoch_end)


__all__ = ["CHEAP_RETRAIN", "ONESHOT_CHECKPOINT_VERSION", "RESUME_KEYS", "STRATEGIES", "OneShotResult",
           "default_retrain_epochs", "make_strategy", "retrain_derived", "run_oneshot", "strategy_class"]
