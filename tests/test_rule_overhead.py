"""benchmarks/rule_overhead.py: its bare reference computes each rule's math, and a quick run over fresh
processes prints the table; benchmarks/fresh_feedback_read.py, its companion, runs (figures are measured on a
quiet machine, never asserted here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "rule_overhead.py"


@pytest.fixture(scope="module")
def rule_overhead():
    spec = importlib.util.spec_from_file_location("rule_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_()
    layer(x).backward(g)
    return {"x": x.grad, **{name: p.grad for name, p in layer.named_parameters()}}


@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf", "kp"])
def test_bare_linear_sends_the_error_through_its_feedback_and_has_exact_weight_gradients(rule_overhead, rule):
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    bare = rule_overhead.BareLinear(base, rule)
    x, g = torch.randn(5, 12), torch.randn(5, 7)
    got, exact = _grads(bare, x, g), _grads(base, x, g)
    sign = torch.sign(base.weight.detach())
    feedback = {"fa": lambda: bare.feedback, "kp": lambda: bare.learned.detach(), "usf": lambda: bare.SCALE * sign,
                "frsf": lambda: sign * bare.magnitude, "brsf": lambda: sign * bare.magnitude}[rule]()
    torch.testing.assert_close(got["x"], g @ feedback)
    assert not torch.allclose(got["x"], exact["x"])  # not backprop's W
    torch.testing.assert_close(got["weight"], exact["weight"])
    torch.testing.assert_close(got["bias"], exact["bias"])
    if rule == "kp":
        assert torch.equal(got["learned"], got["weight"])


def test_bare_linear_refuses_a_rule_it_has_no_reference_for(rule_overhead):
    with pytest.raises(ValueError, match="no bare reference for 'dfa'"):
        rule_overhead.BareLinear(nn.Linear(3, 3), "dfa")


def test_quick_run_in_fresh_processes_shows_the_median_range_and_bare_figures(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--kinds", "linear,dw3x3", "--rules", "backprop,usf",
                           "--processes", "2", "--repeats", "2"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.count("# process ") == 2
    usf = next(line for line in done.stdout.splitlines() if line.startswith("| usf "))
    linear, conv = (cell.strip() for cell in usf.split("|")[2:4])
    assert " bare " in linear and "[" in linear  # median [lowest-highest] bare ratio
    assert " bare " not in conv and "[" in conv  # no bare reference for convolutions
    assert "median over 2 fresh processes" in done.stdout


def test_fresh_feedback_read_times_every_variant_in_fresh_processes_both_ways(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "fresh_feedback_read.py"), "--processes", "1",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| default |", "| THP_MEM_ALLOC_ENABLE=1 |"))]
    assert len(rows) == 2
    for row in rows:
        g_w, sign_w, sign_b, cost = (cell.strip() for cell in row.split("|")[3:7])
        assert float(g_w) > 0 and float(sign_w) > 0 and float(sign_b) > 0
        assert float(cost) == pytest.approx(float(sign_b) - float(sign_w), abs=1.01)
