"""The arguments of ``nni-bio train``, kept beside the training they configure.

The command line (:mod:`nni_bio.commands.train`) adds them to its sub-command; a study, which checks the
retraining command lines it will start before it starts them, parses them with :func:`parser`. One
definition, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the network, data, optimisation and output options of ``nni-bio train`` to ``p``."""
    net = p.add_argument_group("network")
    which = net.add_mutually_exclusive_group(required=True)
    which.add_argument("--genotype", metavar="FILE", help="genotype JSON written by a search (genotype.json)")
    which.add_argument("--model", metavar="NAME",
                       help="fixed network: tiny-cnn, small-cnn, lenet, resnet20 (any resnet<6n+2>), or any timm "
                            "model as timm:NAME (e.g. timm:resnet18; no weights are downloaded)")
    net.add_argument("--model-args", metavar="JSON", default=None,
                     help='timm:NAME constructor arguments, e.g. \'{"patch_size": 4}\' for a ViT on 32x32 images')
    net.add_argument("--rule", default=None, help="rule of every layer (default: backprop for --model; the "
                     "genotype's own rules for --genotype)")
    net.add_argument("--rule-map", metavar="JSON", default=None,
                     help='fnmatch pattern over layer names -> rule, applied after --rule, e.g. \'{"0": "backprop", '
                          '"*": "usf"}\' (first match wins), or @FILE with that JSON')
    net.add_argument("--width", type=int, default=None, help="channels (genotype: initial channels C, 36 for DARTS)")
    net.add_argument("--cells", type=int, default=None, help="genotype networks: number of cells (DARTS: 20)")
    net.add_argument("--auxiliary", action="store_true", help="auxiliary head (DARTS), loss weight --auxiliary-weight")
    net.add_argument("--preset", default=None, choices=["bio", "reference"],
                     help="DARTS genotypes: 'bio' (stem, cell pre-processing, skip FactorizedReduce, classifier, aux "
                          "head use the genotype's bio fixed_rule: no backprop layer) or 'reference' (those layers "
                          "learn by backprop, as in the reference code); default: the genotype's own")
    net.add_argument("--drop-path", type=float, default=0.0, help="final drop-path probability, raised linearly "
                     "per epoch (models with drop_path_prob: DARTS)")

    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="digits")
    data.add_argument("--data-dir", default=None, help="folder of the user copies (default: $NNI_BIO_DATA)")
    data.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels (DARTS: 16); 0 = off")
    data.add_argument("--no-augment", action="store_true", help="no standard augmentation (crop/flip)")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    data.add_argument("--train-split", default="train", choices=["train", "train+val"],
                      help="train+val: every training image (DARTS' final training); there is then no validation "
                           "set and only the final-epoch test accuracy is reported")
    data.add_argument("--test-split", default="full", choices=["full", "nb201"],
                      help="nb201: NAS-Bench-201's 3,000-image x-test half of ImageNet16-120's 6,000 test images")
    data.add_argument("--train-limit", type=int, default=0, help="only the first N training images (smoke runs)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=10)
    opt.add_argument("--batch-size", type=int, default=64)
    opt.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    opt.add_argument("--lr", type=float, default=0.025, help="initial learning rate (see --lr-schedule)")
    opt.add_argument("--lr-schedule", default="cosine", choices=["cosine", "step"],
                     help="cosine: annealed to 0 over all steps (DARTS CIFAR); step: x --lr-gamma after every epoch "
                          "(DARTS ImageNet)")
    opt.add_argument("--lr-gamma", type=float, default=0.97, help="factor per epoch of --lr-schedule step")
    opt.add_argument("--momentum", type=float, default=0.9)
    opt.add_argument("--weight-decay", type=float, default=3e-4)
    opt.add_argument("--grad-clip", type=float, default=5.0, help="gradient-norm clip; 0 = off")
    opt.add_argument("--label-smoothing", type=float, default=None, help="default 0.1 for imagenet, else 0")
    opt.add_argument("--auxiliary-weight", type=float, default=0.4)
    opt.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision (autocast; "
                     "fp16 adds a GradScaler)")
    opt.add_argument("--channels-last", action="store_true", help="model and batches in channels-last memory "
                     "format (faster convolutions on GPUs with tensor cores, with --amp)")
    opt.add_argument("--compile", nargs="?", const="inductor", default="none", choices=["none", "inductor", "aot_eager"],
                     help="torch.compile the network (--compile alone: inductor, or aot_eager where inductor cannot "
                     "build); pays back over several epochs, see benchmarks/README.md")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    opt.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")

    out = p.add_argument_group("output")
    out.add_argument("--output", default=None, help="output folder (default: runs/<name>)")
    out.add_argument("--name", default=None, help="run name (default: <model>-<rule>-<dataset>-s<seed>)")
    out.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    out.add_argument("--no-progress", action="store_true", help="no progress bars (also off when stderr is no TTY)")
    out.add_argument("--diagnostics-every", type=int, default=1, help="alignment angles every N epochs (0: off)")
    out.add_argument("--diagnostics-batch", type=int, default=128, help="validation images used for the angles")
    out.add_argument("--print-layers", action="store_true", help="print the layer names and rules, then exit")


def parser() -> argparse.ArgumentParser:
    """A stand-alone parser of ``nni-bio train``'s arguments (what follows ``nni-bio train``)."""
    p = argparse.ArgumentParser(prog="nni-bio train")
    add_arguments(p)
    return p


__all__ = ["add_arguments", "parser"]
