"""A rule convolution's backward run by autograd's own convolution node, with the feedback saved in W's
place (``nni_bio.core.layers._FeedbackInWeightsPlace``): the same gradients, bit for bit, as the rule's own
backward function (the path a linear layer, autocast, tracing and other saved-tensor hooks still take),
the same refusals, and the same one-shot searches under every strategy."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import nni_bio
from nni_bio.core.layers import _autograd_can_keep_feedback
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo

RULES = ["fa", "usf", "frsf", "brsf"]
GEOMETRIES = {
    "3x3": dict(kernel_size=3, padding=1),
    "strided": dict(kernel_size=3, stride=2, padding=1, bias=False),
    "dilated": dict(kernel_size=3, padding=2, dilation=2),
    "depthwise": dict(kernel_size=3, padding=1, groups=6),
    "grouped 1x1": dict(kernel_size=1, groups=2),
    "same, even kernel": dict(kernel_size=4, padding="same"),
}


@contextlib.contextmanager
def rule_function_path():
    """Identity saved-tensor hooks around the code: rule convolutions then take the rule's own backward
    function, as they did before autograd's node was used (and as under checkpointing)."""
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        assert not _autograd_can_keep_feedback()
        yield


def conv(rule, geometry, seed=0):
    torch.manual_seed(seed)
    return nni_bio.get_rule(rule).conv2d(6, 6, **GEOMETRIES[geometry])


def grads(layer, x, steps=2):
    """Gradients of input, weight and bias over ``steps`` forwards and backwards (brSF draws per step)."""
    out = []
    for step in range(steps):
        x_ = x.clone().requires_grad_()
        y = layer(x_)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y) * (step + 1))
        out += [x_.grad, layer.weight.grad.clone()] + ([layer.bias.grad.clone()] if layer.bias is not None else [])
        layer.zero_grad()
    return out


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("rule", RULES)
def test_gradients_are_those_of_the_rules_own_backward_bit_for_bit(rule, geometry):
    x = torch.randn(3, 6, 9, 9)
    assert _autograd_can_keep_feedback()
    fast = grads(conv(rule, geometry), x)
    with rule_function_path():
        slow = grads(conv(rule, geometry), x)
    assert len(fast) == len(slow)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.parametrize("rule", RULES)
def test_the_input_gradient_is_sent_through_the_feedback_not_w(rule):
    layer = conv(rule, "3x3")
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    g = torch.randn(2, 6, 5, 5)
    layer(x).backward(g)
    step = layer.feedback.step if rule == "brsf" else None
    if rule == "brsf":
        layer.feedback.step -= 1  # feedback_weight(training=True) draws this step's magnitudes again
    B = layer.feedback.feedback_weight(layer.weight.detach(), True)
    assert step is None or layer.feedback.step == step
    expected = torch.nn.grad.conv2d_input(x.shape, B, g, padding=1)
    assert torch.allclose(x.grad, expected, atol=1e-6)
    assert not torch.allclose(x.grad, torch.nn.grad.conv2d_input(x.shape, layer.weight.detach(), g, padding=1))
    assert torch.allclose(layer.weight.grad, torch.nn.grad.conv2d_weight(x.detach(), layer.weight.shape, g, padding=1),
                          atol=1e-5)


