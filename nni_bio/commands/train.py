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

from nni_bio.core.errors import NniBioError
from nni_bio.train.arguments import add_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a genotype or a fixed network to the end (checkpoints, resume)",
                              description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    add_arguments(p)
    p.set_defaults(run=run)


def _rule_map(value: str | None) -> dict[str, str]:
    from nni_bio.core.safe_json import read_json, rule_map_schema

    if not value:
        return {}
    if value.startswith("@"):
        return read_json(value[1:], what="--rule-map", schema=rule_map_schema, is_path=True)
    return read_json(value, what="--rule-map", schema=rule_map_schema, is_path=False)


def read_genotype(path: str) -> dict:
    """A genotype file, read with size, depth and shape limits (it may come from anyone)."""
    from nni_bio.core.safe_json import genotype_schema, read_json

    return read_json(path, what="genotype", schema=genotype_schema, is_path=True)


def spec_from_args(args: argparse.Namespace) -> dict:
    from nni_bio.train.model_spec import fixed_spec, genotype_spec

    rule_map = _rule_map(args.rule_map)
    if args.model:
        if args.cells is not None or args.auxiliary or getattr(args, "preset", None):
            raise NniBioError("--cells, --auxiliary and --preset apply to --genotype networks only")
        model_args = None
        if getattr(args, "model_args", None):
            from nni_bio.core.safe_json import read_json

            model_args = read_json(args.model_args, what="--model-args", is_path=False)
            if not isinstance(model_args, dict):
                raise NniBioError(f"--model-args must be a JSON object, got {args.model_args!r}")
        return fixed_spec(args.model, rule=args.rule or "backprop", rule_map=rule_map, width=args.width,
                          model_args=model_args)
    genotype = read_genotype(args.genotype)
    if getattr(args, "preset", None):
        from nni_bio.search_spaces.darts_cells import with_preset

        genotype = with_preset(genotype, args.preset)
    return genotype_spec(genotype, width=args.width, cells=args.cells, auxiliary=args.auxiliary, rule=args.rule,
                         rule_map=rule_map)


def _check_buildable(spec: dict, args: argparse.Namespace) -> None:
    """Build a genotype's network once on the meta device (no memory, random state kept), so a genotype that
    does not fit its space fails in one line before any output is written."""
    if not args.genotype:
        return
    from nni_bio.train.model_spec import build_model
    from nni_bio.nas.mutables import InvalidSampleError

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
    from nni_bio.train import distributed
    from nni_bio.train.final_training import run_final_training
    from nni_bio.train.model_spec import build_model
    from nni_bio.core.swap import rule_map
    from nni_bio.train.training import TrainConfig

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
