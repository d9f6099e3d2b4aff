"""What ``--compile`` buys on this machine: eager vs ``torch.compile``'d training steps, compile time included.

For each network (its rules in every layer, or mixed), in one process:

- **compile**: wall time of the first compiled steps until the step time settles (the first ``--warmup``
  steps of the compiled network, which trace, compile and recompile), minus what that many steps cost once
  compiled: the one-time price;
- **eager** and **compiled**: median seconds per training step (forward, loss, backward, SGD step) over
  ``--steps`` steps of each, taken after that in turn (eager, compiled, then compiled, eager, ...), so
  drift of the machine hits both alike;
- **speed-up** = eager / compiled, and **break-even**: the training steps (and epochs of ``--epoch-images``
  images) after which the compile time is paid back; ``never`` when compiled steps are not faster.

Networks: ``resnet8`` (the Fashion-MNIST study's ResNet-8, width 8, 28x28, batch 128), ``tiny`` (the digits
space's CNN, 8x8, batch 32) and ``tiny-supernet`` (its DARTS supernet over usf/fa: every candidate runs).
Rule sets: ``backprop``, ``usf``, ``mixed`` (brsf, dfa, fa, frsf, kp, usf by layer), ``brsf``.

Usage:
    python benchmarks/compile_speed.py                      # inductor (aot_eager where it cannot build)
    python benchmarks/compile_speed.py --backend aot_eager  # traced graphs, no generated code
    python benchmarks/compile_speed.py --quick              # tiny sizes, a smoke test only
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The compile time is what a first run pays: inductor's on-disk caches (compiled graphs, kernels) start
# empty, in a folder of this run's own, unless --warm-cache (read before torch is imported).
if "--warm-cache" not in sys.argv:
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="nni-bio-compile-speed-")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

MIXED = ["brsf", "dfa", "fa", "frsf", "kp", "usf"]


def resnet8(rules: str, quick: bool) -> tuple[nn.Module, tuple[int, int, int], int]:
    from nni_bio.nas.mutables import freeze
    from nni_bio.search_spaces.rule_per_layer import RulePerLayerSpace
    from nni_bio.nas.mutables import search_space_json

    names = MIXED if rules == "mixed" else [rules]
    space = RulePerLayerSpace(in_channels=1, num_classes=10, depth=8, width=4 if quick else 8, rules=names)
    labels = sorted(search_space_json(space))
    sample = {label: names[i % len(names)] for i, label in enumerate(labels)}
    return freeze(space, sample), (1, 28, 28), 16 if quick else 128


def tiny(rules: str, quick: bool) -> tuple[nn.Module, tuple[int, int, int], int]:
    from nni_bio.nas.mutables import freeze
    from nni_bio.search_spaces.tiny import TinySpace

    names = MIXED if rules == "mixed" else [rules]
    space = TinySpace(width=4 if quick else 16, rules=names)
    second = names[1 % len(names)]
    return freeze(space, {"conv1": "conv_3x3", "conv2": f"sep_conv_3x3@{second}", "fc": names[-1]}), (1, 8, 8), 32


def tiny_supernet(rules: str, quick: bool) -> tuple[nn.Module, tuple[int, int, int], int]:
    from nni_bio.search_spaces.tiny import TinySpace
    from nni_bio.strategies.supernet import build_supernet

    names = MIXED if rules == "mixed" else [rules]
    return build_supernet(TinySpace(width=4 if quick else 16, rules=names), "mixture").model, (1, 8, 8), 32


NETWORKS: dict[str, Callable] = {"resnet8": resnet8, "tiny": tiny, "tiny-supernet": tiny_supernet}


def stepper(model: nn.Module, shape: tuple[int, int, int], batch: int) -> Callable[..., list[float]]:
    """``steps(n, forward=None)``: seconds of each of ``n`` training steps on a fixed random batch, with one
    SGD optimizer (momentum) kept from call to call; ``forward`` defaults to the model itself."""
    from nni_bio.train.training import main_output

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def steps(n: int, forward: Callable | None = None) -> list[float]:
        forward = model if forward is None else forward
        times = []
        for _ in range(n):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(main_output(forward(x)), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return times

    return steps


def measure(network: str, rules: str, backend: str, args: argparse.Namespace) -> dict[str, float]:
    import nni_bio
    from nni_bio.train.compiling import compile_model

    torch.manual_seed(0)
    model, shape, batch = NETWORKS[network](rules, args.quick)
    nni_bio.enable_dfa(model) if any(m.rule_name == "dfa" for m in model.modules()
                                     if isinstance(m, nni_bio.RuleLayer)) else None
    model.train()
    steps = stepper(model, shape, batch)
    steps(args.warmup)  # eager warm-up
    torch._dynamo.reset()
    compiled_forward = compile_model(model, backend)
    first = steps(args.warmup, compiled_forward)
    eager, compiled = [], []
    for round_ in range(args.steps):  # eager and compiled steps in turn, the order reversed every round
        pair = [(eager, None), (compiled, compiled_forward)]
        for times, forward in pair if round_ % 2 == 0 else pair[::-1]:
            times += steps(1, forward)
    e, c = statistics.median(eager), statistics.median(compiled)
    compile_seconds = max(0.0, sum(first) - args.warmup * c)
    gain = e - c
    steps_per_epoch = math.ceil(args.epoch_images / batch)
    breakeven = compile_seconds / gain if gain > 0 else math.inf
    return {"eager_ms": 1e3 * e, "compiled_ms": 1e3 * c, "compile_s": compile_seconds, "speedup": e / c,
            "breakeven_steps": breakeven, "breakeven_epochs": breakeven / steps_per_epoch, "batch": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager"])
    p.add_argument("--networks", default="resnet8,tiny,tiny-supernet")
    p.add_argument("--rules", default="backprop,usf,brsf,mixed")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed eager steps; compiled: steps counted as compiling")
    p.add_argument("--epoch-images", type=int, default=10000, help="images per epoch for the break-even in epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes and few steps: a smoke test only")
    p.add_argument("--warm-cache", action="store_true",
                   help="use inductor's usual cache folder (compile times then depend on earlier runs)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 3
    torch.set_num_threads(args.threads)
    from nni_bio.train.compiling import usable_backend

    backend = usable_backend(args.backend)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, backend {backend}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"1-minute load {load:.2f}\n")
    print("| network | rules | batch | eager ms/step | compiled ms/step | speed-up | compile s | "
          f"break-even steps | break-even epochs ({args.epoch_images:,} images) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for network, rules in itertools.product(args.networks.split(","), args.rules.split(",")):
        r = measure(network, rules, backend, args)
        steps = "never" if math.isinf(r["breakeven_steps"]) else f"{r['breakeven_steps']:.0f}"
        epochs = "never" if math.isinf(r["breakeven_epochs"]) else f"{r['breakeven_epochs']:.1f}"
        print(f"| {network} | {rules} | {r['batch']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | "
              f"{r['speedup']:.2f}x | {r['compile_s']:.1f} | {steps} | {epochs} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
