"""RuleLinear / RuleConv2d: parameters vs buffers, state dicts, dtypes, copies, autocast, set_rule."""

from __future__ import annotations

import copy
import io
import itertools
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nni_bio
from nni_bio.core.errors import RuleStateError, UnsupportedLayerError
from nni_bio.core.layers import RuleConv2d, RuleLayer, RuleLinear
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]
NON_KP = [r for r in BUILTINS if r != "kp"]
KINDS = ["linear", "conv2d"]
# the state each rule keeps in the state dict: tensors as buffers (kp: a Parameter); seeds and step
# counters as host ints, saved as int64 tensors under the same keys as the buffers they used to be
FEEDBACK_STATE = {"backprop": set(), "usf": set(), "fa": {"feedback.matrix"}, "frsf": {"feedback.magnitude"},
                  "brsf": {"feedback.seed", "feedback.step", "feedback.draws"}, "dfa": {"feedback.seed"}, "kp": {"feedback.matrix"}}
FEEDBACK_BUFFERS = {rule: keys if rule in ("fa", "frsf") else set() for rule, keys in FEEDBACK_STATE.items()}


def make(rule: str, kind: str) -> RuleLayer:
    """A small layer (grouped for conv2d) and nothing else."""
    if kind == "linear":
        return nni_bio.get_rule(rule).linear(6, 5)
    return nni_bio.get_rule(rule).conv2d(4, 6, 3, padding=1, groups=2)


