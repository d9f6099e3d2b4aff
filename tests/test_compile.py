"""Rule layers under ``torch.compile`` (issue 11 item 5): for every built-in rule, a small model mixing
that rule's conv (regular and grouped) and linear layers with BatchNorm and a backprop head trains
two steps compiled and two steps eagerly from the same weights; gradients and updated weights agree.

Backend ``aot_eager``: dynamo captures the graph and AOTAutograd traces forward and backward
(through the rule layers' custom ``autograd.Function``), then runs them eagerly. That is the part
of ``torch.compile`` a rule can break; inductor's code generation on top is the same for any graph
(and slow to compile on a CPU). How rules compile (``torch._dynamo.explain``): the forward of
``fa``, ``usf``, ``frsf``, ``kp`` and ``backprop`` layers is captured without a graph break; ``brsf``
picks its magnitudes outside the graph (its step counter and pool offset are host state: one graph
break per brSF layer, no recompilation per step) and, like ``usf`` and ``frsf``, builds B in the
custom backward;
``dfa``'s backward needs the output error that only exists at backward time, so dynamo runs its
layers eagerly. Every one computes what eager mode computes.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nni_bio

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]


def mixed_model(rule: str) -> nn.Module:
    r, bp = nni_bio.get_rule(rule), nni_bio.get_rule("backprop")
    model = nn.Sequential(
        r.conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        r.conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
        r.linear(4 * 6 * 6, 8), nn.ReLU(), bp.linear(8, 5),
    )
    return nni_bio.enable_dfa(model)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("rule", BUILTINS)
def test_compiled_training_steps_equal_eager(rule: str) -> None:
    torch.manual_seed(0)
    eager = mixed_model(rule).train()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, compiled_model)]
    for step in range(2):
        x, y = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(step)), torch.tensor([1, 3])
        for model, optimizer in zip((eager, compiled), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
        for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=name: f"{rule} step {step} {n}: {m}")
        for optimizer in optimizers:
            optimizer.step()
    if rule == "brsf":  # two training steps: two draws, in both models
        assert eager[0].feedback.step == compiled_model[0].feedback.step == 2
