"""Conformance checks every learning rule should pass: the built-ins do, and plugin authors can run
the same ones on theirs.

Besides the mechanics (forward, state dict, copies, eval purity), the checks hold a rule to the math
of the contract: the feedback tensor has W's shape and leaks no gradient into W (only rules declaring
``learned_feedback`` may return one that requires grad); the weight and bias gradients are the exact
local ones (families other than ``local``); and with B = W a ``feedback``-family rule gives backprop's
input gradient.

Example:
    >>> from nni_bio.testing import check_rule
    >>> check_rule("fa")   # raises AssertionError with a message on the first failure

Or, in a plugin's pytest suite::

    import pytest
    from nni_bio.testing import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(check):
        run_check("my_rule", check)
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.core.error_bus import enable_dfa
from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import LearningRule

Check = Callable[[LearningRule], None]
Reference = Callable[[Tensor, Tensor, "Tensor | None", RuleLayer], Tensor]

# (kind, constructor arguments, input shape) of the layers every check builds; tiny sizes.
LAYER_CASES: list[tuple[str, dict, tuple[int, ...]]] = [
    ("linear", dict(in_features=6, out_features=5), (4, 6)),
    ("linear", dict(in_features=6, out_features=5, bias=False), (2, 3, 6)),
    ("conv2d", dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (2, 4, 7, 7)),
    ("conv2d", dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=2, dilation=2, groups=4,
                    bias=False), (2, 4, 9, 9)),
    ("conv2d", dict(in_channels=4, out_channels=6, kernel_size=(1, 3), groups=2), (2, 4, 5, 5)),
    ("conv2d", dict(in_channels=4, out_channels=6, kernel_size=(2, 3), padding="same"), (2, 4, 5, 6)),
]


def _plain_linear(x: Tensor, weight: Tensor, bias: Tensor | None, layer: RuleLayer) -> Tensor:
    return F.linear(x, weight, bias)


def _plain_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, layer: RuleLayer) -> Tensor:
    with warnings.catch_warnings():  # padding="same" with an even kernel: torch notes it pads a copy
        warnings.simplefilter("ignore", UserWarning)
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def _layers(rule: LearningRule) -> Iterator[tuple[RuleLayer, Tensor, Reference]]:
    """(layer, input, plain-torch forward ``ref(x, weight, bias, layer)``) for every case the rule supports."""
    for kind, kwargs, shape in LAYER_CASES:
        if kind not in rule.info.layer_kinds or (kwargs.get("groups", 1) != 1 and not rule.info.supports_groups):
            continue
        torch.manual_seed(0)
        if kind == "linear":
            layer, ref = rule.linear(**kwargs), _plain_linear
        else:
            args = dict(kwargs)
            layer = rule.conv2d(args.pop("in_channels"), args.pop("out_channels"), args.pop("kernel_size"), **args)
            ref = _plain_conv2d
        yield layer, torch.randn(shape), ref


def _backward(layer: nn.Module, x: Tensor) -> Tensor:
    """Run a forward and a loss backward through a tiny head; return the output."""
    model = enable_dfa(nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(3)))
    out = model(x)
    F.cross_entropy(out, torch.arange(x.shape[0]) % 3).backward()
    return out


def _gradient_at_output(layer: RuleLayer, x: Tensor) -> Tensor:
    """A training step through the tiny head (:func:`_backward`); returns dL/d(layer output)."""
    seen: list[Tensor] = []

    def capture(module: nn.Module, args: tuple, out: Tensor) -> None:
        out.register_hook(seen.append)

    handle = layer.register_forward_hook(capture)
    try:
        _backward(layer, x)
    finally:
        handle.remove()
    return seen[0]


def _plain_grads(layer: RuleLayer, x: Tensor, ref: Reference, g: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact backprop gradients (input, weight, bias) of the layer's forward for upstream gradient ``g``."""
    x = x.detach().clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True) if layer.bias is not None else None
    grads = torch.autograd.grad(ref(x, w, b, layer), [x, w] + ([b] if b is not None else []), g)
    return grads[0], grads[1], (grads[2] if b is not None else None)