def test_unbatched_input_and_channels_last_give_the_same_gradients():
    for prepare in (lambda t: t[0], lambda t: t.contiguous(memory_format=torch.channels_last)):
        x = prepare(torch.randn(2, 6, 7, 7))
        for rule in RULES:
            make = lambda: conv(rule, "3x3").to(memory_format=torch.channels_last)  # noqa: E731
            fast = grads(make(), x)
            with rule_function_path():
                slow = grads(make(), x)
            assert all(torch.equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.parametrize("rule", RULES)
def test_changing_the_weight_or_the_input_in_place_before_the_backward_is_refused(rule):
    layer = conv(rule, "3x3")
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    inner = x * 1.0
    y = layer(inner)
    with torch.no_grad():
        inner.add_(1.0)  # the input the weight gradient needs
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    y = layer(x)
    with torch.no_grad():
        (layer.feedback.matrix if rule == "fa" else layer.weight).mul_(2.0)  # what B is built from
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_changing_frsf_magnitudes_in_place_before_the_backward_is_refused():
    layer = conv("frsf", "3x3")
    y = layer(torch.randn(2, 6, 5, 5, requires_grad=True))
    with torch.no_grad():
        layer.feedback.magnitude.mul_(2)  # e.g. load_state_dict between a forward and its backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_retained_graph_gives_the_same_gradients_twice_and_create_graph_still_differentiates():
    for rule in RULES:
        layer = conv(rule, "3x3")
        x = torch.randn(2, 6, 5, 5, requires_grad=True)
        y = layer(x)
        (first,) = torch.autograd.grad(y.square().sum(), x, retain_graph=True)
        (second,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.equal(first, second)
        with rule_function_path():
            twin = conv(rule, "3x3")
            for r in (layer, twin):  # brSF: the twin is at the step the layer was
                r.load_state_dict(layer.state_dict())
            yt = twin(x)
            (gt,) = torch.autograd.grad(yt.square().sum(), x, create_graph=True)
        y = layer(x)
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        assert torch.equal(g, gt)
        (gg,) = torch.autograd.grad(g.sum(), x)
        (ggt,) = torch.autograd.grad(gt.sum(), x)
        assert torch.allclose(gg, ggt, atol=1e-5)


def test_checkpointing_still_sees_every_saved_tensor_and_gets_the_same_gradients():
    x, g = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)
    for rule in RULES:
        def run(checkpointed):
            layer = conv(rule, "3x3")
            x_ = x.clone().requires_grad_()
            f = lambda t: F.relu(layer(t))  # noqa: E731
            (checkpoint(f, x_, use_reentrant=False) if checkpointed else f(x_)).backward(g)
            return x_.grad, layer.weight.grad

        (x_plain, w_plain), (x_checked, w_checked) = run(False), run(True)
        assert torch.equal(w_checked, w_plain)
        # brSF redraws on the recomputed forward (as under any checkpointing): another B, the same exact W gradient
        assert torch.equal(x_checked, x_plain) == (rule != "brsf")


def test_autocast_keeps_the_rules_own_backward():
    layer = conv("usf", "3x3")
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.grad_fn.name().endswith("_SignFeedbackFunctionBackward")
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    y = layer(x)
    assert "Convolution" in y.grad_fn.name()  # outside autocast: autograd's own node


class _Plugin(LearningRule):
    """A third-party rule with its own backward: never handed to autograd's node."""

    info = RuleInfo(name="own_backward", family="feedback", summary="test", api_version=1)

    def feedback(self, layer):
        return _OwnBackward()


class _OwnBackward(Feedback):
    def feedback_weight(self, weight, training):
        return weight.detach() * 0.5

    def backward(self, op, grad_out, x, feedback, output, needs):
        gx, gw, gb = op.grads(grad_out, x, feedback, needs)
        return gx, (gw * 2 if gw is not None else None), gb


def test_a_rule_with_its_own_backward_or_learned_feedback_keeps_its_function():
    layer = _Plugin().conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    y = layer(x)
    assert y.grad_fn.name().endswith("_RuleFunctionBackward")
    y.sum().backward()
    expected = 2 * torch.nn.grad.conv2d_weight(x.detach(), layer.weight.shape, torch.ones_like(y), padding=1)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-5)
    for rule in ("kp", "dfa"):
        kp = nni_bio.get_rule(rule).conv2d(4, 4, 3, padding=1)
        nni_bio.enable_dfa(kp) if rule == "dfa" else None
        assert kp(x).grad_fn.name().endswith("_RuleFunctionBackward")


ONE_SHOT_ARGS = {"enas": {"batches_per_update": 1, "update_times": 1},
                 "egnas": {"population_size": 4, "generations": 1},
                 "darts2": {}}


def _tensors(state, prefix=""):
    """Every tensor of a nested checkpoint dict, by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else []
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}/{key}").items()}


@pytest.mark.parametrize("strategy", ["darts", "darts2", "gumbel", "enas", "egnas"])
def test_every_one_shot_strategy_searches_exactly_as_with_the_rules_own_backward(strategy, tmp_path):
    from nni_bio.strategies.oneshot import run_oneshot
    from nni_bio.train.checkpoint import load_checkpoint

    kwargs = dict(space_args={"width": 4, "num_cells": 3, "num_nodes": 2, "rules": RULES}, train_limit=32,
                  batch_size=16, eval_derived=False, **ONE_SHOT_ARGS.get(strategy, {}))
    fast = run_oneshot("darts", strategy, "digits", epochs=1, checkpoint=tmp_path / "fast.pt", **kwargs)
    with rule_function_path():
        slow = run_oneshot("darts", strategy, "digits", epochs=1, checkpoint=tmp_path / "slow.pt", **kwargs)
    assert fast.sample == slow.sample and fast.probs == slow.probs
    assert [r.train_loss for r in fast.history] == [r.train_loss for r in slow.history]
    fast_state = _tensors(load_checkpoint(tmp_path / "fast.pt")["search"])
    slow_state = _tensors(load_checkpoint(tmp_path / "slow.pt")["search"])
    assert fast_state.keys() == slow_state.keys()
    weights = [k for k in fast_state if k.endswith(".weight") and fast_state[k].dim() == 4]
    assert len(weights) > 50  # the supernet's convolutions (and their optimizer state) are compared
    different = [k for k in fast_state if not torch.equal(fast_state[k], slow_state[k])]
    assert not different, different[:5]
