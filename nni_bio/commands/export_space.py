"""``nni-bio export-space SPACE``: the search-space JSON that nnictl's tuners read."""

from __future__ import annotations

import argparse
import json
import sys

from nni_bio.search_spaces import space_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export-space", help="write the nnictl search-space JSON of a search space")
    parser.add_argument("space", help="tiny, rule_per_layer, darts or nb201")
    parser.add_argument("--dataset", default="digits", help="data set the trials train on (sets input shape and classes)")
    parser.add_argument("--space-args", default="{}", help="JSON object of space constructor arguments")
    parser.add_argument("--rules", default=None, help="comma-separated rules (shortcut for space-args 'rules')")
    parser.add_argument("--format", choices=["choice", "nas"], default="choice",
                        help="'choice' for HPO tuners (TPE, Random, Evolution...), 'nas' (layer_choice) for "
                             "RegularizedEvolutionTuner")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    extra = json.loads(args.space_args)
    if args.rules:
        extra["rules"] = [r.strip() for r in args.rules.split(",") if r.strip()]
    text = json.dumps(space_json(args.space, args.dataset, extra, args.format), indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