def make_input(kind: str, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn((4, 6) if kind == "linear" else (2, 4, 5, 5), dtype=dtype)


def train_step(layer: RuleLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Forward and backward through a tiny wired head; returns (output, input grad, weight grad)."""
    layer.train()
    layer.zero_grad()
    model = nni_bio.enable_dfa(nn.Sequential(layer, nn.Flatten()))
    x = x.clone().requires_grad_(True)
    out = model(x)
    weights = torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)
    F.cross_entropy(out * weights, torch.arange(out.shape[0]) % out.shape[1]).backward()
    return out.detach(), x.grad, layer.weight.grad.clone()


def assert_same_training(a: RuleLayer, b: RuleLayer, x: Tensor) -> None:
    for ta, tb in zip(train_step(a, x), train_step(b, x)):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)


@pytest.mark.parametrize("rule", NON_KP)
def test_parameter_count_matches_torch(rule: str) -> None:
    torch_count = lambda m: sum(p.numel() for p in m.parameters())
    assert torch_count(make(rule, "linear")) == torch_count(nn.Linear(6, 5))
    assert torch_count(make(rule, "conv2d")) == torch_count(nn.Conv2d(4, 6, 3, padding=1, groups=2))
    assert torch_count(nni_bio.get_rule(rule).linear(6, 5, bias=False)) == 30


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", BUILTINS)
def test_feedback_state_is_buffers(rule: str, kind: str) -> None:
    layer = make(rule, kind)
    expected_params = {"weight", "bias"} | ({"feedback.matrix"} if rule == "kp" else set())
    assert {n for n, _ in layer.named_parameters()} == expected_params
    assert {n for n, _ in layer.named_buffers()} == FEEDBACK_BUFFERS[rule]
    assert {k for k in layer.state_dict() if k.startswith("feedback.")} == FEEDBACK_STATE[rule]
    assert layer.rule_name == rule and f"rule={rule}" in repr(layer)


def test_kp_is_the_rule_with_learned_feedback() -> None:
    assert [r for r in BUILTINS if nni_bio.get_rule(r).info.learned_feedback] == ["kp"]
    layer = make("kp", "linear")
    assert sum(p.numel() for p in layer.parameters()) == 2 * 30 + 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", BUILTINS)
def test_state_dict_round_trip(rule: str, kind: str) -> None:
    layer, x = make(rule, kind), make_input(kind)
    train_step(layer, x)  # advance brsf's step counter
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    twin = make(rule, kind)  # other random weights and feedback
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    for name, value in layer.state_dict().items():
        if isinstance(value, Tensor):
            torch.testing.assert_close(twin.state_dict()[name], value, rtol=0, atol=0)
    assert_same_training(layer, twin, x)


@pytest.mark.parametrize("saved, loaded", list(itertools.permutations(BUILTINS, 2)))
def test_loading_another_rules_state_raises(saved: str, loaded: str) -> None:
    state = make(saved, "conv2d").state_dict()
    layer = make(loaded, "conv2d")
    with pytest.raises(RuleStateError) as info:
        layer.load_state_dict(state)
    message = str(info.value)
    assert repr(saved) in message and repr(loaded) in message and "swap_rule" in message


def test_rule_state_error_inside_a_model() -> None:
    fa_model = nn.Sequential(make("fa", "linear"), nn.ReLU())
    usf_model = nn.Sequential(make("usf", "linear"), nn.ReLU())
    with pytest.raises(RuleStateError, match="'fa'"):
        usf_model.load_state_dict(fa_model.state_dict())
    nni_bio.swap_rule(usf_model, "fa")  # the fix the message suggests
    usf_model.load_state_dict(fa_model.state_dict())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", BUILTINS)
def test_to_float64(rule: str, kind: str) -> None:
    layer = make(rule, kind).to(torch.float64)
    assert all(t.dtype == torch.float64 for t in layer.parameters())
    assert all(t.dtype in (torch.float64, torch.int64) for t in layer.buffers())
    out, grad_x, grad_w = train_step(layer, make_input(kind, torch.float64))
    assert out.dtype == grad_x.dtype == grad_w.dtype == torch.float64
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_w).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", BUILTINS)
def test_deepcopy_and_pickle(rule: str, kind: str) -> None:
    layer, x = make(rule, kind), make_input(kind)
    for duplicate in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
        twin = duplicate(layer)
        assert twin.rule_name == rule
        assert_same_training(layer, twin, x)
        with torch.no_grad():
            twin.weight.add_(1.0)
        assert not torch.equal(twin.weight, layer.weight)  # independent copies


def autocast_supported(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            return F.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype == dtype
    except (RuntimeError, ValueError):
        return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", BUILTINS)
def test_autocast(rule: str, kind: str, dtype: torch.dtype) -> None:
    if not autocast_supported(dtype):
        pytest.skip(f"CPU autocast does not support {dtype}")
    layer = make(rule, kind)
    below = nni_bio.get_rule("backprop").linear(6, 6) if kind == "linear" else nn.Conv2d(4, 4, 1)
    model = nni_bio.enable_dfa(nn.Sequential(below, layer, nn.Flatten(), nn.LazyLinear(3)))
    x = make_input(kind)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(x)
        assert layer(x if kind == "conv2d" else below(x)).dtype == dtype
        loss = F.cross_entropy(logits, torch.arange(x.shape[0]) % 3)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None, name
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    assert below.weight.grad.abs().sum() > 0  # the rule's signal reached the layer below


@pytest.mark.parametrize("rule", BUILTINS)
def test_conv_accepts_unbatched_input(rule: str) -> None:
    layer = nni_bio.get_rule(rule).conv2d(4, 6, 3, padding=1)
    x = torch.randn(4, 5, 5, requires_grad=True)
    out = layer(x)
    assert out.shape == (6, 5, 5)
    if rule == "dfa":
        return  # needs a batched network output error
    out.sum().backward()
    assert x.grad.shape == x.shape and layer.weight.grad.shape == layer.weight.shape


@pytest.mark.parametrize("kind", KINDS)
def test_set_rule_keeps_weights(kind: str) -> None:
    layer = make("fa", kind)
    weight, bias = layer.weight, layer.bias
    values = weight.detach().clone()
    for rule in BUILTINS:
        assert layer.set_rule(nni_bio.get_rule(rule)) is layer
        assert layer.rule_name == rule and layer.rule is nni_bio.get_rule(rule)
        assert layer.weight is weight and layer.bias is bias
        torch.testing.assert_close(layer.weight.detach(), values, rtol=0, atol=0)


def test_forward_is_ordinary_layer() -> None:
    linear = make("fa", "linear")
    conv = make("usf", "conv2d")
    x, xc = make_input("linear"), make_input("conv2d")
    torch.testing.assert_close(linear(x), F.linear(x, linear.weight, linear.bias))
    torch.testing.assert_close(conv(xc), F.conv2d(xc, conv.weight, conv.bias, padding=1, groups=2))
    assert isinstance(linear, RuleLinear) and isinstance(conv, RuleConv2d)
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == ((1, 1), (1, 1), (1, 1), 2)


class _NoGroups(LearningRule):
    info = RuleInfo(name="test_no_groups", family="feedback", summary="test rule", supports_groups=False,
                    layer_kinds=("conv2d",))

    def feedback(self, layer: RuleLayer) -> Feedback:
        raise AssertionError("never built in these tests")


def test_unsupported_layers_are_refused() -> None:
    rule = _NoGroups()
    with pytest.raises(UnsupportedLayerError, match="grouped or depthwise"):
        rule.conv2d(4, 4, 3, groups=4)
    with pytest.raises(UnsupportedLayerError, match="cannot build a linear"):
        rule.linear(4, 4)
    with pytest.raises(UnsupportedLayerError, match="grouped or depthwise"):
        make("fa", "conv2d").set_rule(rule)
    with pytest.raises(UnsupportedLayerError, match="cannot build a linear"):
        make("fa", "linear").set_rule(rule)
    with pytest.raises(ValueError, match="divisible by groups"):
        nni_bio.get_rule("fa").conv2d(4, 6, 3, groups=4)


SAME_CASES = [(3, 1), (2, 1), ((2, 3), (1, 2)), ((4, 1), 1), (3, 2)]  # (kernel_size, dilation): odd and even totals


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # nn.Conv2d's note on even kernels
@pytest.mark.parametrize("kernel_size, dilation", SAME_CASES, ids=str)
@pytest.mark.parametrize("rule", BUILTINS)
def test_padding_same_works_as_nn_conv2d(rule: str, kernel_size, dilation) -> None:
    layer = nni_bio.get_rule(rule).conv2d(4, 6, kernel_size, padding="same", dilation=dilation)
    reference = nn.Conv2d(4, 6, kernel_size, padding="same", dilation=dilation)
    reference.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    assert layer.padding == reference.padding == "same"
    out = layer(x)
    torch.testing.assert_close(out, reference(x))
    if rule == "dfa":
        return  # its input gradient needs a network output error (tests/test_rule_math.py covers conv2d)
    g = torch.randn_like(out)
    out.backward(g)
    gx, gw, gb = torch.autograd.grad(reference(x), [x, reference.weight, reference.bias], g)
    torch.testing.assert_close(layer.weight.grad, gw)
    torch.testing.assert_close(layer.bias.grad, gb)
    if rule == "backprop":
        torch.testing.assert_close(x.grad, gx)
    elif rule in ("fa", "kp", "frsf"):
        matrix = layer.feedback.matrix if rule != "frsf" else layer.feedback.magnitude * torch.sign(layer.weight)
        with torch.no_grad():
            reference.weight.copy_(matrix)
        (expected,) = torch.autograd.grad(reference(x), x, g)  # the error goes down through B, same padding
        torch.testing.assert_close(x.grad, expected)


def test_padding_strings_are_checked_like_nn_conv2d() -> None:
    fa = nni_bio.get_rule("fa")
    with pytest.raises(ValueError, match="not supported for strided convolutions"):
        fa.conv2d(4, 4, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        fa.conv2d(4, 4, 3, padding="full")
    valid = fa.conv2d(4, 4, 3, padding="valid")
    assert valid(torch.randn(1, 4, 5, 5)).shape == (1, 4, 3, 3) and "padding=valid" in repr(valid)
    unbatched = fa.conv2d(4, 4, 2, padding="same")
    x = torch.randn(4, 5, 5, requires_grad=True)
    unbatched(x).sum().backward()
    assert x.grad.shape == x.shape