def check_feedback_tensor(rule: LearningRule) -> None:
    """``feedback_weight`` returns a tensor of W's shape through which no gradient can reach W.

    Without ``RuleInfo.learned_feedback`` it must not require grad (the gradient sent to it would
    flow back into W); learned feedback may require grad but must not depend on W.
    """
    for layer, _, _ in _layers(rule):
        if layer.feedback.exact:
            continue
        name = rule.info.name
        for training in (True, False):
            matrix = layer.feedback.feedback_weight(layer.weight, training)
            assert isinstance(matrix, Tensor) and matrix.shape == layer.weight.shape, (
                f"{name}: feedback_weight() must return a tensor of W's shape {tuple(layer.weight.shape)}, "
                f"got {tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__}")
            if not matrix.requires_grad:
                continue
            assert rule.info.learned_feedback, (
                f"{name}: feedback_weight() returns a tensor that requires grad, so W's gradient would leak "
                "back into W through it; compute it under torch.no_grad() (or .detach() it), or declare "
                "RuleInfo(learned_feedback=True) for feedback that learns")
            (reach,) = torch.autograd.grad(matrix.sum(), layer.weight, allow_unused=True)
            assert reach is None or not reach.any(), (
                f"{name}: the learned feedback tensor depends on W, so gradient leaks into W through it; "
                "make it a Parameter of its own")


def check_forward_matches_torch(rule: LearningRule) -> None:
    """The forward pass is the ordinary layer with the layer's own weight and bias."""
    for layer, x, ref in _layers(rule):
        layer.eval()  # local rules must not change anything in eval
        with torch.no_grad():
            expected = ref(x, layer.weight, layer.bias, layer)
        torch.testing.assert_close(layer(x), expected, msg=lambda m: f"{rule.info.name}: forward differs: {m}")


def check_parameters(rule: LearningRule) -> None:
    """Only weight and bias are Parameters, unless the rule declares learned feedback."""
    for layer, _, _ in _layers(rule):
        names = {n for n, _ in layer.named_parameters()}
        extra = names - {"weight", "bias"}
        assert rule.info.learned_feedback or not extra, (
            f"{rule.info.name}: feedback tensors must be buffers, found Parameters {sorted(extra)}")
        assert isinstance(layer, RuleLayer) and layer.rule_name == rule.info.name


def check_backward(rule: LearningRule) -> None:
    """A training step gives finite gradients of the right shapes to the input, weight and bias."""
    for layer, x, _ in _layers(rule):
        layer.train()
        x = x.clone().requires_grad_(True)
        _backward(layer, x)
        assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all(), \
            f"{rule.info.name}: bad input gradient"
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all(), \
                f"{rule.info.name}: bad gradient for {name}"


def check_exact_local_gradients(rule: LearningRule) -> None:
    """The weight and bias gradients are the exact local ones (plain torch's for the gradient that
    reaches the layer output): only the error sent down may change. Rules of the ``local`` family,
    whose weight update ignores the error, are exempt."""
    if rule.info.family == "local":
        return
    for layer, x, ref in _layers(rule):
        layer.train()
        g = _gradient_at_output(layer, x)
        _, gw, gb = _plain_grads(layer, x, ref, g)
        name = rule.info.name
        torch.testing.assert_close(layer.weight.grad, gw, msg=lambda m: f"{name}: weight gradient is not exact: {m}")
        if layer.bias is not None:
            torch.testing.assert_close(layer.bias.grad, gb, msg=lambda m: f"{name}: bias gradient is not exact: {m}")


def _transpose(weight: Tensor, training: bool) -> Tensor:
    return weight.detach()


