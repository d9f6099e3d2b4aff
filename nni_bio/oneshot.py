"""A one-shot search as ONE NNI trial: the whole search runs inside the trial, which reports every
epoch, writes TensorBoard logs and the derived genotype, and reports the derived architecture.

``nnictl`` runs it as the ``trialCommand`` of a one-trial experiment (``examples/digits-darts.yml``;
the experiment's search space is the trivial ``{"strategy": {"_type": "choice", "_value": ["darts"]}}``
with ``maxTrialNumber: 1``)::

    python3 -m nni_bio.oneshot --space tiny --dataset digits --epochs 10

The trial takes the strategy (and any other hyperparameter the tuner sends, e.g. ``arch_lr``) from
its NNI parameters; ``--strategy`` on the command line must agree with it. Outside NNI, name it::

    python -m nni_bio.oneshot --strategy egnas --space tiny --dataset digits --epochs 10 --output runs/egnas

Reported per epoch: ``default`` = validation accuracy of the supernet as the strategy evaluates it
(the softmax(alpha) mixture for darts/darts2/egnas, its noise-free softmax for gumbel, the
controller's greedy architecture for enas), plus ``derived_val_acc`` (the derived architecture with
the shared weights, no retraining), losses and strategy measurements. Final: the same ``default``
(last epoch), ``best_val_acc``, ``strategy`` and ``sample`` (the derived architecture as a JSON
string; NNI's web UI shows non-numeric metric keys as categorical values). Files in the output
folder (``$NNI_OUTPUT_DIR``): ``genotype.json`` (rewritten every epoch), ``result.json``,
``tensorboard/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from nni_bio.errors import NniBioError
from nni_bio.trial import run_as_trial
#: command-line options passed to run_oneshot when given (name -> type)
_HPARAM_FLAGS = {
    "batch_size": int, "lr": float, "lr_min": float, "momentum": float, "weight_decay": float,
    "grad_clip": float, "train_portion": float, "train_limit": int, "arch_lr": float, "arch_gradient": str,
    "warmup_epochs": int,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nni_bio.oneshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", default=None, help="darts, darts2, gumbel, enas, egnas (default: NNI parameter)")
    p.add_argument("--space", required=True, help="search space name (tiny, darts, ...)")
    p.add_argument("--space-args", default="{}", help="JSON object of extra space constructor arguments")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None, help="where user data sets live (default: $NNI_BIO_DATA)")
    p.add_argument("--epochs", type=int, default=10)
    for name, kind in _HPARAM_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a further strategy argument (VALUE read as JSON if it parses), e.g. --set population_size=20 "
                   "--set temperature=[1.0,0.5]; repeatable")
    p.add_argument("--hparams", default="{}", help="the same as one JSON object")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is fastest "
                   "for the tiny spaces on a busy machine")
    p.add_argument("--output", default=None, help="output folder (default: $NNI_OUTPUT_DIR or runs/oneshot)")
    return p.parse_args(argv)


def nni_parameters() -> dict[str, Any]:
    """The trial's NNI parameters (``{}`` outside NNI), with NAS-format choices unwrapped."""
    import nni

    from nni_bio.experiment import unwrap_choice

    return {k: unwrap_choice(v) for k, v in (nni.get_next_parameter() or {}).items()}


