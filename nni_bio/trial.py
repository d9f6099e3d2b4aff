"""One NNI trial: build the data inside the trial, freeze the space with the tuner's sample, train
with the chosen rules, report per-epoch and final results, write TensorBoard logs.

``nnictl`` runs it as the ``trialCommand`` of the NAS-as-HPO bridge (see ``examples/*.yml``)::

    python3 -m nni_bio.trial --space tiny --dataset digits --epochs 5

Outside NNI, pass the architecture yourself::

    python -m nni_bio.trial --space tiny --dataset digits --sample '{"conv1": "conv_3x3@usf", "conv2": "skip_connect", "fc": "fa"}'

The final result also carries the genotype (a JSON string under ``"genotype"``), so it reaches the
NNI manager when the trial ran on a remote worker, whose output folder stays there.

A diverging run (NaN/inf loss) exits with status 3 and a message saying what to change; NNI marks
the trial FAILED.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from nni_bio.errors import NniBioError
from nni_bio.training import DivergenceError, EpochMetrics, TrainConfig, evaluate, train

EXIT_DIVERGED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nni_bio.trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search space name (tiny, rule_per_layer, darts, nb201)")
    p.add_argument("--space-args", default="{}", help="JSON object of extra space constructor arguments")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None, help="where user data sets live (default: $NNI_BIO_DATA)")
    p.add_argument("--sample", default=None, help="JSON architecture sample; default: ask NNI for the next one")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=3e-4)
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default=None, help="output folder (default: $NNI_OUTPUT_DIR or runs/trial)")
    return p.parse_args(argv)


def space_arguments(space_cls: type, extra: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Constructor arguments: the data set's shape where the space accepts it, then ``extra``."""
    from nni_bio.data import dataset_info

    info = dataset_info(dataset)
    init = getattr(space_cls, "_init_wrapped", space_cls.__init__)  # NNI wraps ModelSpace.__init__
    accepted = inspect.signature(init).parameters
    shape = {"in_channels": info.channels, "num_classes": info.num_classes, "image_size": info.image_size}
    return {**{k: v for k, v in shape.items() if k in accepted}, **extra}


def next_sample(given: str | None) -> dict[str, Any]:
    if given is not None:
        return json.loads(given)
    import nni

    from nni_bio.experiment import unwrap_choice

    sample = nni.get_next_parameter()
    if not sample:
        raise NniBioError("no architecture to train: run under nnictl, or pass --sample '{\"label\": \"candidate\", ...}'")
    return {label: unwrap_choice(value) for label, value in sample.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import nni

    from nni_bio.data import get_dataset
    from nni_bio.search_spaces import space_class
    from nni_bio.swap import rule_map

    space_cls = space_class(args.space)
    space_args = space_arguments(space_cls, json.loads(args.space_args), args.dataset)
    sample = next_sample(args.sample)
    genotype = space_cls.export_genotype(sample, space_args)
    output = Path(args.output or os.environ.get("NNI_OUTPUT_DIR") or "runs/trial")
    output.mkdir(parents=True, exist_ok=True)
    (output / "genotype.json").write_text(json.dumps(genotype, indent=2))

    torch.manual_seed(args.seed)
    # the network at search size (width and depth of the space); `nni-bio train` rebuilds at final size
    size = {k: v for k, v in genotype["args"].items() if k in ("width", "num_cells", "cells_per_stage", "depth")}
    model = space_cls.build_network(genotype, **size)
    print(f"architecture: {json.dumps(sample, sort_keys=True)}")
    print(f"outputs (genotype.json, result.json, tensorboard/): {output.resolve()}")
    rules = rule_map(model)
    summary = rules if len(rules) <= 12 else dict(Counter(rules.values()))  # a DARTS net has ~60 rule layers
    print(f"layer rules: {json.dumps(summary)}", flush=True)

    train_set = get_dataset(args.dataset, "train", args.data_dir, seed=args.seed)
    if args.train_limit:
        train_set = Subset(train_set, range(min(args.train_limit, len(train_set))))
    val_set = get_dataset(args.dataset, "val", args.data_dir, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed, device=args.device)

    writers: list = []  # TensorBoard's writer, made at the first report: its import is not start-up

    def tensorboard():
        if not writers:
            from torch.utils.tensorboard import SummaryWriter

            writers.append(SummaryWriter(log_dir=str(output / "tensorboard")))
        return writers[0]

    def report(m: EpochMetrics) -> None:
        writer = tensorboard()
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            writer.add_scalar(key.replace("_", "/", 1) if key != "lr" else "lr", getattr(m, key), m.epoch)
        nni.report_intermediate_result({"default": m.val_acc, "val_loss": m.val_loss,
                                        "train_acc": m.train_acc, "train_loss": m.train_loss})
        print(f"epoch {m.epoch}: train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | "
              f"val loss {m.val_loss:.4f} acc {m.val_acc:.4f}", flush=True)

    try:
        result = train(model, train_set, val_set, config, on_epoch_end=report)
    finally:
        for writer in writers:
            writer.close()

    final = {"default": result.final.val_acc, "val_loss": result.final.val_loss,
             "best_val_acc": result.best_val.val_acc, "best_val_epoch": result.best_val.epoch,
             "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
             # also in the NNI manager's records: a remote trial's output folder stays on its worker
             "genotype": json.dumps(genotype, sort_keys=True)}
    nni.report_final_result(final)
    (output / "result.json").write_text(json.dumps({**final, "genotype": genotype, **result.as_dict()}, indent=2))
    return final


def run_as_trial(run_fn: Callable[[argparse.Namespace], Any], args: argparse.Namespace, what: str = "trial") -> int:
    """Run ``run_fn(args)`` and map failures to exit statuses NNI shows: a diverging run exits with
    :data:`EXIT_DIVERGED`, any other nni-bio error with 2, both with the reason on stderr. Under NNI
    the run happens in a supervised child, so a run killed by a signal is FAILED too
    (:func:`nni_bio._compat.supervise_trial`)."""
    from nni_bio import _compat

    _compat.filter_warnings()
    _compat.supervise_trial(what)
    try:
        run_fn(args)
    except DivergenceError as exc:
        print(f"nni-bio {what} FAILED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except NniBioError as exc:
        print(f"nni-bio {what} error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_as_trial(run, parse_args(argv))


if __name__ == "__main__":
    from nni_bio import _compat

    _compat.lean_trial()  # a trial process: nni.nas without pytorch-lightning (and all it imports)
    sys.exit(main())
