"""benchmarks/search_cost.py and benchmarks/compile_speed.py run end to end at tiny sizes (their figures are
measured on a quiet machine, never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_search_cost_quick_run_reports_the_supernet_and_the_trial_phases(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "search_cost.py"), "--quick", "--trials", "digits"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| op x rule | " in done.stdout and "| plain torch | " in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| digits | 1 |"))
    start_up, data, training, reporting, total = (float(cell) for cell in row.split("|")[3:8])
    assert 0 < start_up < total and training > 0 and abs(start_up + data + training + reporting - total) < 0.5


def test_compile_speed_quick_run_reports_every_network(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compile_speed.py"), "--quick", "--backend", "aot_eager",
                           "--rules", "usf"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for network in ("resnet8", "tiny", "tiny-supernet"):
        assert f"| {network} | usf |" in done.stdout
