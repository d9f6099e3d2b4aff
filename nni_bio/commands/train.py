"""``nni-bio train``: final training of a searched genotype or a fixed network, DARTS recipe.

Examples::

    nni-bio train --model small-cnn --rule usf --dataset fashion-mnist --epochs 5 --lr 0.05
    nni-bio train --genotype runs/search/genotype.json --dataset cifar10 --data-dir ~/data \\
        --width 36 --cells 20 --auxiliary --drop-path 0.2 --cutout 16 --epochs 600 --batch-size 96 --lr 0.025
    nni-bio train --genotype genotype.json --dataset imagenet --data-dir ~/data --width 48 --cells 14 \
        --auxiliary --epochs 250 --batch-size 128 --lr 0.1 --weight-decay 3e-5 --lr-schedule step --lr-gamma 0.97
    nni-bio train ... --preset reference              # the reference code's backprop stem/pre-processing/classifier
    nni-bio train ... --train-split train+val         # DARTS' convention: every training image, no validation
    nni-bio train ... --resume                        # continue after an interruption, same result
    torchrun --nproc_per_node=4 -m nni_bio.cli train ... --device cuda   # DistributedDataParallel

Reports the final-epoch test accuracy and the best validation epoch (never a best-test pick).
Output (``--output``, default ``runs/<name>``): ``result.json``, ``checkpoint.pt``, ``model.pt``,
``spec.json``, ``tensorboard/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nni_bio.errors import NniBioError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a genotype or a fixed network to the end (checkpoints, resume)",
                              description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n\n".join(__doc__.split("\n\n")[1:]))
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
    p.set_defaults(run=run)


def _rule_map(value: str | None) -> dict[str, str]:
    from nni_bio.safe_json import read_json, rule_map_schema

    if not value:
        return {}
    if value.startswith("@"):
        return read_json(value[1:], what="--rule-map", schema=rule_map_schema, is_path=True)
    return read_json(value, what="--rule-map", schema=rule_map_schema, is_path=False)


def read_genotype(path: str) -> dict:
    """A genotype file, read with size, depth and shape limits (it may come from anyone)."""
    from nni_bio.safe_json import genotype_schema, read_json

    return read_json(path, what="genotype", schema=genotype_schema, is_path=True)


def spec_from_args(args: argparse.Namespace) -> dict:
    from nni_bio.model_spec import fixed_spec, genotype_spec

    rule_map = _rule_map(args.rule_map)
    if args.model:
        if args.cells is not None or args.auxiliary or getattr(args, "preset", None):
            raise NniBioError("--cells, --auxiliary and --preset apply to --genotype networks only")
        model_args = None
        if getattr(args, "model_args", None):
            from nni_bio.safe_json import read_json

            model_args = read_json(args.model_args, what="--model-args", is_path=False)
            if not isinstance(model_args, dict):
                raise NniBioError(f"--model-args must be a JSON object, got {args.model_args!r}")
        return fixed_spec(args.model, rule=args.rule or "backprop", rule_map=rule_map, width=args.width,
                          model_args=model_args)
    genotype = read_genotype(args.genotype)
    if getattr(args, "preset", None):
        from nni_bio.search_spaces.darts_net import with_preset

        genotype = with_preset(genotype, args.preset)
    return genotype_spec(genotype, width=args.width, cells=args.cells, auxiliary=args.auxiliary, rule=args.rule,
                         rule_map=rule_map)


def _check_buildable(spec: dict, args: argparse.Namespace) -> None:
    """Build a genotype's network once on the meta device (no memory, random state kept), so a genotype that
    does not fit its space fails in one line before any output is written."""
    if not args.genotype:
        return
    from nni_bio.model_spec import build_model
    from nni_bio.nas import InvalidSampleError

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            build_model(spec, args.dataset)
    except InvalidSampleError as exc:
        raise NniBioError(f"genotype {args.genotype}: {exc}. Fix the file, or re-export it from the search that "
                          "made it") from exc
    except Exception:  # noqa: BLE001  (anything else the real build reports, with its own message)
        pass


def default_name(args: argparse.Namespace) -> str:
    model = args.model or Path(args.genotype).stem
    rule = args.rule or ("backprop" if args.model else "genotype")
    preset = f"-{args.preset}" if getattr(args, "preset", None) else ""
    return f"{model}-{rule}{'-map' if args.rule_map else ''}{preset}-{args.dataset}-s{args.seed}"


def run(args: argparse.Namespace) -> int:
    from nni_bio import distributed
    from nni_bio.final_training import run_final_training
    from nni_bio.model_spec import build_model
    from nni_bio.swap import rule_map
    from nni_bio.training import TrainConfig

    spec = spec_from_args(args)
    _check_buildable(spec, args)
    if args.print_layers:
        torch.manual_seed(args.seed)
        for name, rule in rule_map(build_model(spec, args.dataset)).items():
            print(f"{name:<30} {rule}")
        return 0
    device = args.device
    if distributed.requested():
        device = distributed.init_from_env(device)
    progress = not args.no_progress and sys.stderr.isatty()
    label_smoothing = args.label_smoothing if args.label_smoothing is not None else (
        0.1 if args.dataset == "imagenet" else 0.0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         lr_schedule=args.lr_schedule, lr_gamma=args.lr_gamma, momentum=args.momentum,
                         weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                         label_smoothing=label_smoothing, auxiliary_weight=args.auxiliary_weight, seed=args.seed,
                         device=device, num_workers=args.workers, amp=args.amp, channels_last=args.channels_last,
                         drop_path_prob=args.drop_path, compile=args.compile,
                         progress=progress)
    output = Path(args.output or Path("runs") / (args.name or default_name(args)))
    if progress:
        from tqdm.auto import tqdm

        log = tqdm.write
    else:
        def log(line: str) -> None:
            print(line, flush=True)
    try:
        run_final_training(spec, dataset=args.dataset, config=config, output=output, data_dir=args.data_dir,
                           cutout=args.cutout, augment=not args.no_augment, split_seed=args.split_seed,
                           resume=args.resume, train_limit=args.train_limit, diagnostics_every=args.diagnostics_every,
                           diagnostics_batch=args.diagnostics_batch, log=log, train_split=args.train_split,
                           test_split=args.test_split)
    finally:
        distributed.shutdown()
    return 0
