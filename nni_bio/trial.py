"""The multi-trial trial's command line: train the architecture NNI sends (or ``--sample``) with the
chosen rules, report per-epoch and final results, write TensorBoard logs. The work is
:func:`nni_bio.train.trial_runtime.train_architecture`, shared with ``run_multi_trial``'s evaluator.

``nnictl`` runs it as the ``trialCommand`` of the NAS-as-HPO bridge (see ``examples/*.yml``)::

    python3 -m nni_bio.trial --space tiny --dataset digits --epochs 5

Outside NNI, pass the architecture yourself::

    python -m nni_bio.trial --space tiny --dataset digits --sample '{"conv1": "conv_3x3", "conv2": "conv_3x3@usf", "fc": "frsf"}'

Under a multi-fidelity tuner (:class:`~nni_bio.strategies.halving.SuccessiveHalvingTuner`, NNI's Hyperband or
BOHB) the parameters carry ``TRIAL_BUDGET``: the trial trains that many epochs instead of ``--epochs``, and the
key is not taken for an architecture slot.

The final result also carries the genotype (a JSON string under ``"genotype"``), so it reaches the
NNI manager when the trial ran on a remote worker, whose output folder stays there.

A diverging run (NaN/inf loss) exits with status 3 and a message saying what to change; NNI marks
the trial FAILED.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from nni_bio.core.errors import NniBioError
from nni_bio.train.trial_runtime import EXIT_DIVERGED, run_as_trial, train_architecture

__all__ = ["EXIT_DIVERGED", "budget_epochs", "main", "next_sample", "parse_args", "run"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nni_bio.trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search space name (tiny, rule_per_layer, darts, nb201)")
    p.add_argument("--space-args", default="{}", help="JSON object of extra space constructor arguments")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None, help="where user data sets live (default: $NNI_BIO_DATA)")
    p.add_argument("--sample", default=None, help="JSON architecture sample; default: ask NNI for the next one")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--no-augment", action="store_true", help="no standard augmentation (crop/flip) of the training "
                   "images, as nni-bio train --no-augment")
    p.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels; 0 = off (nni-bio train --cutout)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=3e-4)
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", nargs="?", const="inductor", default="none", choices=["none", "inductor", "aot_eager"],
                   help="torch.compile the network (as nni-bio train --compile)")
    p.add_argument("--output", default=None, help="output folder (default: $NNI_OUTPUT_DIR or runs/trial)")
    return p.parse_args(argv)


def next_sample(given: str | None) -> dict[str, Any]:
    """The architecture to train: ``--sample`` when given, else the tuner's next parameters."""
    if given is not None:
        from nni_bio.core.safe_json import read_json, sample_schema

        return read_json(given, what="--sample", schema=sample_schema, is_path=False)
    import nni

    from nni_bio.nas import _compat
    from nni_bio.nas.candidates import unwrap_choice

    sample = nni.get_next_parameter()
    _compat.check_parameters_bound()
    if not sample:
        raise NniBioError("no architecture to train: run under nnictl, or pass --sample '{\"label\": \"candidate\", ...}'")
    return {label: unwrap_choice(value) for label, value in sample.items()}


def budget_epochs(sample: dict[str, Any], default: int) -> int:
    """Remove a multi-fidelity tuner's ``TRIAL_BUDGET`` from ``sample`` (it is not an architecture slot) and return
    it as the epochs to train; ``default`` (``--epochs``) without one."""
    from nni_bio.strategies.halving import BUDGET_KEY

    if BUDGET_KEY not in sample:
        return default
    budget = sample.pop(BUDGET_KEY)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 1 or budget != int(budget):
        raise NniBioError(f"{BUDGET_KEY} must be a whole number of epochs >= 1, got {budget!r}")
    return int(budget)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nni_bio.train.training import TrainConfig

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed, device=args.device,
                         compile=args.compile)
    say = lambda line: print(line, flush=True)  # noqa: E731
    sample = next_sample(args.sample)
    config.epochs = budget_epochs(sample, args.epochs)
    return train_architecture(args.space, json.loads(args.space_args), sample,
                              dataset=args.dataset, config=config, data_dir=args.data_dir,
                              train_limit=args.train_limit, output=args.output, say=say,
                              augment=not args.no_augment, cutout=args.cutout)


def main(argv: list[str] | None = None) -> int:
    return run_as_trial(run, parse_args(argv))


if __name__ == "__main__":
    from nni_bio.nas import _compat

    _compat.lean_trial()  # a trial process: nni.nas without pytorch-lightning (and all it imports)
    sys.exit(main())
