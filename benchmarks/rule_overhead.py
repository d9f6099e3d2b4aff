"""Cost of one training step (forward + backward) of a rule layer, relative to the plain torch layer.

For every rule in ``nni_bio.list_rules()`` and four layer kinds (linear; conv2d 3x3 regular,
depthwise and dilated), the rule layer and a plain ``nn.Linear``/``nn.Conv2d`` of the same shape and
weights are timed alternately in the same process, step by step (baseline, rule, rule, baseline,
...), so drift of the machine (frequency, other load) hits both alike. A sample is ``inner`` steps of
each (about ``--target-ms`` of baseline time); the reported figure is the median over ``--repeats``
samples of rule time / baseline time (``--stat min``: fastest rule step / fastest baseline step).
The input requires grad (the layer sits in the middle of a network: its input gradient is part of
the step), parameter gradients are reset to None before every step (``zero_grad()``'s default), and
the upstream gradient is a fixed tensor.

``dfa`` reads the network's output error from its bus; here the bus holds a fixed error of the
right batch size (10 classes), as ``nni_bio.enable_dfa`` would leave it. A rule that cannot build a
layer kind (``softhebb`` on depthwise convs) shows ``n/a``.

Usage:
    python benchmarks/rule_overhead.py                   # 2 threads, CPU, full sizes
    python benchmarks/rule_overhead.py --quick           # small sizes, few repeats (smoke test)
    python benchmarks/rule_overhead.py --rules 'fa,usf' --kinds linear --repeats 50 --times
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import nni_bio
from nni_bio.error_bus import ErrorBus
from nni_bio.errors import UnsupportedLayerError
from nni_bio.layers import RuleLayer

GOAL = 1.10
GOAL_RULES = ("fa", "usf", "frsf", "kp")  # the rules the ratio goal is set for
KINDS = ("linear", "conv3x3", "dw3x3", "dil3x3")
NUM_CLASSES = 10


@dataclass(frozen=True)
class Sizes:
    batch: int
    features: int  # linear: in = out = features
    channels: int
    image: int


FULL = Sizes(batch=64, features=1024, channels=32, image=32)
QUICK = Sizes(batch=16, features=256, channels=16, image=16)


def _layers(kind: str, rule: str, s: Sizes) -> tuple[nn.Module, RuleLayer, tuple[int, ...]]:
    """(plain torch layer, rule layer with the same weights, input shape)."""
    r = nni_bio.get_rule(rule)
    if kind == "linear":
        base, layer, shape = nn.Linear(s.features, s.features), r.linear(s.features, s.features), (s.batch, s.features)
    else:
        c = s.channels
        kw = {"conv3x3": dict(padding=1), "dw3x3": dict(padding=1, groups=c),
              "dil3x3": dict(padding=2, dilation=2)}[kind]
        base, layer = nn.Conv2d(c, c, 3, **kw), r.conv2d(c, c, 3, **kw)
        shape = (s.batch, c, s.image, s.image)
    with torch.no_grad():
        base.weight.copy_(layer.weight)
        base.bias.copy_(layer.bias)
    if nni_bio.get_rule(rule).info.needs_global_error:
        layer.bus = ErrorBus()
        layer.bus.error = torch.randn(s.batch, NUM_CLASSES)
    return base, layer, shape


def _step_fn(module: nn.Module, x: Tensor, grad: Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        module(x).backward(grad)

    return step


def _time(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _sample(steps: list[Callable[[], None]], inner: int) -> tuple[list[float], list[float]]:
    """Seconds of ``inner`` baseline steps and ``inner`` rule steps, interleaved step by step
    (A B B A A B ...): a burst of outside load hits both sides alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for k in range(inner):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            times[which].append(_time(steps[which]))
    return times


@dataclass(frozen=True)
class Result:
    median_ratio: float  # median over samples of (rule time / baseline time)
    min_ratio: float  # best rule step / best baseline step: the least disturbed pair of estimates
    base_ms: float  # median baseline ms per step
    rule_ms: float


def measure(kind: str, rule: str, s: Sizes, repeats: int, target_s: float) -> Result | None:
    """Time one (rule, layer kind) cell; None if the rule cannot build that layer."""
    try:
        base, layer, shape = _layers(kind, rule, s)
    except UnsupportedLayerError:
        return None
    layer.train()
    x = torch.randn(shape, requires_grad=True)
    with torch.no_grad():
        grad = torch.randn_like(base(x))
    steps = [_step_fn(base, x, grad), _step_fn(layer, x, grad)]
    for step in steps * 3:  # warm-up: allocator, kernels, lazy rule state
        step()
    inner = max(1, round(target_s / min(_time(steps[0]) for _ in range(3))))
    ratios, per_step = [], ([], [])
    for _ in range(repeats):
        base_t, rule_t = _sample(steps, inner)
        ratios.append(sum(rule_t) / sum(base_t))
        per_step[0].extend(base_t)
        per_step[1].extend(rule_t)
    return Result(statistics.median(ratios), min(per_step[1]) / min(per_step[0]),
                  1e3 * statistics.median(per_step[0]), 1e3 * statistics.median(per_step[1]))


def _select(names: list[str], patterns: str | None) -> list[str]:
    if not patterns:
        return names
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in wanted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="samples per cell (default 21, quick 5)")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="baseline time per sample, in ms (default 60, quick 10)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: a smoke test, not a measurement")
    parser.add_argument("--rules", default=None, help="comma-separated fnmatch patterns over rule names (default: all)")
    parser.add_argument("--kinds", default=None, help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--times", action="store_true", help="also print the median ms per step of both layers")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="median: median over samples of the time ratio (default); min: fastest rule step / "
                             "fastest baseline step (less sensitive to a busy machine)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (5 if args.quick else 21)
    target = (args.target_ms or (10.0 if args.quick else 60.0)) / 1e3
    rules = _select(nni_bio.list_rules(), args.rules)
    kinds = _select(list(KINDS), args.kinds)
    if not rules or not kinds:
        parser.error("no rule or layer kind selected")

    load = os.getloadavg()[0]
    print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU; "
          f"linear {sizes.batch}x{sizes.features}->{sizes.features}; conv batch {sizes.batch}, "
          f"{sizes.channels} channels, {sizes.image}x{sizes.image}; {repeats} repeats; "
          + ("fastest rule step / fastest BP step" if args.stat == "min" else "median rule/BP time per step"))
    header = ["rule"] + kinds
    rows, misses = [], []
    for rule in rules:
        cells = []
        for kind in kinds:
            result = measure(kind, rule, sizes, repeats, target)
            if result is None:
                cells.append("n/a")
                continue
            ratio = result.min_ratio if args.stat == "min" else result.median_ratio
            cells.append(f"{ratio:.2f}" + (f" ({result.base_ms:.2f}/{result.rule_ms:.2f} ms)" if args.times else ""))
            if rule in GOAL_RULES and ratio > GOAL:
                misses.append(f"{rule}/{kind} {ratio:.2f}")
        rows.append([rule] + cells)
        print(f"  measured {rule}", file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"# 1-minute load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")
    goal = [r for r in GOAL_RULES if r in rules]
    if goal and args.quick:
        print(f"# quick mode: layers this small measure the fixed per-call cost, not the goal (<= {GOAL:.2f})")
    elif goal:
        verdict = "met" if not misses else "missed: " + ", ".join(misses)
        print(f"# goal <= {GOAL:.2f} for {', '.join(goal)}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
