"""The GPU check: correctness and speed of nni-bio on one CUDA GPU, in one run of a few minutes.

Prints a Markdown table, one row per measurement:

1. ``grads``: every registered rule's gradients on the GPU against the CPU (a small model per rule:
   conv, grouped conv where the rule supports it, linear, BatchNorm, a backprop head; DFA wired),
   with TF32 off: largest relative error over inputs and parameters.
2. ``amp``: bf16 and fp16 (with a GradScaler) for every rule: cosine between the mixed-precision and
   the fp32 gradient of one batch, then one epoch of ``nni_bio.train.training.train`` with that ``amp``
   (finite losses).
3. ``supernet``: the DARTS op x rule supernet (the paper's search: C=16, 8 cells, batch 64, 32x32,
   rules usf/brsf/frsf/fa, 20 candidates per edge) against the same supernet with every rule layer
   swapped to backprop (the same candidates, plain convolutions): time per weight step (forward,
   backward, clipping, SGD) and peak memory. Goal <= 1.2x for both. Also the op x rule supernet with
   partial-channel edges (k=4).
4. ``final``: BIODARTS at C=36, 20 cells (auxiliary head, drop path 0.2, batch 96, 32x32), training
   images/s in fp32, bf16, fp16 and bf16 + channels-last.
5. ``ddp``: one DistributedDataParallel step in a one-process NCCL group, gradients against the
   same step without DDP.
6. ``compile``: ``torch.compile`` (inductor) of a model mixing every built-in rule, gradients
   against eager mode, compile time.
7. ``cudagraph``: a training step (forward and backward) of fa/usf/frsf/kp layers captured in a
   CUDA graph and replayed, against eager mode.

``--dry-run``: tiny sizes on the CPU, gloo instead of NCCL, ``aot_eager`` instead of inductor, no
CUDA graph; a few seconds, for the test suite. Speed goals are not judged then. The script exits 1
when a correctness check fails (or a goal is missed in a real run), 0 otherwise.

Usage:
    python benchmarks/gpu_check.py                        # on cuda:0, about 3-5 minutes
    python benchmarks/gpu_check.py --checks grads,amp     # a subset
    python benchmarks/gpu_check.py --dry-run              # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nni_bio
from nni_bio.core.error_bus import main_output

CHECKS = ("grads", "amp", "supernet", "final", "ddp", "compile", "cudagraph")
GRAD_TOLERANCE = 1e-3  # relative, fp32 with TF32 off: summation order and algorithms only
AMP_COSINE = 0.98  # mixed-precision gradient vs fp32, per rule
SUPERNET_GOAL = 1.2  # op x rule supernet / plain supernet with the same candidates
BIO_RULES = ("usf", "brsf", "frsf", "fa")  # the DARTS space's default rules


@dataclass
class Sizes:
    batch: int
    image: int
    channels: int  # of the small per-rule models
    supernet_width: int
    supernet_cells: int
    supernet_batch: int
    supernet_rules: tuple[str, ...]
    partial_channels: int
    final_width: int
    final_cells: int
    final_batch: int
    steps: int  # timed steps per speed measurement
    warmup: int


FULL = Sizes(batch=8, image=16, channels=16, supernet_width=16, supernet_cells=8, supernet_batch=64,
             supernet_rules=BIO_RULES, partial_channels=4, final_width=36, final_cells=20, final_batch=96, steps=10,
             warmup=3)
DRY = Sizes(batch=4, image=8, channels=4, supernet_width=4, supernet_cells=3, supernet_batch=4,
            supernet_rules=("usf", "fa"), partial_channels=2, final_width=4, final_cells=3, final_batch=4, steps=1,
            warmup=1)


@dataclass
class Row:
    check: str
    what: str
    result: str
    goal: str = ""
    ok: bool | None = None  # None: a measurement without a verdict


class Context:
    def __init__(self, device: torch.device, sizes: Sizes, dry_run: bool):
        self.device, self.sizes, self.dry_run = device, sizes, dry_run

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def small_model(rule: str, channels: int, image: int, num_classes: int = 10) -> nn.Module:
    """conv -> BN -> ReLU -> grouped conv (if the rule has them) -> ReLU -> linear -> ReLU -> backprop head."""
    r, bp = nni_bio.get_rule(rule), nni_bio.get_rule("backprop")
    layers: list[nn.Module] = [r.conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
    if r.info.supports_groups:
        layers += [r.conv2d(channels, channels, 3, padding=1, groups=2), nn.ReLU()]
    layers += [nn.Flatten(), r.linear(channels * image * image, 32), nn.ReLU(), bp.linear(32, num_classes)]
    return nni_bio.enable_dfa(nn.Sequential(*layers))


def mixed_model(channels: int, image: int, num_classes: int = 10) -> nn.Module:
    """One layer per built-in rule, in sequence (brsf first: the input layer)."""
    g = nni_bio.get_rule
    model = nn.Sequential(
        g("brsf").conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        g("usf").conv2d(channels, channels, 3, padding=1, groups=2), nn.ReLU(),
        g("frsf").conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        g("fa").conv2d(channels, channels, 1), nn.ReLU(), nn.Flatten(),
        g("kp").linear(channels * image * image, 32), nn.ReLU(),
        g("dfa").linear(32, 32), nn.ReLU(), g("backprop").linear(32, num_classes))
    return nni_bio.enable_dfa(model)


def batch(ctx: Context, n: int, image: int, seed: int = 0, classes: int = 10) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, image, image, generator=g), torch.randint(0, classes, (n,), generator=g)


def gradients(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """Input gradient then parameter gradients of one cross-entropy backward (train mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(main_output(model(x)), y).backward()
    return [x.grad] + [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def relative_error(a: list[Tensor], b: list[Tensor]) -> float:
    worst = 0.0
    for ta, tb in zip(a, b):
        ta, tb = ta.detach().double().cpu(), tb.detach().double().cpu()
        worst = max(worst, float((ta - tb).norm() / ta.norm().clamp_min(1e-30)))
    return worst


def cosine(a: list[Tensor], b: list[Tensor]) -> float:
    fa = torch.cat([t.detach().double().cpu().flatten() for t in a])
    fb = torch.cat([t.detach().double().cpu().flatten() for t in b])
    return float(fa @ fb / (fa.norm() * fb.norm()).clamp_min(1e-30))


def timed(ctx: Context, step: Callable[[], None], steps: int, warmup: int) -> float:
    """Seconds per call of ``step`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    ctx.sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ctx.sync()
    return (time.perf_counter() - start) / steps


def peak_memory(ctx: Context, run: Callable[[], None]) -> float | None:
    """Peak GPU memory (GiB) allocated while ``run`` runs; None on the CPU."""
    if not ctx.cuda:
        run()
        return None
    ctx.sync()
    torch.cuda.reset_peak_memory_stats(ctx.device)
    base = torch.cuda.memory_allocated(ctx.device)
    run()
    ctx.sync()
    return (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**30


def _mib(gib: float | None) -> str:
    return "n/a (CPU)" if gib is None else f"{gib:.2f} GiB"


# -- the checks ------------------------------------------------------------------------------------


def check_grads(ctx: Context) -> list[Row]:
    s, rows = ctx.sizes, []
    with no_tf32():
        for rule in nni_bio.list_rules():
            torch.manual_seed(0)
            model = small_model(rule, s.channels, s.image)
            twin = copy.deepcopy(model).to(ctx.device)
            x, y = batch(ctx, s.batch, s.image)
            error = relative_error(gradients(model, x, y),
                                   gradients(twin, x.to(ctx.device), y.to(ctx.device)))
            rows.append(Row("grads", f"{rule}: {ctx.device.type} vs CPU gradients (input, every parameter)",
                            f"max relative error {error:.1e}", f"<= {GRAD_TOLERANCE:.0e}", error <= GRAD_TOLERANCE))
    return rows


def check_amp(ctx: Context) -> list[Row]:
    from torch.utils.data import TensorDataset

    from nni_bio.train.training import TrainConfig, scaled_backward, train

    s, rows = ctx.sizes, []
    rules = nni_bio.list_rules()
    for mode, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        worst, worst_rule, losses_ok, failed = 1.0, "", True, []
        for rule in rules:
            torch.manual_seed(0)
            model = small_model(rule, s.channels, s.image).to(ctx.device)
            twin = copy.deepcopy(model)  # the same rule state (brSF: the same draw) for the fp32 reference
            x, y = (t.to(ctx.device) for t in batch(ctx, s.batch, s.image))
            with no_tf32():
                reference = gradients(twin, x, y)[1:]
            scaler = torch.amp.GradScaler(ctx.device.type, enabled=mode == "fp16")
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
            model.zero_grad(set_to_none=True)
            with torch.autocast(ctx.device.type, dtype=dtype):
                loss = F.cross_entropy(main_output(model(x)), y)
            with scaled_backward(scaler):
                scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            mixed = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
            c = cosine(reference, mixed)
            if c < worst:
                worst, worst_rule = c, rule
            data = TensorDataset(*batch(ctx, 4 * s.batch, s.image, seed=1))
            result = train(small_model(rule, s.channels, s.image), data, None,
                           TrainConfig(epochs=1, batch_size=s.batch, amp=mode, device=str(ctx.device), progress=False))
            if not math.isfinite(result.final.train_loss):
                losses_ok = False
                failed.append(rule)
        rows.append(Row("amp", f"{mode}{' + GradScaler' if mode == 'fp16' else ''}: gradient cosine vs fp32, "
                        f"{len(rules)} rules", f"min {worst:.4f} ({worst_rule})", f">= {AMP_COSINE}",
                        worst >= AMP_COSINE))
        rows.append(Row("amp", f"{mode}: one epoch of nni_bio.train.training.train per rule",
                        "finite losses" if losses_ok else f"non-finite loss: {', '.join(failed)}", "finite",
                        losses_ok))
    return rows


def _supernet(ctx: Context, *, plain: bool, partial_channels: int = 1) -> tuple[nn.Module, list[nn.Parameter], int]:
    from nni_bio.search_spaces.darts import DartsSpace
    from nni_bio.strategies.supernet import build_supernet
    from nni_bio.train.training import wire_rules

    s = ctx.sizes
    torch.manual_seed(0)
    space = DartsSpace(in_channels=3, num_classes=10, width=s.supernet_width, num_cells=s.supernet_cells,
                       rules=list(s.supernet_rules))
    supernet = build_supernet(space, "mixture", partial_channels=partial_channels)
    model = supernet.model
    if plain:
        nni_bio.swap_rule(model, "backprop")
    wire_rules(model.to(ctx.device))
    layers = sum(1 for m in model.modules() if isinstance(m, nni_bio.core.layers.RuleLayer))
    return model, supernet.weights, layers


def check_supernet(ctx: Context) -> list[Row]:
    s, rows, results = ctx.sizes, [], {}
    x, y = (t.to(ctx.device) for t in batch(ctx, s.supernet_batch, s.image if ctx.dry_run else 32))
    k = s.partial_channels
    for name, plain, k in (("op x rule", False, 1), ("plain (backprop)", True, 1), (f"op x rule, k={k}", False, k)):
        model, weights, layers = _supernet(ctx, plain=plain, partial_channels=k)
        optimizer = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(main_output(model(x)), y).backward()
            nn.utils.clip_grad_norm_(weights, 5.0)
            optimizer.step()

        model.train()
        seconds = timed(ctx, step, s.steps, s.warmup)
        memory = peak_memory(ctx, step)
        results[name] = (seconds, memory)
        rows.append(Row("supernet", f"DARTS {name} supernet ({len(s.supernet_rules)} rules, {layers} rule layers), "
                        f"C={s.supernet_width}, {s.supernet_cells} cells, batch {s.supernet_batch}: weight step",
                        f"{1e3 * seconds:.1f} ms, peak {_mib(memory)}"))
        del model, weights, optimizer
        if ctx.cuda:
            torch.cuda.empty_cache()
    (t_rule, m_rule), (t_plain, m_plain) = results["op x rule"], results["plain (backprop)"]
    judge = not ctx.dry_run
    rows.append(Row("supernet", "op x rule / plain: step time", f"{t_rule / t_plain:.2f}x",
                    f"<= {SUPERNET_GOAL}", (t_rule / t_plain <= SUPERNET_GOAL) if judge else None))
    if m_rule is not None and m_plain:
        rows.append(Row("supernet", "op x rule / plain: peak memory", f"{m_rule / m_plain:.2f}x",
                        f"<= {SUPERNET_GOAL}", (m_rule / m_plain <= SUPERNET_GOAL) if judge else None))
    return rows


def check_final(ctx: Context) -> list[Row]:
    from nni_bio.search_spaces.darts_net import BIODARTS, build_network
    from nni_bio.train.training import scaled_backward

    s, rows, speeds = ctx.sizes, [], {}
    image = s.image if ctx.dry_run else 32
    x, y = (t.to(ctx.device) for t in batch(ctx, s.final_batch, image))
    modes = [("fp32", None, False), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
             ("bf16 + channels-last", torch.bfloat16, True)]
    for name, dtype, channels_last in modes:
        torch.manual_seed(0)
        model = build_network(BIODARTS, width=s.final_width, num_cells=s.final_cells, auxiliary=True,
                              drop_path_prob=0.2).to(ctx.device)
        nni_bio.enable_dfa(model)
        inputs = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            inputs = x.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype is torch.float16)
        autocast = (lambda: torch.autocast(ctx.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        model.train()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits, aux = model(inputs)
                loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
            with scaled_backward(scaler):
                scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()

        seconds = timed(ctx, step, s.steps, s.warmup)
        speeds[name] = s.final_batch / seconds
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(Row("final", f"BIODARTS C={s.final_width}, {s.final_cells} cells ({params:.2f} M parameters), "
                        f"batch {s.final_batch}, {name}", f"{speeds[name]:.0f} images/s"
                        + (f" ({speeds[name] / speeds['fp32']:.2f}x fp32)" if name != "fp32" else "")))
        del model, optimizer
        if ctx.cuda:
            torch.cuda.empty_cache()
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_ddp(ctx: Context) -> list[Row]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    s = ctx.sizes
    backend = "nccl" if ctx.cuda else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = mixed_model(s.channels, s.image).to(ctx.device)
        twin = copy.deepcopy(model)
        ddp = DistributedDataParallel(model, device_ids=[ctx.device.index or 0] if ctx.cuda else None)
        x, y = (t.to(ctx.device) for t in batch(ctx, s.batch, s.image))
        with no_tf32():
            error = relative_error(gradients(twin, x, y)[1:], gradients(ddp, x, y)[1:])
    finally:
        dist.destroy_process_group()
    return [Row("ddp", f"one-process {backend} DistributedDataParallel step, every built-in rule: gradients vs "
                "no DDP", f"max relative error {error:.1e}", f"<= {GRAD_TOLERANCE:.0e}", error <= GRAD_TOLERANCE)]


def check_compile(ctx: Context) -> list[Row]:
    s = ctx.sizes
    backend = "inductor" if ctx.cuda else "aot_eager"
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = mixed_model(s.channels, s.image).to(ctx.device)
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend=backend)
    x, y = (t.to(ctx.device) for t in batch(ctx, s.batch, s.image))
    with no_tf32():
        start = time.perf_counter()
        grads = gradients(compiled, x, y)
        ctx.sync()
        seconds = time.perf_counter() - start
        errors = [relative_error(gradients(model, x, y), grads)]
        errors.append(relative_error(gradients(model, x, y), gradients(compiled, x, y)))  # second step: cached
    torch._dynamo.reset()
    error = max(errors)
    return [Row("compile", f"torch.compile ({backend}), every built-in rule in one model: gradients vs eager",
                f"max relative error {error:.1e}; first call {seconds:.1f} s (compiling)", f"<= {GRAD_TOLERANCE:.0e}",
                error <= GRAD_TOLERANCE)]


def check_cudagraph(ctx: Context) -> list[Row]:
    if not ctx.cuda:
        return [Row("cudagraph", "CUDA graph capture of a training step", "skipped: needs CUDA")]
    s = ctx.sizes
    g = nni_bio.get_rule
    torch.manual_seed(0)
    model = nn.Sequential(g("fa").conv2d(3, s.channels, 3, padding=1), nn.ReLU(),
                          g("usf").conv2d(s.channels, s.channels, 3, padding=1), nn.ReLU(),
                          g("frsf").conv2d(s.channels, s.channels, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          g("kp").linear(s.channels * s.image * s.image, 10)).to(ctx.device)
    twin = copy.deepcopy(model)
    static_x, static_y = (t.to(ctx.device) for t in batch(ctx, s.batch, s.image))
    parameters = list(twin.parameters())
    with no_tf32():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as torch's CUDA graph recipe asks
            for _ in range(3):
                for p in parameters:
                    p.grad = None
                F.cross_entropy(twin(static_x), static_y).backward()
        torch.cuda.current_stream().wait_stream(stream)
        for p in parameters:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = F.cross_entropy(twin(static_x), static_y)
            static_loss.backward()
        worst = 0.0
        for seed in (1, 2):
            x, y = batch(ctx, s.batch, s.image, seed=seed)
            static_x.copy_(x.to(ctx.device))
            static_y.copy_(y.to(ctx.device))
            graph.replay()
            ctx.sync()
            replayed = [p.grad.clone() for p in parameters]
            expected = gradients(model, x.to(ctx.device), y.to(ctx.device))[1:]
            worst = max(worst, relative_error(expected, replayed))
    return [Row("cudagraph", "CUDA graph of a fa/usf/frsf/kp training step, replayed on new batches: gradients vs "
                "eager", f"max relative error {worst:.1e}", f"<= {GRAD_TOLERANCE:.0e}", worst <= GRAD_TOLERANCE)]


RUNNERS: dict[str, Callable[[Context], list[Row]]] = {
    "grads": check_grads, "amp": check_amp, "supernet": check_supernet, "final": check_final, "ddp": check_ddp,
    "compile": check_compile, "cudagraph": check_cudagraph,
}


def render(rows: list[Row]) -> str:
    lines = ["| check | what | result | goal | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = "" if r.ok is None else ("ok" if r.ok else "**FAILED**")
        lines.append(f"| {r.check} | {r.what} | {r.result} | {r.goal} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, gloo, aot_eager: a smoke test")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    ctx = Context(device, DRY if args.dry_run else FULL, args.dry_run)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# nni-bio GPU check{' (dry run)' if args.dry_run else ''}: torch {torch.version.__version__}, "
          f"CUDA {torch.version.cuda}, {name}, rules {', '.join(nni_bio.list_rules())}", flush=True)
    rows: list[Row] = []
    start = time.perf_counter()
    for check in checks:
        began = time.perf_counter()
        try:
            found = RUNNERS[check](ctx)
        except Exception as exc:  # one broken check must not hide the others
            traceback.print_exc(file=sys.stderr)
            found = [Row(check, "(the check itself)", f"error: {type(exc).__name__}: {str(exc)[:200]}", "", False)]
        rows += found
        print(f"  {check}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    print(render(rows))
    failed = [r for r in rows if r.ok is False]
    print(f"# {len(rows)} rows, {len(failed)} failed; {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "dry_run": args.dry_run, "torch": torch.__version__,
                       "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    sys.exit(main())
