"""One-shot search from Python: search op and learning rule of every layer of the tiny digits CNN with
a one-shot strategy, then train the derived architecture from scratch. About a minute on a CPU.

    .venv/bin/python examples/python_oneshot.py                       # DARTS, first order
    .venv/bin/python examples/python_oneshot.py --strategy egnas      # or darts2, gumbel, enas
    .venv/bin/python examples/python_oneshot.py --strategy darts --arch-gradient bp   # exact-feedback arch gradient

The same search runs as one NNI trial with ``nni-bio search examples/digits-darts.yml``.
"""

from __future__ import annotations

import argparse
import json

import torch

from nni_bio.data import get_dataset
from nni_bio.search_spaces import space_class
from nni_bio.strategies.oneshot import STRATEGIES, run_oneshot
from nni_bio.train.training import TrainConfig, train

#: per-strategy settings for this small problem (the library defaults are DARTS' CIFAR-10 ones)
SETTINGS = {
    "darts": {"arch_lr": 0.01}, "darts2": {"arch_lr": 0.01}, "gumbel": {"arch_lr": 0.01},
    "enas": {"batches_per_update": 8, "controller_lr": 0.001},
    "egnas": {"population_size": 20, "step_size": 0.5},
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="darts", choices=sorted(STRATEGIES))
    parser.add_argument("--epochs", type=int, default=10, help="search epochs")
    parser.add_argument("--retrain-epochs", type=int, default=8, help="epochs to train the derived network (0: skip)")
    parser.add_argument("--arch-gradient", default=None, choices=["rule", "bp"], help="darts/darts2/gumbel only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead

    hparams = dict(SETTINGS[args.strategy], lr=0.05, batch_size=32)
    if args.arch_gradient:
        hparams["arch_gradient"] = args.arch_gradient
    print(f"searching the tiny space on digits with {args.strategy} for {args.epochs} epochs")
    result = run_oneshot("tiny", args.strategy, "digits", epochs=args.epochs, seed=args.seed,
                         on_epoch_end=lambda r: print(f"  epoch {r.epoch:2d}: supernet val acc {r.val_acc:.3f}, "
                                                      f"derived {json.dumps(r.sample, sort_keys=True)}"),
                         **hparams)
    print("derived architecture:", json.dumps(result.sample, sort_keys=True))
    for label, probs in result.probs.items():
        best = max(probs, key=probs.get)
        print(f"  {label:<8} {best:<24} p = {probs[best]:.3f} (of {len(probs)} candidates)")

    out = {"sample": result.sample, "genotype": result.genotype}
    if args.retrain_epochs:
        net = space_class("tiny").build_network(result.genotype)  # a plain network with the chosen rules
        trained = train(net, get_dataset("digits", "train"), get_dataset("digits", "val"),
                        TrainConfig(epochs=args.retrain_epochs, lr=0.05, seed=args.seed))
        out["retrained_val_acc"] = trained.final.val_acc
        print(f"derived network trained from scratch for {args.retrain_epochs} epochs: "
              f"val acc {trained.final.val_acc:.3f}")
    return out


if __name__ == "__main__":
    main()
