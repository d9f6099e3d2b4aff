"""Final training of one network (``nni-bio train``): data, checkpoints, monitoring, result.

Reporting follows the rule the reference code broke (defect #10 of ``paper-digest.md``): the
number reported is the **final-epoch test accuracy**; the validation split (carved out of the
training files) gives the best-validation epoch, which is reported alongside and never used to
pick a test number. With ``train_split="train+val"`` (DARTS' convention: every training image)
there is no validation set: the validation metrics are null and only the test accuracy is reported.

Output folder::

    spec.json          how to rebuild the network, the data set and the training settings
    checkpoint.pt      after every epoch, atomically (resume with ``--resume``)
    model.pt           final weights ({"model": state_dict, "spec": ...}; weights_only loadable)
    result.json        status ("running", "complete", or "diverged"/"failed"/"interrupted" with the
                       error), final test/val accuracy, best validation epoch, rules, history

The folder is created only after the network is built and the data set opened: a command with an
unknown rule or a missing data set fails without leaving a folder behind.
    tensorboard/       losses, accuracies, learning rate, alignment angles per rule layer
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from nni_bio.core.errors import NniBioError
from nni_bio.core.layers import RuleLayer
from nni_bio.core.safe_json import write_json
from nni_bio.core.swap import parameter_counts, rule_map
from nni_bio.train.checkpoint import load_checkpoint, save_checkpoint
from nni_bio.train.model_spec import build_model, describe, preset_of
from nni_bio.train.training import DivergenceError, EpochMetrics, TrainConfig, evaluate, train

CHECKPOINT, MODEL, RESULT, SPEC = "checkpoint.pt", "model.pt", "result.json", "spec.json"


def weight_counts(model: nn.Module) -> dict[str, int]:
    """Trainable weights per learning rule; ``other`` = parameters outside rule layers (BN...)."""
    counts: Counter[str] = Counter()
    in_rule_layers = set()
    for module in model.modules():
        if isinstance(module, RuleLayer):
            for p in (module.weight, module.bias):
                if p is not None and p.requires_grad:
                    counts[module.rule_name] += p.numel()
                    in_rule_layers.add(id(p))
            in_rule_layers.update(id(p) for p in module.feedback.parameters())  # learned feedback (KP's B): not a weight
    counts["other"] = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in in_rule_layers)
    return dict(sorted(counts.items()))


def _summary(m: EpochMetrics, epochs: int) -> str:
    angles = "".join(f"  {k.split('/')[0].replace('_', ' ')} {v:.1f}deg" for k, v in m.extra.items()
                     if k.endswith("/mean"))
    val = "no validation set" if m.val_acc is None else f"val loss {m.val_loss:.4f} acc {m.val_acc:.4f}"
    return (f"epoch {m.epoch:3d}/{epochs}  train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | {val} | "
            f"lr {m.lr:.4g}{angles}  ({m.seconds:.1f}s)")


def run_final_training(spec: dict[str, Any], *, dataset: str, config: TrainConfig, output: str | os.PathLike,
                       data_dir: str | None = None, cutout: int = 0, augment: bool = True, split_seed: int = 0,
                       resume: bool = False, train_limit: int = 0, diagnostics_every: int = 1,
                       diagnostics_batch: int = 128, log: Callable[[str], None] = print, train_split: str = "train",
                       test_split: str = "full") -> dict[str, Any]:
    """Train the network of ``spec`` on ``dataset`` and write the output folder (module docstring).

    Args:
        spec: model spec (:mod:`nni_bio.train.model_spec`).
        config: training settings; ``config.seed`` seeds the weights and the data order.
        split_seed: seed of the train/validation split (fixed across training seeds by default).
        resume: continue from ``output/checkpoint.pt``; without it an existing checkpoint is an error.
        train_limit: use only the first N training images (0: all); for smoke runs.
        train_split: ``train`` (validation on the held-out ``val`` split) or ``train+val`` (every
            training image, no validation set: val metrics are null; diagnostics use training images).
        test_split: ``full`` or ``nb201`` (ImageNet16-120: NAS-Bench-201's 3,000-image x-test half).
        diagnostics_every: alignment angles every N epochs (0: never).
        log: where per-epoch lines go (``print``; a tqdm-safe writer with progress bars).

    Returns:
        The content of ``result.json``.
    """
    from nni_bio.data import get_dataset
    from nni_bio.train.distributed import is_main
    from nni_bio.train.monitor import Diagnostics, TensorBoardLogger

    output = Path(output)
    checkpoint = output / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise NniBioError(f"{output} already holds a run ({CHECKPOINT}): pass --resume to continue it, or choose "
                          f"another --output")
    main = is_main()
    setup = {"model": spec, "dataset": dataset, "data_dir": data_dir, "cutout": cutout, "augment": augment,
             "split_seed": split_seed, "train_limit": train_limit, "config": asdict(config)}
    if train_split != "train" or test_split != "full":
        setup.update(train_split=train_split, test_split=test_split)
    saved = load_checkpoint(checkpoint) if resume and checkpoint.exists() else None
    if saved is not None:
        saved_setup = saved.get("setup", {})
        changed = [k for k in ("model", "dataset", "cutout", "augment", "split_seed", "train_limit")
                   if k in saved_setup and saved_setup[k] != setup[k]]
        changed += [k for k in ("train_split", "test_split") if saved_setup.get(k) != setup.get(k)]
        if changed:
            raise NniBioError(f"cannot resume {output}: {', '.join(changed)} differ from the interrupted run's "
                              f"(see {output / SPEC})")

    # Everything that can fail on a bad argument (unknown rule or model, missing data set) runs before
    # the output folder exists, so a mistyped command leaves nothing behind.
    torch.manual_seed(config.seed)
    model = build_model(spec, dataset)
    if train_split not in ("train", "train+val"):
        raise NniBioError(f"train_split must be 'train' or 'train+val', not {train_split!r}")
    train_set = get_dataset(dataset, train_split, data_dir, seed=split_seed, augment=augment, cutout=cutout)
    if train_limit:
        train_set = Subset(train_set, range(min(train_limit, len(train_set))))
    val_set = None if train_split == "train+val" else get_dataset(dataset, "val", data_dir, seed=split_seed)
    test_set = get_dataset(dataset, "test", data_dir, seed=split_seed, test_split=test_split)
    rules = rule_map(model)
    if main:
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / SPEC, setup)
    preset = preset_of(spec)
    val_text = "no validation set (train+val)" if val_set is None else f"{len(val_set):,} validation images"
    log(f"{describe(spec)}{f' (preset {preset})' if preset else ''} on {dataset}: {len(train_set):,} training "
        f"images / {val_text}; weights per rule {weight_counts(model)}")

    start_epoch, history = 1, []
    if saved is not None:
        start_epoch, history = int(saved["epoch"]) + 1, list(saved["history"])
        log(f"resuming {output} after epoch {start_epoch - 1}")
    del saved
    logger = TensorBoardLogger(output / "tensorboard", purge_step=start_epoch if start_epoch > 1 else None) \
        if main else None
    diagnose = Diagnostics.from_dataset(train_set if val_set is None else val_set, diagnostics_batch,
                                        every=diagnostics_every) \
        if diagnostics_every > 0 else None
    started = time.time()
    base = {"status": "running", "name": output.name, "model": spec, "description": describe(spec),
            "preset": preset, "train_split": train_split, "test_split": test_split, "dataset": dataset,
            "rules": rules, "weights_per_rule": weight_counts(model), "setup": setup}

    def on_epoch_end(m: EpochMetrics) -> None:
        if not main:
            return
        logger(m)
        log(_summary(m, config.epochs))
        history.append(asdict(m))
        write_json(output / RESULT, {**base, "history": history})

    if main:
        write_json(output / RESULT, {**base, "history": history})
    try:
        try:
            result = train(model, train_set, val_set, config, on_epoch_end=on_epoch_end, checkpoint=checkpoint,
                           resume=resume, diagnose=diagnose, checkpoint_extra={"spec": spec, "setup": setup})
        except BaseException as exc:
            if main:  # result.json must not keep saying "running" for a run that has stopped
                status = ("diverged" if isinstance(exc, DivergenceError) else
                          "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                write_json(output / RESULT, {**base, "status": status, "error": f"{type(exc).__name__}: {exc}",
                                             "history": history})
            raise
        if not main:
            return {}
        test_loader = DataLoader(test_set, batch_size=max(256, config.batch_size))
        test_loss, test_acc = evaluate(model, test_loader, config.device)
        final, best = result.final, result.best_val
        logger.scalar("accuracy/test_final_epoch", test_acc, final.epoch)
    finally:
        if logger is not None:
            logger.close()
    save_checkpoint(output / MODEL, {"model": model.state_dict(), "spec": spec, "dataset": dataset})
    summary = {
        **base, "status": "complete",
        "final": {"epoch": final.epoch, "test_acc": test_acc, "test_loss": test_loss, "val_acc": final.val_acc,
                  "train_acc": final.train_acc, "test_images": len(test_set),
                  "test_split_source": getattr(test_set, "split_source", None)},
        "best_val": None if best is None else {"epoch": best.epoch, "val_acc": best.val_acc},
        **parameter_counts(model),
        "resumed_from": result.resumed_from, "seconds_this_process": round(time.time() - started, 1),
        "history": [asdict(m) for m in result.history],
    }
    write_json(output / RESULT, summary)
    best_text = ("no validation set (trained on train+val)" if best is None else
                 f"best validation accuracy {best.val_acc:.4f} at epoch {best.epoch} (not used for selection)")
    log(f"final-epoch (epoch {final.epoch}) test accuracy {test_acc:.4f} on {len(test_set):,} images; {best_text}. "
        f"Output: {output}")
    return summary


def load_model(spec: dict[str, Any], dataset: str, weights: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild the network of ``spec`` and load ``weights`` (``model.pt``, ``checkpoint.pt`` or a bare
    state dict; read with ``weights_only=True``). Returned in eval mode, DFA wired."""
    from nni_bio.train.training import wire_rules

    torch.manual_seed(0)  # the weights are overwritten; fixed feedback tensors come from the state dict
    model = wire_rules(build_model(spec, dataset))
    payload = load_checkpoint(weights)
    state = payload["model"] if isinstance(payload.get("model"), dict) else payload
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise NniBioError(f"the weights in {weights} do not fit {describe(spec)}: {exc}") from exc
    return model.to(device).eval()


def load_run(folder: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of an ``nni-bio train`` output folder (final ``model.pt``, else the latest
    ``checkpoint.pt``) and the folder's setup (``spec.json`` plus ``name``, ``weights``, ``result``)."""
    folder = Path(folder)
    if not (folder / SPEC).is_file():
        raise NniBioError(f"{folder} is not an output folder of nni-bio train (no {SPEC})")
    setup = json.loads((folder / SPEC).read_text())
    weights = folder / MODEL if (folder / MODEL).is_file() else folder / CHECKPOINT
    if not weights.is_file():
        raise NniBioError(f"{folder} has neither {MODEL} nor {CHECKPOINT}: the run saved no weights yet")
    result = json.loads((folder / RESULT).read_text()) if (folder / RESULT).is_file() else {}
    model = load_model(setup["model"], setup["dataset"], weights, device)
    return model, {**setup, "name": folder.name, "weights": str(weights), "result": result}


__all__ = ["load_model", "load_run", "run_final_training", "weight_counts"]
