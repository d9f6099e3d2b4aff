"""Where a search spends its time: the supernet step beside its baselines, and a multi-trial trial split in phases.

1. **The op x rule supernet's weight step** (the paper's DARTS space, rules usf/brsf/frsf/fa, C=8, 5 cells,
   batch 16, 16x16 images) beside the same supernet with every rule layer on ``backprop`` and the same
   supernet converted to plain ``nn.Conv2d``/``nn.Linear`` candidates (``nni_bio.to_torch``: what NNI's own
   DARTS would run). The three step in turn, in an order that reverses every round, in one process; the
   table gives the median seconds per step and the ratios (goals: <= 1.10x backprop, <= 1.15x plain torch).
2. **A multi-trial trial, phase by phase**: ``python -m nni_bio.trial`` as NNI starts it, for the shipped
   digits trial (``examples/digits.yml``: the tiny space, 5 epochs on digits) and the Fashion-MNIST study's
   trial (ResNet-8 rule per layer, width 8, 10,000 images), each run once at its own epochs and once as a
   cheap trial (one epoch). A probe on ``PYTHONPATH`` timestamps the phases: **start-up** (process spawn to
   the data loading: interpreter, imports, arguments, the network), **data** (``load_splits``),
   **training** (``train``: every epoch with its validation) and **reporting** (after training to process
   exit: final result, TensorBoard, genotype). The last column is the share of the trial lost to
   start-up (goal for a cheap trial: <= 20 %).

Usage:
    python benchmarks/search_cost.py                 # both parts
    python benchmarks/search_cost.py --part trials   # only the trials (Fashion-MNIST needs its data set)
    python benchmarks/search_cost.py --quick         # small sizes: a smoke test only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "NNI_BIO_PHASE"
SUPERNET_GOALS = (1.10, 1.15)  # op x rule supernet step / backprop supernet, / plain torch supernet (issue 19)
STARTUP_GOAL = 0.20  # share of a cheap trial lost to start-up (issue 19)

PROBE = f'''
import atexit, importlib.abc, importlib.util, sys, time


def _mark(name):
    print("{MARK}", name, repr(time.time()), file=sys.stderr, flush=True)


def _timed(fn, name):
    def wrapper(*args, **kwargs):
        _mark(name + "_start")
        try:
            return fn(*args, **kwargs)
        finally:
            _mark(name + "_end")
    return wrapper


class _Probe(importlib.abc.MetaPathFinder):
    wanted = {{"nni_bio.train.training": "train", "nni_bio.train.trial_runtime": "load_splits"}}

    def find_spec(self, name, path, target=None):
        if name not in self.wanted:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            attribute = self.wanted[name]
            setattr(module, attribute, _timed(getattr(module, attribute), attribute))

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Probe())
atexit.register(_mark, "exit")
'''

TRIALS = {
    "digits": ["--space", "tiny", "--dataset", "digits", "--epochs", "5",
               "--sample", json.dumps({"conv1": "conv_3x3", "conv2": "sep_conv_3x3@usf", "fc": "frsf"})],
    "fashion-mnist": ["--space", "rule_per_layer", "--space-args", json.dumps({"depth": 8, "width": 8}),
                      "--dataset", "fashion-mnist", "--epochs", "9", "--train-limit", "10000", "--batch-size", "128",
                      "--lr", "0.05", "--sample", json.dumps({label: "usf" for label in (
                          "fc", "s1b0c1", "s1b0c2", "s2b0c1", "s2b0c2", "s2b0proj", "s3b0c1", "s3b0c2", "s3b0proj")})],
}


def supernet_rows(args: argparse.Namespace) -> list[str]:
    import torch
    from torch.nn import functional as F

    import nni_bio
    from nni_bio.search_spaces.darts import DartsSpace
    from nni_bio.strategies.supernet import build_supernet
    from nni_bio.train.training import main_output, wire_rules

    torch.set_num_threads(args.threads)
    width, cells, batch, image = (4, 3, 4, 8) if args.quick else (8, 5, 16, 16)

    def build(kind: str) -> torch.nn.Module:
        torch.manual_seed(0)
        space = DartsSpace(in_channels=3, num_classes=10, width=width, num_cells=cells,
                           rules=["usf", "brsf", "frsf", "fa"])
        model = build_supernet(space, "mixture").model
        if kind == "backprop":
            nni_bio.swap_rule(model, "backprop")
        elif kind == "plain torch":
            model = nni_bio.to_torch(model)
        return wire_rules(model)

    kinds = ["op x rule", "backprop", "plain torch"]
    models = {kind: build(kind) for kind in kinds}
    optimizers = {kind: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for kind, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, image, image, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def step(kind: str) -> float:
        start = time.perf_counter()
        optimizers[kind].zero_grad(set_to_none=True)
        F.cross_entropy(main_output(models[kind](x)), y).backward()
        optimizers[kind].step()
        return time.perf_counter() - start

    for kind in kinds:
        step(kind)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_ in range(2 if args.quick else args.rounds):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            times[kind].append(step(kind))
    median = {kind: statistics.median(t) for kind, t in times.items()}
    layers = sum(isinstance(m, nni_bio.RuleLayer) for m in models["op x rule"].modules())
    rows = [f"DARTS op x rule supernet (usf/brsf/frsf/fa, {layers} rule layers), C={width}, {cells} cells, batch {batch}, "
            f"{image}x{image}, {args.threads} threads, median of {len(times['backprop'])} steps each:", "",
            "| supernet | s/step | op x rule / this |", "|---|---|---|"]
    rows += [f"| {kind} | {median[kind]:.3f} | {median['op x rule'] / median[kind]:.2f}x |" for kind in kinds]
    if not args.quick:
        verdicts = [f"<= {goal:.2f}x {kind}: {'met' if median['op x rule'] <= goal * median[kind] else 'missed'}"
                    for kind, goal in (("backprop", SUPERNET_GOALS[0]), ("plain torch", SUPERNET_GOALS[1]))]
        rows += ["", "# goal: op x rule " + ", ".join(verdicts)]
    return rows


def trial_phases(name: str, epochs: int | None, workdir: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "nni_bio.trial", *TRIALS[name], "--output", str(workdir / name)]
    if epochs is not None:
        command[command.index("--epochs") + 1] = str(epochs)
    probe = workdir / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(probe), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, cwd=workdir)
    marks = {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{MARK} (\S+) (\S+)$", done.stderr, re.MULTILINE)}
    if done.returncode != 0 or not {"load_splits_start", "train_end", "exit"} <= set(marks):
        raise SystemExit(f"the {name} trial failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {"start-up": marks["load_splits_start"] - start, "data": marks["load_splits_end"] - marks["load_splits_start"],
            "training": marks["train_end"] - marks["train_start"], "reporting": marks["exit"] - marks["train_end"],
            "total": marks["exit"] - start}


def trial_rows(args: argparse.Namespace) -> list[str]:
    cheap = None
    rows = ["| trial | epochs | start-up s | data s | training s | reporting s | total s | start-up share |",
            "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.trials.split(","):
            for epochs in ([1] if args.quick else [None, 1]):
                p = trial_phases(name, epochs, Path(tmp))
                shown = epochs or TRIALS[name][TRIALS[name].index("--epochs") + 1]
                rows.append(f"| {name} | {shown} | {p['start-up']:.2f} | {p['data']:.2f} | {p['training']:.2f} | "
                            f"{p['reporting']:.2f} | {p['total']:.2f} | {100 * p['start-up'] / p['total']:.0f} % |")
                if name == "fashion-mnist" and epochs == 1 and not args.quick:
                    share = p["start-up"] / p["total"]
                    cheap = (f"# goal: the cheap trial (fashion-mnist, one epoch on 10,000 images) loses <= "
                             f"{100 * STARTUP_GOAL:.0f} % to start-up: {'met' if share <= STARTUP_GOAL else 'missed'} "
                             f"({100 * share:.0f} %)")
    return rows + ([] if cheap is None else ["", cheap])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["all", "supernet", "trials"], default="all")
    p.add_argument("--trials", default="digits,fashion-mnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="supernet steps of each kind")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, 1-minute load {load:.2f} at the start\n")
    if args.part in ("all", "supernet"):
        print("\n".join(supernet_rows(args)), "\n", flush=True)
    if args.part in ("all", "trials"):
        print("\n".join(trial_rows(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
