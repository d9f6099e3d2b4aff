"""Multi-trial search from Python, without YAML or nnictl: NNI's NasExperiment with one of its strategies.

    python examples/python_api.py                                  # regularized evolution, 6 trials, ~1 min on CPU
    python examples/python_api.py --strategy ppo --max-trials 8    # NNI's PolicyBasedRL (Python only)
    python examples/python_api.py --strategy tpe --engine ts       # trials as processes under the NNI manager + web UI

Strategies: evolution, random, tpe, ppo (NNI's PolicyBasedRL, PPO), grid, policy_gradient (nni-bio's REINFORCE tuner,
the one examples/digits-policy-gradient.yml runs under nnictl). Prints every trial, then the best genotype, which
``nni-bio train`` / ``space_cls.build_network(genotype)`` rebuild.
"""

from __future__ import annotations

import argparse
import json

from nni_bio.strategies.multi_trial import STRATEGIES, run_multi_trial


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--strategy", default="evolution", choices=sorted(STRATEGIES))
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=8, help="channels of the tiny space's convs")
    parser.add_argument("--engine", default="sequential", choices=["sequential", "ts"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--working-dir", default=None, help="NNI's experiment folder (default ~/nni-experiments)")
    args = parser.parse_args(argv)

    space_args = {"width": args.width} if args.space == "tiny" else {}
    result = run_multi_trial(args.space, args.strategy, dataset=args.dataset, max_trials=args.max_trials,
                             epochs=args.epochs, space_args=space_args, engine=args.engine, seed=args.seed,
                             working_dir=args.working_dir)
    print(f"\n{args.strategy} on {args.space}/{args.dataset}: {len(result.trials)} trials")
    for trial in result.trials:
        metric = "-" if trial.metric is None else f"{trial.metric:.4f}"
        print(f"  #{trial.index:<3} {trial.status:<8} val acc {metric:<7} {json.dumps(trial.sample, sort_keys=True)}")
    if result.best is None:
        print("no architecture trained successfully")
        return {}
    print(f"best: val acc {result.best.metric:.4f}\ngenotype: {json.dumps(result.genotype)}")
    return result.genotype


if __name__ == "__main__":
    main()
