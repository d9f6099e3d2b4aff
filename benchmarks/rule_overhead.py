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

**Bare.** On the linear layer, ``fa``, ``usf``, ``frsf``, ``brsf`` and ``kp`` also show ``bare``: the rule's
math in a bare ``autograd.Function`` with torch's kernels and nothing of nni-bio (``BareLinear``: B built
in the backward in memory kept from step to step, then g @ B), timed in the same interleaved samples.
The distance between the rule layer and ``bare`` is nni-bio's machinery; ``bare`` above the goal means
the math itself costs that much on the machine, with torch's kernels (a fused kernel could do better).

``--processes N`` runs the measurement in N fresh processes one after the other and shows, per
cell, the median over the processes and their lowest-highest. On a shared 2-vCPU machine the linear
cell's figures move by more than the goal's margin from one run to the next, minutes apart (see
``benchmarks/README.md``); one process is one draw of that.

``--biotorch PATH`` adds, for every rule BioTorch 0.0.16 has (backprop, fa, usf, frsf, brsf, dfa), a
second column per layer kind: BioTorch's layer of the same shape and weights, timed in the same
interleaved samples against the same baseline. BioTorch is installed apart, without its pinned
dependencies (it would downgrade torch), into a folder that only this flag puts on ``sys.path``::

    .venv/bin/pip install --target /tmp/biotorch biotorch==0.0.16 --no-deps

``--clock cpu`` times with the CPU time of the process (of the calling thread with ``--threads 1``)
instead of wall time: on a machine shared with other jobs, time spent waiting for a CPU is not
counted, so the ratios stay usable under load (use it with ``--threads 1``; with more threads,
OpenMP's spin-waiting counts too).

Usage:
    python benchmarks/rule_overhead.py                   # 2 threads, CPU, full sizes
    python benchmarks/rule_overhead.py --quick           # small sizes, few repeats (smoke test)
    python benchmarks/rule_overhead.py --rules 'fa,usf' --kinds linear --repeats 50 --times
    python benchmarks/rule_overhead.py --threads 1 --clock cpu --biotorch /tmp/biotorch
    python benchmarks/rule_overhead.py --kinds linear --processes 5
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import nni_bio
from nni_bio.core.error_bus import ErrorBus
from nni_bio.core.errors import UnsupportedLayerError
from nni_bio.core.layers import RuleLayer

GOAL = 1.05  # issue 19: every built-in rule within 1.05x of the torch layer
GOAL_RULES = ("brsf", "dfa", "fa", "frsf", "kp", "usf")  # every built-in rule; backprop is the noise row
BIOTORCH_RULES = {"backprop": "backpropagation", "fa": "fa", "usf": "usf", "frsf": "frsf", "brsf": "brsf",
                  "dfa": "dfa"}  # nni-bio name -> biotorch.layers module
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
        base, layer = nn.Conv2d(c, c, 3, **_conv_args(kind, c)), r.conv2d(c, c, 3, **_conv_args(kind, c))
        shape = (s.batch, c, s.image, s.image)
    _copy_weights(layer, base)
    if nni_bio.get_rule(rule).info.needs_global_error:
        layer.bus = ErrorBus()
        layer.bus.error = torch.randn(s.batch, NUM_CLASSES)
    return base, layer, shape


def _conv_args(kind: str, channels: int) -> dict[str, int]:
    return {"conv3x3": dict(padding=1), "dw3x3": dict(padding=1, groups=channels),
            "dil3x3": dict(padding=2, dilation=2)}[kind]


def _copy_weights(source: nn.Module, target: nn.Module) -> None:
    with torch.no_grad():
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)


def _biotorch_layer(kind: str, rule: str, s: Sizes, like: RuleLayer) -> nn.Module | None:
    """BioTorch's layer for ``rule`` with ``like``'s shape and weights; None where BioTorch has no
    such rule or cannot build the layer (its DFA conv cannot be grouped)."""
    if rule not in BIOTORCH_RULES:
        return None
    module = importlib.import_module(f"biotorch.layers.{BIOTORCH_RULES[rule]}")
    extra = {"output_dim": NUM_CLASSES, "layer_config": {}} if rule == "dfa" else {}
    if kind == "linear":
        layer = module.Linear(s.features, s.features, **extra)
    else:
        args = _conv_args(kind, s.channels)
        if rule == "dfa" and args.get("groups", 1) != 1:
            return None
        layer = module.Conv2d(s.channels, s.channels, kernel_size=3, **args, **extra)
    _copy_weights(like, layer)
    if rule == "dfa":  # what BioTorch's DFA model wrapper sets before the backward
        layer.loss_gradient = like.bus.error
    # BioTorch's DFA uses a module backward hook of the deprecated kind; torch warns at every call
    warnings.filterwarnings("ignore", message="Using a non-full backward hook", category=FutureWarning)
    return layer


