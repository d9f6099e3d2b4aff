"""``nni-bio demo``: a short end-to-end training of a small mixed-rule CNN on scikit-learn's digits."""

from __future__ import annotations

import argparse

import torch
from torch import nn

import nni_bio
from nni_bio.data import get_dataset
from nni_bio.train.training import EpochMetrics, TrainConfig, evaluate, train


def mixed_rule_cnn(rules: list[str], num_classes: int = 10) -> nn.Module:
    """conv(rule 0) -> BN -> ReLU -> depthwise conv(rule 1) -> 1x1 conv(rule 2) -> BN -> ReLU -> pool -> linear(rule 3)."""
    r = [nni_bio.get_rule(name) for name in rules]
    return nn.Sequential(
        r[0].conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        r[1].conv2d(32, 32, 3, padding=1, groups=32, bias=False), r[2].conv2d(32, 64, 1, bias=False),
        nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), r[3].linear(64, num_classes),
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train a small mixed-rule CNN on digits (offline, ~1 min on CPU)")
    parser.add_argument("--rules", default="usf,frsf,brsf,fa", help="rules of the 4 layers, comma separated")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rules = [r.strip() for r in args.rules.split(",")]
    if len(rules) != 4:
        raise nni_bio.NniBioError(f"--rules needs 4 comma-separated rule names, got {len(rules)}: {args.rules!r}")
    torch.manual_seed(args.seed)
    model = mixed_rule_cnn(rules)
    print(f"mixed-rule CNN on digits, layer rules: {nni_bio.rule_map(model)}")

    def report(m: EpochMetrics) -> None:
        print(f"epoch {m.epoch:3d}  train loss {m.train_loss:.3f}  train acc {m.train_acc:.3f}  "
              f"val acc {m.val_acc:.3f}  ({m.seconds:.1f}s)", flush=True)

    config = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    train(model, get_dataset("digits", "train"), get_dataset("digits", "val"), config, on_epoch_end=report)
    _, test_acc = evaluate(model, torch.utils.data.DataLoader(get_dataset("digits", "test"), batch_size=512))
    print(f"final-epoch test accuracy: {test_acc:.3f}")
    return 0