def resolve(args: argparse.Namespace, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Strategy name and hyperparameters from the command line and the NNI parameters."""
    params = dict(params)
    strategy = params.pop("strategy", None)
    if strategy is not None and args.strategy is not None and strategy != args.strategy:
        raise NniBioError(f"--strategy {args.strategy} disagrees with the NNI parameter strategy={strategy!r}: "
                          "drop one of them")
    strategy = strategy or args.strategy
    if strategy is None:
        raise NniBioError("no strategy: run under nnictl with a 'strategy' parameter, or pass --strategy "
                          "(darts, darts2, gumbel, enas, egnas)")
    hparams = {name: getattr(args, name) for name in _HPARAM_FLAGS if getattr(args, name) is not None}
    hparams.update(json.loads(args.hparams))
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise NniBioError(f"--set takes NAME=VALUE, got {item!r}")
        try:
            hparams[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            hparams[name.replace("-", "_")] = value
    hparams.update(params)  # what the tuner sends wins
    if isinstance(hparams.get("temperature"), list):
        hparams["temperature"] = tuple(hparams["temperature"])
    return strategy, hparams


def run(args: argparse.Namespace) -> dict[str, Any]:
    import nni
    from torch.utils.tensorboard import SummaryWriter

    from nni_bio.candidates import parse_candidate
    from nni_bio.strategies.oneshot_base import EpochRecord
    from nni_bio.strategies.oneshot import run_oneshot

    strategy, hparams = resolve(args, nni_parameters())
    if args.threads:
        torch.set_num_threads(args.threads)
    output = Path(args.output or os.environ.get("NNI_OUTPUT_DIR") or "runs/oneshot")
    output.mkdir(parents=True, exist_ok=True)
    print(f"one-shot search: strategy {strategy}, space {args.space}, data set {args.dataset}, "
          f"{args.epochs} epochs, {json.dumps(hparams, sort_keys=True)}", flush=True)

    from nni_bio.search_spaces import space_class
    from nni_bio.trial import space_arguments

    space_cls = space_class(args.space)
    space_args = space_arguments(space_cls, json.loads(args.space_args), args.dataset)

    with SummaryWriter(log_dir=str(output / "tensorboard")) as writer:
        def report(r: EpochRecord) -> None:
            metrics = {"default": r.val_acc, "derived_val_acc": r.derived_val_acc, "val_loss": r.val_loss,
                       "train_acc": r.train_acc, "train_loss": r.train_loss, "lr": r.lr, **r.extra}
            metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
            for key, value in metrics.items():
                writer.add_scalar({"default": "val/acc", "derived_val_acc": "val/derived_acc", "val_loss": "val/loss",
                                   "train_acc": "train/acc", "train_loss": "train/loss"}.get(key, key), value, r.epoch)
            for label, dist in r.probs.items():
                for candidate, p in dist.items():
                    writer.add_scalar(f"prob/{label}/{candidate}", p, r.epoch)
            writer.add_text("architecture", json.dumps(r.sample, sort_keys=True), r.epoch)
            nni.report_intermediate_result(metrics)
            genotype = space_cls.export_genotype(r.sample, space_args)
            (output / "genotype.json").write_text(json.dumps(genotype, indent=2))
            print(f"epoch {r.epoch}: train loss {r.train_loss:.4f} acc {r.train_acc:.4f} | val loss {r.val_loss:.4f} "
                  f"acc {r.val_acc:.4f} | derived {r.derived_val_acc:.4f} | {r.seconds:.1f} s | "
                  f"{json.dumps(r.sample, sort_keys=True)}", flush=True)

        result = run_oneshot(args.space, strategy, args.dataset, args.epochs, space_args=space_args, seed=args.seed,
                             data_dir=args.data_dir, on_epoch_end=report, device=args.device, **hparams)

    best = max(result.history, key=lambda r: r.val_acc)
    final = {"default": result.final.val_acc, "best_val_acc": best.val_acc, "best_val_epoch": best.epoch,
             "strategy": strategy, "sample": json.dumps(result.sample, sort_keys=True)}
    if math.isfinite(result.final.derived_val_acc):
        final["derived_val_acc"] = result.final.derived_val_acc
    (output / "genotype.json").write_text(json.dumps(result.genotype, indent=2))
    (output / "result.json").write_text(json.dumps({**final, **result.as_dict()}, indent=2, default=str))
    nni.report_final_result(final)
    print("derived architecture (slot: op @ learning rule):")
    for label, value in sorted(result.sample.items()):
        if "/input_" in label and label.replace("/input_", "/op_") in result.sample:
            continue  # printed with its op
        op, rule = parse_candidate(str(value)) if isinstance(value, str) else (json.dumps(value), None)
        source = result.sample.get(label.replace("/op_", "/input_")) if "/op_" in label else None
        print(f"  {label:<24} {op}" + (f"  @ {rule}" if rule else "") + (f"  <- node {source[0]}" if source else ""))
    print(f"genotype written to {output / 'genotype.json'}", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_as_trial(run, parse_args(argv), "one-shot trial")


if __name__ == "__main__":
    sys.exit(main())
