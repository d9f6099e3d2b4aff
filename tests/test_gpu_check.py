"""The GPU check script (benchmarks/gpu_check.py) passes its CPU dry run: every check runs on tiny
sizes (gloo instead of NCCL, aot_eager instead of inductor) and the correctness rows pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[1] == "| check | what | result | goal | verdict |"
    rows = json.loads(out.read_text())["rows"]
    assert {r["check"] for r in rows} == {"grads", "amp", "supernet", "final", "ddp", "compile", "cudagraph"}
    assert not [r for r in rows if r["ok"] is False]
    assert sum(r["check"] == "grads" and r["ok"] for r in rows) >= 7  # every built-in rule
    assert any(r["check"] == "supernet" and r["what"].startswith("op x rule / plain") for r in rows)


def test_gpu_check_refuses_unknown_checks() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--checks", "grads,nope"], capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "unknown checks" in proc.stderr