def _step_fn(module: nn.Module, x: Tensor, grad: Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        module(x).backward(grad)

    return step


class _BareLinearRule(torch.autograd.Function):
    """A linear layer whose input gradient is ``send(g)`` (g @ B); exact weight and bias gradients; a learned
    B (``kp``) receives a copy of W's gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, learned: Tensor | None,
                send: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.send, ctx.learned = send, learned is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        gw = g.t() @ x
        return ctx.send(g), gw, g.sum(0), (gw.clone() if ctx.learned else None), None


class BareLinear(nn.Module):
    """A built-in rule's math in a bare ``autograd.Function``, with torch's kernels and nothing of nni-bio:
    what the rule costs on this machine before any machinery (a reference for the rule layer's figure).

    B is built in the backward in memory kept from step to step: ``fa`` a fixed B; ``usf`` sign(W), its
    scale applied to the smaller g @ sign(W); ``frsf``/``brsf`` sign(W) * M (two passes: ``torch.copysign``
    is one, but slower, and wrong at W = 0); ``kp`` a learned B given a copy of W's gradient.
    """

    RULES = ("fa", "usf", "frsf", "brsf", "kp")
    SCALE = 0.03  # usf's s

    def __init__(self, like: nn.Linear, rule: str):
        super().__init__()
        if rule not in self.RULES:
            raise ValueError(f"no bare reference for {rule!r}; one of {', '.join(self.RULES)}")
        self.rule = rule
        self.weight, self.bias = nn.Parameter(like.weight.detach().clone()), nn.Parameter(like.bias.detach().clone())
        w = self.weight.detach()
        self.learned = nn.Parameter(torch.randn_like(w)) if rule == "kp" else None
        self.feedback = self.learned.detach() if rule == "kp" else torch.randn_like(w)  # fa's (and kp's) B
        self.magnitude = torch.rand_like(w)  # frsf's and brsf's M
        self.scratch = torch.empty_like(w)

    def send(self, g: Tensor) -> Tensor:
        """g @ B."""
        if self.rule in ("fa", "kp"):
            return g @ self.feedback
        sign = torch.sign(self.weight.detach(), out=self.scratch)
        if self.rule == "usf":
            return (g @ sign).mul_(self.SCALE)
        return g @ sign.mul_(self.magnitude)

    def forward(self, x: Tensor) -> Tensor:
        return _BareLinearRule.apply(x, self.weight, self.bias, self.learned, self.send)


def _time(step: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    step()
    return clock() - start


def _sample(steps: list[Callable[[], None]], inner: int, clock: Callable[[], float]) -> list[list[float]]:
    """Seconds of ``inner`` steps of each layer, interleaved step by step in an order that rotates
    and reverses (A B C, C B A, B C A, ...): a burst of outside load hits every layer alike."""
    times: list[list[float]] = [[] for _ in steps]
    order = list(range(len(steps)))
    for k in range(inner):
        turn = order[k % len(order):] + order[:k % len(order)]
        for which in (turn if k % 2 == 0 else reversed(turn)):
            times[which].append(_time(steps[which], clock))
    return times


@dataclass(frozen=True)
class Result:
    median_ratio: float  # median over samples of (rule time / baseline time)
    min_ratio: float  # best rule step / best baseline step: the least disturbed pair of estimates
    base_ms: float  # median baseline ms per step
    rule_ms: float


@dataclass(frozen=True)
class Cell:
    """One (rule, layer kind) cell; None where a layer cannot be built or a figure does not apply."""

    ours: Result | None
    bio: Result | None = None  # BioTorch's layer
    bare: Result | None = None  # the rule's math in a bare autograd.Function (BareLinear)


def measure(kind: str, rule: str, s: Sizes, repeats: int, target_s: float,
            clock: Callable[[], float] = time.perf_counter, biotorch: bool = False) -> Cell:
    """Time one (rule, layer kind) cell: nni-bio's layer, with ``biotorch`` BioTorch's, and for a built-in rule
    on a linear layer :class:`BareLinear`, each against the plain torch layer, in the same interleaved samples."""
    try:
        base, layer, shape = _layers(kind, rule, s)
    except UnsupportedLayerError:
        return Cell(None)
    bio = _biotorch_layer(kind, rule, s, layer) if biotorch else None
    bare = BareLinear(base, rule) if kind == "linear" and rule in BareLinear.RULES else None
    modules = [base, layer] + ([bio] if bio is not None else []) + ([bare] if bare is not None else [])
    for module in modules:
        module.train()
    x = torch.randn(shape, requires_grad=True)
    with torch.no_grad():
        grad = torch.randn_like(base(x))
    steps = [_step_fn(module, x, grad) for module in modules]
    for step in steps * 3:  # warm-up: allocator, kernels, lazy rule state
        step()
    inner = max(2, round(target_s / min(_time(steps[0], clock) for _ in range(3))))
    ratios: list[list[float]] = [[] for _ in modules]
    per_step: list[list[float]] = [[] for _ in modules]
    for _ in range(repeats):
        times = _sample(steps, inner, clock)
        for i, t in enumerate(times):
            ratios[i].append(sum(t) / sum(times[0]))
            per_step[i].extend(t)

    def result(i: int) -> Result:
        return Result(statistics.median(ratios[i]), min(per_step[i]) / min(per_step[0]),
                      1e3 * statistics.median(per_step[0]), 1e3 * statistics.median(per_step[i]))

    return Cell(result(1), result(2) if bio is not None else None,
                result(len(modules) - 1) if bare is not None else None)


def _select(names: list[str], patterns: str | None) -> list[str]:
    if not patterns:
        return names
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in wanted)]


def collect(rules: list[str], kinds: list[str], sizes: Sizes, repeats: int, target_s: float,
            clock: Callable[[], float], biotorch: bool) -> dict[str, dict[str, dict[str, dict | None]]]:
    """rule -> kind -> ``ours``/``bio``/``bare`` -> the fields of a :class:`Result` (None: no figure)."""
    cells: dict[str, dict[str, dict[str, dict | None]]] = {}
    for rule in rules:
        cells[rule] = {}
        for kind in kinds:
            cell = measure(kind, rule, sizes, repeats, target_s, clock, biotorch=biotorch)
            cells[rule][kind] = {name: (asdict(r) if r is not None else None)
                                 for name, r in (("ours", cell.ours), ("bio", cell.bio), ("bare", cell.bare))}
        print(f"  measured {rule}", file=sys.stderr, flush=True)
    return cells


@dataclass(frozen=True)
class Figure:
    """A figure over processes: the median of their ratios, their range, median ms per step."""

    ratio: float
    low: float
    high: float
    base_ms: float
    rule_ms: float


def combine(runs: list[dict], rule: str, kind: str, name: str, stat: str) -> Figure | None:
    results = [run[rule][kind][name] for run in runs if run[rule][kind][name] is not None]
    if not results:
        return None
    ratios = [r["min_ratio" if stat == "min" else "median_ratio"] for r in results]
    return Figure(statistics.median(ratios), min(ratios), max(ratios),
                  statistics.median(r["base_ms"] for r in results), statistics.median(r["rule_ms"] for r in results))


def _in_fresh_processes(argv: list[str], processes: int) -> list[dict]:
    """Run this script ``processes`` times, each in a new process, and return what each measured."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(processes):
            print(f"# process {i + 1} of {processes}", file=sys.stderr, flush=True)
            path = os.path.join(folder, f"{i}.json")
            subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--processes", "1", "--emit", path],
                           check=True)
            with open(path) as f:
                runs.append(json.load(f))
    return runs


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
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (default); cpu: CPU time of the process (of the thread with "
                             "--threads 1), which leaves out time spent waiting for a busy machine's CPUs")
    parser.add_argument("--biotorch", metavar="PATH", default=None,
                        help="folder holding BioTorch 0.0.16 (pip install --target PATH biotorch==0.0.16 --no-deps): "
                             "adds a BioTorch column per layer kind")
    parser.add_argument("--processes", type=int, default=1,
                        help="measure in this many fresh processes, one after the other, and show per cell the "
                             "median over them and their range (default 1)")
    parser.add_argument("--emit", metavar="JSON", default=None, help=argparse.SUPPRESS)  # a child of --processes
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = time.perf_counter if args.clock == "wall" else (
        time.thread_time if args.threads == 1 else time.process_time)
    if args.biotorch:
        sys.path.insert(0, os.path.abspath(args.biotorch))
        try:
            import biotorch  # noqa: F401
        except ImportError as err:
            parser.error(f"cannot import biotorch from {args.biotorch} ({err}); install it there with "
                         f".venv/bin/pip install --target {args.biotorch} biotorch==0.0.16 --no-deps")
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (5 if args.quick else 21)
    target = (args.target_ms or (10.0 if args.quick else 60.0)) / 1e3
    rules = _select(nni_bio.list_rules(), args.rules)
    kinds = _select(list(KINDS), args.kinds)
    if not rules or not kinds:
        parser.error("no rule or layer kind selected")

    load = os.getloadavg()[0]
    if args.processes > 1:
        runs = _in_fresh_processes(list(sys.argv[1:] if argv is None else argv), args.processes)
    else:
        runs = [collect(rules, kinds, sizes, repeats, target, clock, bool(args.biotorch))]
        if args.emit:
            with open(args.emit, "w") as f:
                json.dump(runs[0], f)
            return 0
    print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU; "
          f"linear {sizes.batch}x{sizes.features}->{sizes.features}; conv batch {sizes.batch}, "
          f"{sizes.channels} channels, {sizes.image}x{sizes.image}; {repeats} repeats; {args.clock} clock; "
          + ("fastest rule step / fastest BP step" if args.stat == "min" else "median rule/BP time per step"))
    header = ["rule"] + [h for kind in kinds for h in ([kind, f"{kind} BioTorch"] if args.biotorch else [kind])]
    rows, misses, bares, comparisons = [], [], [], []
    for rule in rules:
        cells = []
        for kind in kinds:
            ours, bio, bare = (combine(runs, rule, kind, name, args.stat) for name in ("ours", "bio", "bare"))
            for result, library in ((ours, "nni-bio"), (bio, "BioTorch")):
                if library == "BioTorch" and not args.biotorch:
                    continue
                if result is None:
                    cells.append("n/a" if library == "nni-bio" or rule in BIOTORCH_RULES else "-")
                    continue
                spread = f" [{result.low:.2f}-{result.high:.2f}]" if args.processes > 1 else ""
                reference = f" bare {bare.ratio:.2f}" if library == "nni-bio" and bare is not None else ""
                times = f" ({result.base_ms:.2f}/{result.rule_ms:.2f} ms)" if args.times else ""
                cells.append(f"{result.ratio:.2f}{spread}{reference}{times}")
                if library == "nni-bio" and rule in GOAL_RULES and result.ratio > GOAL:
                    misses.append(f"{rule}/{kind} {result.ratio:.2f}"
                                  + (f" (bare {bare.ratio:.2f})" if bare is not None else ""))
            if bare is not None and rule in GOAL_RULES and bare.ratio > GOAL:
                bares.append(f"{rule}/{kind} {bare.ratio:.2f}")
            if ours is not None and bio is not None and rule != "backprop":  # backprop: plain torch in both
                comparisons.append((rule, kind, ours.ratio, bio.ratio))
        rows.append([rule] + cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"# 1-minute load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")
    if args.processes > 1:
        print(f"# each figure: the median over {args.processes} fresh processes [lowest-highest]")
    if any(runs[0][r][k]["bare"] is not None for r in rules for k in kinds):
        print("# bare: the rule's math in a bare autograd.Function with torch's kernels (BareLinear), "
              "in the same samples")
    goal = [r for r in GOAL_RULES if r in rules]
    if goal and args.quick:
        print(f"# quick mode: layers this small measure the fixed per-call cost, not the goal (<= {GOAL:.2f})")
    elif goal:
        verdict = "met" if not misses else "missed: " + ", ".join(misses)
        print(f"# goal <= {GOAL:.2f} for {', '.join(goal)}: {verdict}")
        if bares:
            print(f"# the rule's math alone, in a bare function, is above the goal on: {', '.join(bares)}")
    if args.biotorch:
        # the noise of the run: how far the backprop row (the same plain layer on both sides) strays from 1
        noise = max([abs(float(c.split()[0]) - 1) for c in rows[rules.index("backprop")][1::2]
                     if c not in ("n/a", "-")] if "backprop" in rules else [0.0])
        slower = [f"{r}/{k} {a:.2f} vs {b:.2f}" for r, k, a, b in comparisons if a > b + max(noise, 0.02)]
        close = [f"{r}/{k}" for r, k, a, b in comparisons if b < a <= b + max(noise, 0.02)]
        print(f"# nni-bio slower than BioTorch by more than the noise ({max(noise, 0.02):.2f}, backprop row): "
              + ("on no cell" if not slower else ", ".join(slower))
              + (f"; within the noise: {', '.join(close)}" if close else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
