"""Speed paths of the sign-concordant rules: the reused feedback buffer (Feedback.scratch) and brSF's
magnitude pool. Reuse must never change a gradient: a buffer still held by a graph, a caller or a view
is not written. (The backward of a linear layer builds B in its weight gradient's memory, not in the
scratch buffer: tests/test_sign_feedback_speedpath.py; the buffer-reuse tests here use convolutions,
whose backward builds B in it, and ``feedback_weight``.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import nni_bio
from nni_bio.rules.brsf import pool_size

SIGN_RULES = ["usf", "frsf", "brsf"]


def feedback_of(layer, training: bool = True) -> torch.Tensor:
    """The B the layer's next forward will use (brSF: the next step's draw, without advancing it)."""
    fb = layer.feedback
    if layer.rule_name == "brsf" and training:
        fb.step += 1
        try:
            return fb.feedback_weight(layer.weight, False).clone()
        finally:
            fb.step -= 1
    return fb.feedback_weight(layer.weight, False).clone()


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_buffer_is_reused_from_step_to_step(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(64, 64, 3, padding=1).train()  # 144 KiB of weights
    x = torch.randn(1, 64, 4, 4, requires_grad=True)
    pointers = set()
    for _ in range(4):
        layer(x).sum().backward()
        pointers.add(layer.feedback._scratch.data_ptr())
    assert len(pointers) == 1


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_a_small_weight_gets_a_fresh_tensor_instead(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(3, 4, 3, padding=1).train()  # 432 bytes: malloc's free lists serve it
    layer(torch.randn(2, 3, 5, 5, requires_grad=True)).sum().backward()
    assert "_scratch" not in layer.feedback.__dict__


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_two_forwards_before_one_backward_keep_their_own_feedback(rule: str) -> None:
    layer = nni_bio.get_rule(rule).linear(16, 8).train()
    x1, x2 = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    g1, g2 = torch.randn(4, 8), torch.randn(4, 8)
    b1 = feedback_of(layer)
    out1 = layer(x1)
    b2 = feedback_of(layer)
    out2 = layer(x2)  # must not overwrite what out1's graph saved
    if rule == "brsf":
        assert not torch.equal(b1, b2)
    ((out1 * g1).sum() + (out2 * g2).sum()).backward()
    torch.testing.assert_close(x1.grad, g1 @ b1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x2.grad, g2 @ b2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_retained_graph_backward_after_a_new_forward(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(3, 4, 3, padding=1).train()
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = layer(x)
    out.sum().backward(retain_graph=True)
    first = x.grad.clone()
    layer(torch.randn(2, 3, 5, 5, requires_grad=True)).sum().backward()  # a new step in between
    x.grad = None
    out.sum().backward()  # the retained graph still has its own B
    torch.testing.assert_close(x.grad, first, rtol=0, atol=0)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_a_caller_keeps_what_feedback_weight_returned(rule: str) -> None:
    layer = nni_bio.get_rule(rule).linear(16, 8).train()
    kept = layer.feedback.feedback_weight(layer.weight, False)
    copy_of_kept = kept.clone()
    view = layer.feedback.feedback_weight(layer.weight, False)[0]  # only a view survives
    copy_of_view = view.clone()
    for _ in range(2):
        with torch.no_grad():
            layer.weight.mul_(-1)  # flips every sign: a rewrite would show
        layer(torch.randn(4, 16, requires_grad=True)).sum().backward()
    assert torch.equal(kept, copy_of_kept) and torch.equal(view, copy_of_view)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_copies_get_their_own_buffer(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(64, 64, 3, padding=1).train()
    layer(torch.randn(1, 64, 4, 4, requires_grad=True)).sum().backward()
    twin = copy.deepcopy(layer)
    assert "_scratch" not in twin.feedback.__dict__
    twin(torch.randn(1, 64, 4, 4, requires_grad=True)).sum().backward()
    assert twin.feedback._scratch.data_ptr() != layer.feedback._scratch.data_ptr()


def test_buffer_follows_dtype_and_shape() -> None:
    layer = nni_bio.get_rule("usf").conv2d(64, 64, 3, padding=1).train()
    layer(torch.randn(1, 64, 4, 4, requires_grad=True)).sum().backward()
    layer.double()
    x = torch.randn(1, 64, 4, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    assert layer.feedback._scratch.dtype == torch.float64
    B = layer.feedback.scale * torch.sign(layer.weight.detach())
    torch.testing.assert_close(x.grad, torch.nn.grad.conv2d_input(x.shape, B, g, padding=1))


def test_brsf_magnitudes_are_windows_of_one_pool() -> None:
    layer = nni_bio.get_rule("brsf").linear(64, 32).train()
    fb = layer.feedback
    pool = fb.pool(layer.weight)
    assert pool.numel() == pool_size(64 * 32) == 64 * 32 + 4096
    bound = math.sqrt(6.0 / (64 + 32))
    assert (pool >= 0).all() and (pool <= bound).all()
    starts = set()
    for _ in range(20):
        m = fb.magnitude(layer.weight)
        assert m.data_ptr() >= pool.data_ptr() and m.shape == layer.weight.shape
        starts.add((m.data_ptr() - pool.data_ptr()) // pool.element_size())
        layer(torch.randn(2, 64, requires_grad=True)).sum().backward()
    assert len(starts) == 20  # a new offset every step


def test_brsf_magnitude_of_an_entry_over_steps_is_uniform() -> None:
    layer = nni_bio.get_rule("brsf").linear(32, 32).train()
    fb = layer.feedback
    bound = math.sqrt(6.0 / 64)
    values = []
    for step in range(2000):
        fb.step = step
        values.append(fb.magnitude(layer.weight)[3, 5].item())
    values = torch.tensor(values) / bound
    assert abs(values.mean().item() - 0.5) < 0.03 and abs(values.var().item() - 1 / 12) < 0.01
    assert len(set(values.tolist())) > 1500  # fresh values, not a short cycle


def test_brsf_old_state_keeps_the_generator_draws() -> None:
    layer = nni_bio.get_rule("brsf").linear(6, 5)
    state = layer.state_dict()
    del state["feedback.draws"]
    twin = nni_bio.get_rule("brsf").linear(6, 5)
    twin.load_state_dict(state)
    assert twin.feedback.draws == 0 and layer.feedback.draws == 1
    twin.load_state_dict(layer.state_dict())
    assert twin.feedback.draws == 1
