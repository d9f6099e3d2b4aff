"""The sign-concordant rules' backward-time B (``nni_bio.core.rule.SignFeedback``): uSF, frSF and brSF layers
keep W and the magnitude at forward time and build B = sign(W) * magnitude in the backward (a linear
layer: in the memory of W's gradient). These tests hold it to the general path (B built at forward
time by ``feedback_weight``, what every other rule does, and what these rules did before), gradient
for gradient, bit for bit, with exact zeros (+0.0 and -0.0) in W, and check brSF's draws against an
independent reimplementation of its pool."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import nni_bio
from nni_bio.core.errors import RuleContractError
from nni_bio.core.rule import LearningRule, RuleInfo, SignFeedback

SIGN_RULES = ["usf", "frsf", "brsf"]


def _layer(rule: str, kind: str, bias: bool = True):
    torch.manual_seed(0)
    r = nni_bio.get_rule(rule)
    layer = r.linear(12, 10, bias=bias) if kind == "linear" else r.conv2d(3, 4, 3, padding=1, bias=bias)
    with torch.no_grad():  # exact zeros of both signs: sign(+-0) = 0, so B is 0 there
        flat = layer.weight.view(-1)
        flat[:6] = torch.tensor([0.0, -0.0, 0.0, -0.0, 1e-40, -1e-40])  # and two subnormals (sign +-1)
    return layer.train()


def _input(kind: str, shape3d: bool = False) -> Tensor:
    torch.manual_seed(1)
    if kind == "linear":
        return torch.randn(2, 5, 12) if shape3d else torch.randn(5, 12)
    return torch.randn(2, 3, 5, 5)


def _general_path(layer) -> None:
    """Make the layer take the general path (B from feedback_weight at forward time), as a replaced
    feedback_weight does: the same method, set on the instance."""
    fb = layer.feedback
    fb.feedback_weight = type(fb).feedback_weight.__get__(fb)


def _step(layer, x: Tensor, g: Tensor | None = None, steps: int = 3, **kwargs) -> list[Tensor | None]:
    grads = []
    for _ in range(steps):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out = layer(x)
        out.backward(g if g is not None else torch.ones_like(out), **kwargs)
        grads += [x.grad if x.requires_grad else None] + [p.grad for p in layer.parameters()]
    return grads


def _assert_same(fast: list, general: list) -> None:
    assert len(fast) == len(general)
    for a, b in zip(fast, general):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b), (a - b).abs().max()


@pytest.mark.parametrize("rule", SIGN_RULES)
@pytest.mark.parametrize("kind", ["linear", "linear3d", "conv"])
@pytest.mark.parametrize("which", ["all", "no_input", "frozen_weight", "no_bias"])
def test_gradients_are_those_of_the_general_path(rule: str, kind: str, which: str) -> None:
    base = "linear" if kind.startswith("linear") else "conv"
    fast, general = _layer(rule, base, bias=which != "no_bias"), _layer(rule, base, bias=which != "no_bias")
    _general_path(general)
    results = []
    for layer in (fast, general):
        if which == "frozen_weight":
            layer.weight.requires_grad_(False)
        x = _input(base, shape3d=kind == "linear3d").requires_grad_(which != "no_input")
        torch.manual_seed(2)
        g = torch.randn_like(layer(x).detach())
        results.append(_step(layer, x, g))
    _assert_same(*results)
    assert fast.feedback.__dict__.get("step") == general.feedback.__dict__.get("step")


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_input_gradient_is_g_times_sign_w_times_magnitude_with_exact_zeros(rule: str) -> None:
    layer = _layer(rule, "linear")
    x, g = _input("linear").requires_grad_(True), torch.randn(5, 10)
    fb = layer.feedback
    magnitude = {"usf": lambda: fb.scale, "frsf": lambda: fb.magnitude,
                 "brsf": lambda: _brsf_magnitude(layer, fb.step + 1)}[rule]()
    w = layer.weight.detach().clone()
    layer(x).backward(g)
    B = torch.sign(w) * magnitude
    assert (B.view(-1)[:4] == 0).all() and (B.view(-1)[4:6] != 0).all()
    torch.testing.assert_close(x.grad, g @ B, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(layer.weight.grad, g.t() @ x, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))


def _splitmix(seed: int, step: int) -> int:
    mask = 2**64 - 1
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def _brsf_magnitude(layer, step: int) -> Tensor:
    """brSF's |R_step|, rebuilt here from the documented scheme (not from the rule's code)."""
    n = layer.weight.numel()
    receptive = layer.weight[0, 0].numel()
    fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    pool = torch.empty(n + min(max(n, 4096), 65536)).uniform_(
        -bound, bound, generator=torch.Generator().manual_seed(layer.feedback.seed)).abs_()
    offset = _splitmix(layer.feedback.seed, step) % (pool.numel() - n + 1)
    return pool[offset:offset + n].view(layer.weight.shape)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_brsf_draws_per_step_are_unchanged(kind: str) -> None:
    layer = _layer("brsf", kind)
    x = _input(kind).requires_grad_(True)
    for step in range(1, 5):
        x.grad = None
        out = layer(x)
        g = torch.randn_like(out)
        out.backward(g)
        assert layer.feedback.step == step
        B = torch.sign(layer.weight.detach()) * _brsf_magnitude(layer, step)
        expected = g @ B if kind == "linear" else torch.nn.grad.conv2d_input(x.shape, B, g, padding=1)
        torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-7)
    layer.eval()
    layer(x).sum().backward()  # an evaluation forward does not draw
    assert layer.feedback.step == 4


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_linear_training_keeps_no_weight_sized_buffer(rule: str) -> None:
    layer = _layer(rule, "linear")
    _step(layer, _input("linear").requires_grad_(True))
    assert "_scratch" not in layer.feedback.__dict__


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_two_forwards_one_backward_and_retained_graph_on_linear(rule: str) -> None:
    fast, general = _layer(rule, "linear"), _layer(rule, "linear")
    _general_path(general)
    results = []
    for layer in (fast, general):
        x1, x2 = _input("linear").requires_grad_(True), (2 * _input("linear")).requires_grad_(True)
        out1, out2 = layer(x1), layer(x2)  # gradient accumulation: two forwards, one backward
        (out1.sum() + (out2 * out2).sum()).backward(retain_graph=True)
        first = [x1.grad.clone(), x2.grad.clone(), layer.weight.grad.clone()]
        (out1.sum() + (out2 * out2).sum()).backward()  # the retained graph again
        results.append(first + [x1.grad, x2.grad, layer.weight.grad])
    _assert_same(*results)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_differentiating_the_backward(rule: str) -> None:
    """create_graph=True: the backward runs with grad mode on (no out= there); same values."""
    fast, general = _layer(rule, "linear"), _layer(rule, "linear")
    _general_path(general)
    results = []
    for layer in (fast, general):
        x = _input("linear").requires_grad_(True)
        out = layer(x)
        g = torch.randn_like(out, requires_grad=True)
        gx, gw = torch.autograd.grad(out, (x, layer.weight), g, create_graph=True)
        (gg,) = torch.autograd.grad((gx * gx).sum() + gw.sum(), g)
        results.append([gx.detach(), gw.detach(), gg])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_changing_w_in_place_before_the_backward_is_refused_like_nn_linear(rule: str) -> None:
    layer = _layer(rule, "linear")
    out = layer(_input("linear").requires_grad_(True))
    with torch.no_grad():
        layer.weight.mul_(-1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_changing_the_magnitude_in_place_before_the_backward_is_refused() -> None:
    layer = _layer("frsf", "linear")
    out = layer(_input("linear").requires_grad_(True))
    with torch.no_grad():
        layer.feedback.magnitude.mul_(2)  # e.g. load_state_dict between a forward and its backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_autocast_bf16_matches_the_general_path(rule: str) -> None:
    fast, general = _layer(rule, "linear"), _layer(rule, "linear")
    _general_path(general)
    results = []
    for layer in (fast, general):
        x = _input("linear").requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        out.float().sum().backward()
        results.append([x.grad, layer.weight.grad, layer.bias.grad])
    _assert_same(*results)


@pytest.mark.parametrize("rule", SIGN_RULES)
def test_feedback_weight_still_gives_the_whole_b(rule: str) -> None:
    layer = _layer(rule, "linear")
    fb = layer.feedback
    B = fb.feedback_weight(layer.weight, False)
    magnitude = {"usf": lambda: fb.scale, "frsf": lambda: fb.magnitude,
                 "brsf": lambda: _brsf_magnitude(layer, fb.step)}[rule]()
    assert torch.equal(B, torch.sign(layer.weight.detach()) * magnitude)
    assert type(fb)._sign_path and isinstance(fb, SignFeedback)


class _Halved(SignFeedback):
    def sign_magnitude(self, weight: Tensor, training: bool) -> float:
        return 0.5


class _Noisy(_Halved):  # overrides feedback_weight: must get the general path
    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return 2 * super().feedback_weight(weight, training)


class _OwnBackward(_Halved):
    def backward(self, op, grad_out, x, feedback, output, needs):
        gx, gw, gb = op.grads(grad_out, x, feedback, needs)
        return (None if gx is None else 3 * gx), gw, gb


class _LearnedMagnitude(SignFeedback):
    def __init__(self, weight: Tensor):
        super().__init__()
        self.m = torch.nn.Parameter(torch.ones_like(weight))

    def sign_magnitude(self, weight: Tensor, training: bool) -> Tensor:
        return self.m


def _rule(feedback_type):
    class Rule(LearningRule):
        info = RuleInfo(name="third_party_sign", family="feedback", summary="test", api_version=1)

        def feedback(self, layer):
            return feedback_type(layer.weight.detach()) if feedback_type is _LearnedMagnitude else feedback_type()

    return Rule()


@pytest.mark.parametrize("feedback_type, factor, fast", [(_Halved, 0.5, True), (_Noisy, 1.0, False),
                                                         (_OwnBackward, 1.5, False)])
def test_third_party_sign_feedback(feedback_type, factor: float, fast: bool) -> None:
    layer = _rule(feedback_type).linear(6, 4).train()
    assert feedback_type._sign_path is fast
    x, g = torch.randn(3, 6, requires_grad=True), torch.randn(3, 4)
    layer(x).backward(g)
    torch.testing.assert_close(x.grad, g @ (factor * torch.sign(layer.weight.detach())))
    assert layer(x).grad_fn.name().endswith("_SignFeedbackFunctionBackward") is fast  # else the general path


def test_a_magnitude_that_requires_grad_is_refused() -> None:
    layer = _rule(_LearnedMagnitude).linear(6, 4).train()
    with pytest.raises(RuleContractError, match="sign_magnitude"):
        layer(torch.randn(3, 6, requires_grad=True))
