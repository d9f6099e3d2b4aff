"""Each rule's backward against hand-computed references (learning-rules.md §2, §3.1), linear and conv2d."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nni_bio
from nni_bio.core.error_bus import error_bus
from nni_bio.core.layers import RuleConv2d, RuleLayer, RuleLinear

TOL = dict(rtol=1e-5, atol=1e-6)

# (id, layer arguments, input shape)
LINEAR_CASES = [
    ("bias", dict(in_features=6, out_features=5), (4, 6)),
    ("no_bias", dict(in_features=6, out_features=5, bias=False), (4, 6)),
    ("3d_input", dict(in_features=6, out_features=5), (2, 3, 6)),
]
CONV_GEOMETRIES = [
    ("regular", dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (2, 4, 7, 7)),
    ("stride2", dict(in_channels=4, out_channels=6, kernel_size=3, stride=2), (2, 4, 8, 8)),
    ("dilation2", dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, padding=1), (2, 4, 7, 7)),
    ("groups2", dict(in_channels=4, out_channels=6, kernel_size=(3, 1), groups=2, padding=1), (2, 4, 6, 6)),
    ("depthwise", dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=2), (2, 4, 6, 6)),
]
CONV_CASES = [(f"{name}-{'bias' if bias else 'no_bias'}", {**kw, "bias": bias}, shape)
              for name, kw, shape in CONV_GEOMETRIES for bias in (True, False)]
CASES = [pytest.param("linear", kw, shape, id=f"linear-{name}") for name, kw, shape in LINEAR_CASES] + \
        [pytest.param("conv2d", kw, shape, id=f"conv2d-{name}") for name, kw, shape in CONV_CASES]


def build(rule: str, kind: str, kwargs: dict[str, Any]) -> RuleLayer:
    kwargs = dict(kwargs)
    if kind == "linear":
        return nni_bio.get_rule(rule).linear(kwargs.pop("in_features"), kwargs.pop("out_features"), **kwargs)
    return nni_bio.get_rule(rule).conv2d(kwargs.pop("in_channels"), kwargs.pop("out_channels"),
                                         kwargs.pop("kernel_size"), **kwargs)


def plain_forward(layer: RuleLayer, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's forward with plain torch.nn.functional (autograd gives exact BP)."""
    if isinstance(layer, RuleLinear):
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def plain_grads(layer: RuleLayer, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact BP gradients (input, weight, bias) for upstream gradient ``g``."""
    x = x.detach().clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True) if layer.bias is not None else None
    inputs = [x, w] + ([b] if b is not None else [])
    grads = torch.autograd.grad(plain_forward(layer, x, w, b), inputs, g)
    return grads[0], grads[1], grads[2] if b is not None else None


def input_grad_through(layer: RuleLayer, x: Tensor, g: Tensor, matrix: Tensor) -> Tensor:
    """Hand reference: the error sent down through ``matrix`` instead of W."""
    if isinstance(layer, RuleLinear):
        return g @ matrix
    return torch.nn.grad.conv2d_input(x.shape, matrix, g, layer.stride, layer.padding, layer.dilation, layer.groups)


def fans(layer: RuleLayer) -> tuple[int, int]:
    """PyTorch's fans, by hand: conv fan_in = C_in/groups*k*k, fan_out = C_out*k*k."""
    if isinstance(layer, RuleLinear):
        return layer.in_features, layer.out_features
    assert isinstance(layer, RuleConv2d)
    k = math.prod(layer.kernel_size)
    return layer.in_channels // layer.groups * k, layer.out_channels * k


def run_backward(layer: RuleLayer, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """One training forward and backward with a random upstream gradient; returns (x, g)."""
    layer.train()
    x = torch.randn(shape, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    return x, g


def assert_local_grads_exact(layer: RuleLayer, x: Tensor, g: Tensor) -> None:
    _, gw, gb = plain_grads(layer, x, g)
    torch.testing.assert_close(layer.weight.grad, gw, **TOL)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, gb, **TOL)


@pytest.mark.parametrize("kind, kwargs, shape", CASES)
def test_backprop_equals_plain_torch(kind: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    layer = build("backprop", kind, kwargs)
    x, g = run_backward(layer, shape)
    gx, gw, gb = plain_grads(layer, x, g)
    torch.testing.assert_close(x.grad, gx, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, gw, rtol=0, atol=1e-6)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, gb, rtol=0, atol=1e-6)


def fa_matrix(layer: RuleLayer) -> Tensor:
    return layer.feedback.matrix


def usf_matrix(layer: RuleLayer) -> Tensor:
    fan_in, fan_out = fans(layer)
    return math.sqrt(2.0 / (fan_in + fan_out)) * torch.sign(layer.weight.detach())


def frsf_matrix(layer: RuleLayer) -> Tensor:
    return layer.feedback.magnitude * torch.sign(layer.weight.detach())


def brsf_matrix(layer: RuleLayer) -> Tensor:
    return layer.feedback.magnitude(layer.weight) * torch.sign(layer.weight.detach())


def kp_matrix(layer: RuleLayer) -> Tensor:
    return layer.feedback.matrix.detach()


FEEDBACK = {"fa": fa_matrix, "usf": usf_matrix, "frsf": frsf_matrix, "brsf": brsf_matrix, "kp": kp_matrix}


@pytest.mark.parametrize("kind, kwargs, shape", CASES)
@pytest.mark.parametrize("rule", sorted(FEEDBACK))
def test_error_goes_down_through_feedback_matrix(rule: str, kind: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    layer = build(rule, kind, kwargs)
    x, g = run_backward(layer, shape)
    matrix = FEEDBACK[rule](layer)  # after the forward: brsf's step has advanced
    assert matrix.shape == layer.weight.shape
    assert not torch.allclose(matrix, layer.weight.detach())  # not backprop in disguise
    torch.testing.assert_close(x.grad, input_grad_through(layer, x, g, matrix), **TOL)
    assert_local_grads_exact(layer, x, g)


@pytest.mark.parametrize("rule", ["fa", "frsf", "brsf", "kp"])
def test_random_feedback_is_xavier_uniform(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(8, 16, 3, groups=2)
    layer.train()
    layer(torch.randn(1, 8, 5, 5, requires_grad=True))
    fan_in, fan_out = fans(layer)
    matrix = FEEDBACK[rule](layer)
    assert matrix.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out))
    assert matrix.abs().max() > 0.9 * math.sqrt(6.0 / (fan_in + fan_out))  # uses the whole range


def test_fa_feedback_is_fixed_buffer_independent_of_weight() -> None:
    layer = nni_bio.get_rule("fa").linear(6, 5)
    before = layer.feedback.matrix.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        run_backward(layer, (4, 6))
        optimizer.step()
    torch.testing.assert_close(layer.feedback.matrix, before, rtol=0, atol=0)
    assert "feedback.matrix" in dict(layer.named_buffers())


def test_frsf_sign_follows_weight_magnitude_fixed() -> None:
    layer = nni_bio.get_rule("frsf").linear(6, 5)
    magnitude = layer.feedback.magnitude.clone()
    assert (magnitude >= 0).all()
    x, g = run_backward(layer, (5, 6))
    first = x.grad.clone()
    with torch.no_grad():
        layer.weight.neg_()  # every sign flips
    x.grad = None
    layer(x).backward(g)
    torch.testing.assert_close(x.grad, -first, **TOL)
    torch.testing.assert_close(x.grad, g @ (magnitude * torch.sign(layer.weight.detach())), **TOL)
    torch.testing.assert_close(layer.feedback.magnitude, magnitude, rtol=0, atol=0)


def linear_feedback_of_next_forward(layer: RuleLayer) -> Tensor:
    """B of a linear layer, read off its actual backward: with upstream gradient I, x.grad == B."""
    x = torch.randn(layer.out_features, layer.in_features, requires_grad=True)
    layer(x).backward(torch.eye(layer.out_features))
    return x.grad


def test_brsf_redraws_per_training_forward_not_in_eval() -> None:
    layer = nni_bio.get_rule("brsf").linear(6, 5)
    layer.train()
    first = linear_feedback_of_next_forward(layer)
    assert int(layer.feedback.step) == 1
    torch.testing.assert_close(torch.sign(first), torch.sign(layer.weight.detach()))
    layer.eval()
    in_eval = linear_feedback_of_next_forward(layer)
    assert int(layer.feedback.step) == 1  # no redraw in eval
    torch.testing.assert_close(in_eval, first, rtol=0, atol=0)
    layer.train()
    second = linear_feedback_of_next_forward(layer)
    assert int(layer.feedback.step) == 2
    assert not torch.allclose(second.abs(), first.abs())  # new magnitudes
    torch.testing.assert_close(torch.sign(second), torch.sign(first))  # same signs: W did not change


def test_brsf_same_seed_and_step_same_draw() -> None:
    a = nni_bio.get_rule("brsf").linear(6, 5)
    b = nni_bio.get_rule("brsf").linear(6, 5)
    assert int(a.feedback.seed) != int(b.feedback.seed)
    assert not torch.allclose(a.feedback.magnitude(a.weight), b.feedback.magnitude(a.weight))
    b.load_state_dict(a.state_dict())  # same W, seed and step
    for layer in (a, b):
        layer.train()
    torch.testing.assert_close(linear_feedback_of_next_forward(a), linear_feedback_of_next_forward(b),
                               rtol=0, atol=0)


def test_brsf_training_forward_leaves_global_rng_alone() -> None:
    layer = nni_bio.get_rule("brsf").conv2d(3, 4, 3)
    layer.train()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    state = torch.get_rng_state()
    layer(x).sum().backward()
    assert int(layer.feedback.step) == 1
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_kp_feedback_is_parameter_with_weight_gradient(kind: str) -> None:
    rule = nni_bio.get_rule("kp")
    layer = rule.linear(6, 5) if kind == "linear" else rule.conv2d(4, 6, 3, groups=2)
    x = torch.randn((4, 6) if kind == "linear" else (2, 4, 6, 6), requires_grad=True)
    assert isinstance(layer.feedback.matrix, nn.Parameter)
    assert any(p is layer.feedback.matrix for p in layer.parameters())
    for _ in range(2):  # gradients accumulate separately (no shared storage)
        layer(x).square().sum().backward()
    assert layer.feedback.matrix.grad is not layer.weight.grad
    torch.testing.assert_close(layer.feedback.matrix.grad, layer.weight.grad, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_kp_weight_decay_shrinks_feedback_to_weight_distance(kind: str) -> None:
    rule = nni_bio.get_rule("kp")
    layer = rule.linear(6, 5) if kind == "linear" else rule.conv2d(4, 6, 3, padding=1)
    lr, decay = 0.1, 0.5
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=decay)
    distance = (layer.feedback.matrix - layer.weight).norm().item()
    for _ in range(4):
        optimizer.zero_grad()
        layer(torch.randn((8, 6) if kind == "linear" else (2, 4, 5, 5))).square().mean().backward()
        optimizer.step()
        new_distance = (layer.feedback.matrix - layer.weight).norm().item()
        assert new_distance == pytest.approx((1 - lr * decay) * distance, rel=1e-4)
        distance = new_distance


DFA_CASES = [
    pytest.param("linear", dict(in_features=6, out_features=5), (4, 6), id="linear"),
    pytest.param("linear", dict(in_features=6, out_features=5, bias=False), (2, 3, 6), id="linear-3d-no_bias"),
] + [pytest.param("conv2d", kw, shape, id=f"conv2d-{name}") for name, kw, shape in CONV_CASES]


@pytest.mark.parametrize("kind, kwargs, shape", DFA_CASES)
def test_dfa_input_gradient_is_projected_output_error(kind: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    layer = build("dfa", kind, kwargs)
    model = nni_bio.enable_dfa(nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(3)))
    x = torch.randn(shape, requires_grad=True)
    logits = model(x)
    out = layer(x.detach()).detach().requires_grad_(True)
    e = torch.randn_like(logits)
    grad_at_layer_output = torch.autograd.grad(model[2](model[1](out)), out, e)[0]  # exact BP above the layer
    (logits * e).sum().backward()  # dL/dlogits == e

    torch.testing.assert_close(error_bus(model).error, e, rtol=0, atol=0)
    features = math.prod(shape[1:])
    projection = layer.feedback.projection(3, features, x.device)
    assert projection.shape == (3, features)
    assert projection.abs().max() <= math.sqrt(6.0 / (3 + features))
    torch.testing.assert_close(x.grad, (e @ projection).view(shape), **TOL)
    assert_local_grads_exact(layer, x, grad_at_layer_output)


def test_dfa_projection_depends_only_on_seed() -> None:
    a = nni_bio.get_rule("dfa").linear(6, 5)
    b = nni_bio.get_rule("dfa").linear(6, 5)
    assert not torch.equal(a.feedback.projection(3, 6, torch.device("cpu")),
                           b.feedback.projection(3, 6, torch.device("cpu")))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.feedback.projection(3, 6, torch.device("cpu")),
                               b.feedback.projection(3, 6, torch.device("cpu")), rtol=0, atol=0)