def check_transpose_feedback_is_backprop(rule: LearningRule) -> None:
    """With W itself as the feedback tensor (B = W), a ``feedback``-family rule sends backprop's input
    gradient down: its backward uses the feedback tensor it is given, as the contract says."""
    if rule.info.family != "feedback":
        return
    for layer, x, ref in _layers(rule):
        layer.train()
        layer.feedback.feedback_weight = _transpose  # shadows the method on this instance only
        try:
            xa = x.clone().requires_grad_(True)
            out = layer(xa)
            g = torch.randn_like(out)
            out.backward(g)
        finally:
            del layer.feedback.feedback_weight
        gx, _, _ = _plain_grads(layer, x, ref, g)
        torch.testing.assert_close(xa.grad, gx, msg=lambda m: f"{rule.info.name}: with B = W the input gradient "
                                   f"is not backprop's: {m}")


def check_state_dict_round_trip(rule: LearningRule) -> None:
    """A fresh layer loading the state dict behaves identically (forward and backward)."""
    for layer, x, _ in _layers(rule):
        _backward(layer, x.clone().requires_grad_(True))  # materialise lazy state, advance counters
        state = layer.state_dict()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        torch.manual_seed(123)
        twin = copy.deepcopy(layer)
        with torch.no_grad():
            for t in list(twin.parameters()) + list(twin.buffers()):
                t.normal_() if t.is_floating_point() else t.add_(1)
        for module in twin.modules():
            for name in getattr(module, "host_state", ()):
                setattr(module, name, getattr(module, name) + 1)
        twin.load_state_dict(torch.load(buffer, weights_only=True))
        _assert_same_training(rule, layer, twin, x)


def check_copy_and_pickle(rule: LearningRule) -> None:
    """deepcopy and pickle give layers that train exactly like the original."""
    for layer, x, _ in _layers(rule):
        _assert_same_training(rule, layer, copy.deepcopy(layer), x)
        _assert_same_training(rule, layer, pickle.loads(pickle.dumps(layer)), x)


def check_swap_keeps_weights(rule: LearningRule) -> None:
    """Switching to backprop and back keeps weight and bias, and backprop gives the exact gradient."""
    for layer, x, ref in _layers(rule):
        weight = layer.weight.detach().clone()
        layer.set_rule(get_rule("backprop"))
        xa = x.clone().requires_grad_(True)
        layer(xa).square().sum().backward()
        xb = x.clone().requires_grad_(True)
        ref(xb, layer.weight, layer.bias, layer).square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)
        layer.set_rule(rule)
        assert layer.rule_name == rule.info.name
        torch.testing.assert_close(layer.weight.detach(), weight)


def check_eval_is_pure(rule: LearningRule) -> None:
    """An eval-mode forward changes no parameter or buffer."""
    for layer, x, _ in _layers(rule):
        layer.eval()
        before = {k: v.clone() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
        layer(x)
        with torch.no_grad():
            layer(x)
        for k, v in layer.state_dict().items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(v, before[k], msg=f"{rule.info.name}: eval forward changed {k}")


def _assert_same_training(rule: LearningRule, a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    grads = []
    for layer in (a, b):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(7)
        out = _backward(layer, xi)
        grads.append((out.detach(), xi.grad, layer.weight.grad))
    for ga, gb, what in zip(grads[0], grads[1], ("output", "input gradient", "weight gradient")):
        torch.testing.assert_close(ga, gb, msg=lambda m: f"{rule.info.name}: copies differ in {what}: {m}")


CHECKS: list[Check] = [
    check_feedback_tensor, check_forward_matches_torch, check_parameters, check_backward,
    check_exact_local_gradients, check_transpose_feedback_is_backprop, check_state_dict_round_trip,
    check_copy_and_pickle, check_swap_keeps_weights, check_eval_is_pure,
]


def run_check(rule: str | LearningRule, check: Check) -> None:
    """Run one conformance check on ``rule`` (a name or a rule object)."""
    check(get_rule(rule))


def check_rule(rule: str | LearningRule) -> None:
    """Run every conformance check on ``rule``; raises ``AssertionError`` on the first failure."""
    for check in CHECKS:
        run_check(rule, check)
