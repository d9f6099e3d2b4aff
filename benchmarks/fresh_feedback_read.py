"""What reading a freshly written B costs the linear cell's input-gradient product, process by process.

A sign rule's backward builds B = sign(W) (times a magnitude) and then computes g @ B; torch's layer
computes g @ W, with W clean in the cache since the forward read it. This script times, in each of
``--processes`` fresh processes, with the shapes of ``rule_overhead.py``'s linear cell (g: 64 x 1024,
W: 1024 x 1024), over six weights in turn, in rounds of 60 calls of each variant in turn:

- ``g @ W``: torch's own input gradient;
- ``sign; g @ W``: the sign pass, then the product reading W;
- ``sign; g @ B``: the sign pass, then the product reading the B just written (what a sign rule does).

"B read costs" is the last minus the second: what reading the new B costs beyond reading W. It runs
once as PyTorch allocates by default and once with ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's switch that
puts tensors of 2 MiB and more on transparent huge pages). Medians in microseconds per call.

Usage:
    python benchmarks/fresh_feedback_read.py                # 5 processes each way, 2 threads
    python benchmarks/fresh_feedback_read.py --processes 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("g @ W", "sign; g @ W", "sign; g @ B")


def measure(threads: int, rounds: int = 15, calls: int = 60) -> dict[str, float]:
    """Median microseconds per call of each variant, in this process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    weights = [torch.randn(1024, 1024) for _ in range(6)]
    feedback = [torch.empty(1024, 1024) for _ in range(6)]
    g = torch.randn(64, 1024)
    steps = {
        "g @ W": lambda i: g @ weights[i],
        "sign; g @ W": lambda i: (torch.sign(weights[i], out=feedback[i]), g @ weights[i]),
        "sign; g @ B": lambda i: (torch.sign(weights[i], out=feedback[i]), g @ feedback[i]),
    }
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            step = steps[name]
            for i in range(6):
                step(i)
            start = time.perf_counter()
            for k in range(calls):
                step(k % 6)
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per setting (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of 60 calls of each variant (default 15)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.threads, args.rounds)))
        return 0
    print(f"# {args.threads} threads; microseconds per call, median of {args.rounds} rounds of 60 calls, "
          "one line per process")
    print("| allocation | process | " + " | ".join(VARIANTS) + " | B read costs |")
    print("|---|---|" + "---|" * (len(VARIANTS) + 1))
    for label, extra in (("default", {}), ("THP_MEM_ALLOC_ENABLE=1", {"THP_MEM_ALLOC_ENABLE": "1"})):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | extra
        for i in range(args.processes):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--threads", str(args.threads),
                                   "--rounds", str(args.rounds)], env=env, capture_output=True, text=True, check=True)
            us = json.loads(done.stdout)
            cells = " | ".join(f"{us[name]:.0f}" for name in VARIANTS)
            print(f"| {label} | {i + 1} | {cells} | {us['sign; g @ B'] - us['sign; g @ W']:+.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
