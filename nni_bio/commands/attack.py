"""``nni-bio attack``: adversarial robustness of a trained network (FGSM, PGD, Square, transfer).

Examples::

    nni-bio attack runs/small-cnn-usf-fashion-mnist-s0 --num-images 1000 --eps 0,1/255,2/255,4/255,8/255
    nni-bio attack RUN --gradient bp --attacks fgsm,pgd          # only the exact-gradient view
    nni-bio attack RUN --attacks transfer --surrogate runs/small-cnn-backprop-fashion-mnist-s0
    nni-bio attack --genotype genotype.json --weights model.pt --dataset cifar10 --width 36 --cells 20

Budgets are L-inf in pixel units (images in [0, 1], normalisation inside the model). White-box
attacks run once per gradient view: ``rule`` (the network's own backward, the paper's
convention) and ``bp`` (exact backprop on the same weights; same forward, same clean accuracy).
Writes ``attack.json`` and ``attack.md`` into the run folder (or ``--output``) and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nni_bio.core.errors import NniBioError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attack", help="adversarial accuracy per eps, rule vs exact-gradient view",
                              description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="output folder of nni-bio train")
    p.add_argument("--genotype", metavar="FILE", help="instead of RUN_DIR: a genotype JSON (with --weights)")
    p.add_argument("--weights", metavar="FILE", help="weights for --genotype (model.pt, checkpoint.pt or a state dict)")
    p.add_argument("--dataset", default=None, help="data set (default: the run's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--width", type=int, default=None, help="with --genotype: as used in training")
    p.add_argument("--cells", type=int, default=None, help="with --genotype: as used in training")
    p.add_argument("--auxiliary", action="store_true", help="with --genotype: the network had an auxiliary head")
    p.add_argument("--attacks", default="fgsm,pgd,square", help="comma list of fgsm, pgd, square, transfer")
    p.add_argument("--gradient", default="rule,bp", help="white-box gradient view(s): rule, bp or rule,bp")
    p.add_argument("--eps", default="0,1/255,2/255,4/255,8/255", help="L-inf budgets in pixel units")
    p.add_argument("--num-images", type=int, default=1000, help="the first N test images")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--pgd-alpha", type=float, default=None, help="PGD step as a fraction of eps (default 2.5/steps)")
    p.add_argument("--square-queries", type=int, default=200)
    p.add_argument("--surrogate", metavar="RUN_DIR",
                   help="transfer attack: a run folder whose BP view crafts the images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default=None, help="folder for attack.json/attack.md (default: RUN_DIR)")
    p.set_defaults(run=run)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    from nni_bio.train.final_training import load_model, load_run
    from nni_bio.train.model_spec import describe, genotype_spec
    from nni_bio.evaluate.robustness import (GRADIENTS, AttackSettings, evaluate_robustness, load_test_images, markdown_table,
                                    parse_eps, write_report)

    if bool(args.run_dir) == bool(args.genotype):
        raise NniBioError("give either RUN_DIR (an nni-bio train output folder) or --genotype FILE --weights FILE")
    if args.run_dir:
        net, setup = load_run(args.run_dir, args.device)
        dataset = args.dataset or setup["dataset"]
        split_seed = setup.get("split_seed", 0)
        data_dir = args.data_dir or setup.get("data_dir")
        spec, weights, name = setup["model"], setup["weights"], setup["name"]
    else:
        if not args.weights or not args.dataset:
            raise NniBioError("--genotype needs --weights FILE and --dataset NAME")
        from nni_bio.commands.train import read_genotype

        spec = genotype_spec(read_genotype(args.genotype), width=args.width, cells=args.cells,
                             auxiliary=args.auxiliary)
        net = load_model(spec, args.dataset, args.weights, args.device)
        dataset, split_seed, data_dir = args.dataset, 0, args.data_dir
        weights, name = args.weights, Path(args.weights).stem
    gradients = _split(args.gradient)
    if not gradients or any(g not in GRADIENTS for g in gradients):
        raise NniBioError(f"--gradient takes rule, bp or rule,bp; got {args.gradient!r}")
    settings = AttackSettings(attacks=_split(args.attacks), eps=parse_eps(args.eps), gradients=gradients,
                              num_images=args.num_images, batch_size=args.batch_size, pgd_steps=args.pgd_steps,
                              pgd_alpha=args.pgd_alpha, square_queries=args.square_queries, seed=args.seed)
    surrogate = None
    if args.surrogate:
        surrogate, surrogate_setup = load_run(args.surrogate, args.device)
        if surrogate_setup["dataset"] != dataset:
            raise NniBioError(f"the surrogate was trained on {surrogate_setup['dataset']}, not {dataset}")
    x, y = load_test_images(dataset, args.num_images, data_dir, split_seed)
    print(f"{describe(spec)} ({name}) on {dataset}: {len(y)} test images, attacks {', '.join(settings.attacks)}, "
          f"gradient views {', '.join(gradients)}", flush=True)
    rows = evaluate_robustness(net, dataset, x, y, settings, surrogate=surrogate, surrogate_name=args.surrogate,
                               log=lambda s: print(s, flush=True))
    header = {"run": str(args.run_dir or args.genotype), "name": name, "description": describe(spec), "model": spec,
              "dataset": dataset, "weights": str(weights), "num_images": len(y), "seed": args.seed,
              "surrogate": args.surrogate}
    folder = Path(args.output or args.run_dir or Path(args.weights).parent)
    json_path, md_path = write_report(folder, header, rows)
    print()
    print(markdown_table(rows))
    print(f"\nwritten: {json_path}, {md_path}")
    return 0
