"""Start-up of a multi-trial trial: from process start to its first training batch.

Runs the digits trial of ``examples/digits.yml`` as NNI would start it, ``--repeats`` times::

    python -m nni_bio.trial --space tiny --dataset digits --sample '{...}' --epochs 1 --output TMP

and reports, per run, the wall time from just before the process is spawned to the moment the
trial's first training batch is done (forward, backward, optimizer and scheduler step), and the
CPU time (user + system) the trial process had used by then. The trial stops there (exit 0): only
the start-up is measured.

The probe: a ``sitecustomize`` module on ``PYTHONPATH`` (a temporary folder) wraps the batch
iterator of ``nni_bio.train.training.train`` when that module is imported; when the loop asks for its
second batch, it prints the timestamps and ends the process. Nothing else is loaded early: the
trial imports what it imports on its own.

On a machine shared with other jobs the wall time grows with the load (it includes the time spent
waiting for a CPU); the CPU time does not, and is the figure to compare between runs there. The
median of both is printed, with the 1-minute load average.

``--importtime`` also prints the heaviest top-level imports of one more run (``python -X importtime``).

Usage:
    python benchmarks/trial_startup.py                    # 5 runs, median
    python benchmarks/trial_startup.py --repeats 9 --importtime
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

GOAL_S = 3.0
SAMPLE = {"conv1": "conv_3x3", "conv2": "sep_conv_3x3@usf", "fc": "frsf"}
MARK = "NNI_BIO_FIRST_BATCH"

PROBE = f'''
import importlib.abc, importlib.util, os, sys, time


def _mark():
    t = os.times()
    print("{MARK}", repr(time.time()), repr(t.user + t.system), file=sys.stderr, flush=True)
    os._exit(0)


class _FirstBatch:
    # the training loop's batch iterator: asked for its second batch, the first one is done
    def __init__(self, inner):
        self.inner, self.served = inner, 0

    def __iter__(self):
        self.iterator = iter(self.inner)
        return self

    def __next__(self):
        if self.served == 1:
            _mark()
        self.served += 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "nni_bio.train.training":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            progress = module._progress

            def probed(iterable, **kwargs):
                inner = progress(iterable, **kwargs)
                return _FirstBatch(inner) if str(kwargs.get("desc", "")).startswith("epoch") else inner

            module._progress = probed

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Probe())
'''


def trial_command(python: str, output: Path) -> list[str]:
    return [python, "-m", "nni_bio.trial", "--space", "tiny", "--dataset", "digits", "--epochs", "1",
            "--sample", json.dumps(SAMPLE), "--output", str(output)]


def run_once(python: str, env: dict[str, str], workdir: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from spawn to the first training batch."""
    start = time.time()
    proc = subprocess.run(trial_command(python, workdir / "out"), env=env, capture_output=True, text=True,
                          timeout=600)
    found = re.search(rf"^{MARK} (\S+) (\S+)$", proc.stderr, re.MULTILINE)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"the trial did not reach its first batch (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return float(found.group(1)) - start, float(found.group(2))


def heaviest_imports(python: str, env: dict[str, str], workdir: Path, top: int = 12) -> list[tuple[float, str]]:
    """The ``top`` imports with the largest cumulative time among those at most two levels deep."""
    proc = subprocess.run([python, "-X", "importtime", *trial_command(python, workdir / "out")[1:]], env=env,
                          capture_output=True, text=True, timeout=600)
    rows = []
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if found and len(found.group(2)) <= 5:  # " name", "   name", "     name": levels 0-2
            rows.append((int(found.group(1)) / 1e6, found.group(2)[1:] + found.group(3)))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="trial runs (default 5)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    parser.add_argument("--importtime", action="store_true", help="also list the heaviest imports of one run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nni-bio-startup-") as tmp:
        workdir = Path(tmp)
        (workdir / "probe").mkdir()
        (workdir / "probe" / "sitecustomize.py").write_text(PROBE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}  # standalone, as with --sample
        env["PYTHONPATH"] = os.pathsep.join([str(workdir / "probe")] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("OMP_NUM_THREADS", "1")  # what nni-bio's example configs give a trial
        load = os.getloadavg()[0]
        run_once(args.python, env, workdir)  # warm the file cache
        walls, cpus = [], []
        for i in range(args.repeats):
            wall, cpu = run_once(args.python, env, workdir)
            walls.append(wall)
            cpus.append(cpu)
            print(f"  run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr, flush=True)
        imports = heaviest_imports(args.python, env, workdir) if args.importtime else []

    print(f"# trial start-up (process start -> first training batch), digits tiny trial, {args.repeats} runs")
    print("| | median | min | max |")
    print("|---|---|---|---|")
    print(f"| wall time | {statistics.median(walls):.2f} s | {min(walls):.2f} s | {max(walls):.2f} s |")
    print(f"| CPU time (user + system) | {statistics.median(cpus):.2f} s | {min(cpus):.2f} s | {max(cpus):.2f} s |")
    print(f"# 1-minute load average: {load:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")
    if imports:
        print("# heaviest imports (cumulative, one run with -X importtime, which adds its own overhead):")
        for seconds, name in imports:
            print(f"#   {seconds:6.2f} s  {name}")
    verdict = "met" if statistics.median(walls) <= GOAL_S else "missed"
    print(f"# goal <= {GOAL_S:.0f} s wall: {verdict} (median {statistics.median(walls):.2f} s; "
          f"CPU {statistics.median(cpus):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
