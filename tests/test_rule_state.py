"""Rule state: per-layer seeds that leave the global RNG alone, and seeds and step counters kept as
host ints (no device sync per step) in a state-dict format that old checkpoints still load into."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nni_bio
from nni_bio.core.layers import RuleLayer

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]
MIX = 0x9E3779B97F4A7C15  # brSF's (seed, step) mixing constant, part of its checkpoint format


# -- item 9: the rule of one layer does not change the others -----------------------------------


def small_net(middle_rule: str, outer_rule: str = "usf") -> nn.Sequential:
    """conv -> conv (``middle_rule``) -> linear -> linear."""
    outer, middle = nni_bio.get_rule(outer_rule), nni_bio.get_rule(middle_rule)
    return nn.Sequential(outer.conv2d(3, 4, 3, padding=1), nn.ReLU(), middle.conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), middle.linear(4 * 5 * 5, 8), nn.ReLU(), outer.linear(8, 3))


def build(middle_rule: str, outer_rule: str = "usf") -> tuple[nn.Sequential, Tensor]:
    torch.manual_seed(42)
    net = small_net(middle_rule, outer_rule)
    return net, torch.get_rng_state()


@pytest.mark.parametrize("outer", ["usf", "fa"])
def test_one_layers_rule_leaves_other_weights_and_the_global_rng_alone(outer: str) -> None:
    reference, reference_rng = build("backprop", outer)
    weights = {k: v for k, v in reference.state_dict().items() if k.endswith(("weight", "bias"))}
    for rule in BUILTINS:
        net, rng = build(rule, outer)
        assert torch.equal(rng, reference_rng), f"building a {rule} layer moved the global RNG differently"
        for key, value in weights.items():  # every layer's initial weights, the swapped ones' too
            torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0, msg=f"{rule}: {key}")
        assert [m.seed for m in net.modules() if isinstance(m, RuleLayer)] == \
            [m.seed for m in reference.modules() if isinstance(m, RuleLayer)]


def test_feedback_state_comes_from_the_layer_seed() -> None:
    net, _ = build("fa")
    layers = [m for m in net.modules() if isinstance(m, RuleLayer)]
    assert len({m.seed for m in layers}) == len(layers)  # one stream per layer
    conv = net[2]
    state = torch.get_rng_state()
    nni_bio.swap_rule(net, {"2": "usf"})
    nni_bio.swap_rule(net, {"2": "fa"})  # a fresh FA state, from the same seed: the same B
    assert torch.equal(torch.get_rng_state(), state)  # swapping draws nothing from the global RNG
    expected = torch.empty_like(conv.weight).uniform_(-1, 1, generator=torch.Generator().manual_seed(conv.seed))
    bound = math.sqrt(6.0 / (4 * 9 + 4 * 9))
    torch.testing.assert_close(conv.feedback.matrix, expected * bound, rtol=0, atol=1e-7)


def test_layer_seed_travels_with_the_state_dict() -> None:
    a, _ = build("fa")
    torch.manual_seed(1)
    b = small_net("fa")
    b.load_state_dict(a.state_dict())
    assert [m.seed for m in b.modules() if isinstance(m, RuleLayer)] == \
        [m.seed for m in a.modules() if isinstance(m, RuleLayer)]
    nni_bio.swap_rule(a, "frsf")
    nni_bio.swap_rule(b, "frsf")
    torch.testing.assert_close(a[2].feedback.magnitude, b[2].feedback.magnitude, rtol=0, atol=0)


# -- item 8: host ints, no per-step generator or sync; old state dicts load ---------------------


def test_brsf_state_is_host_ints_and_one_pool() -> None:
    layer = nni_bio.get_rule("brsf").linear(6, 5)
    layer.train()
    for _ in range(3):
        layer(torch.randn(4, 6, requires_grad=True)).sum().backward()
    fb = layer.feedback
    assert type(fb.seed) is int and type(fb.step) is int and fb.step == 3 and fb.draws == 1
    pool = fb.pool(layer.weight)
    layer(torch.randn(4, 6, requires_grad=True)).sum().backward()
    assert fb.pool(layer.weight) is pool  # drawn once, not per step
    assert not list(fb.buffers())
    state = layer.state_dict()
    assert state["feedback.step"].dtype == torch.int64 and int(state["feedback.step"]) == 4
    assert int(state["feedback.draws"]) == 1


def old_state(layer: RuleLayer, **feedback: int) -> dict:
    """A state dict as nni-bio 0.1.0 saved it: seeds and counters as int64 buffers, no layer seed."""
    state = {"weight": layer.weight.detach().clone(), "_extra_state": {"rule": layer.rule_name}}
    if layer.bias is not None:
        state["bias"] = layer.bias.detach().clone()
    state.update({f"feedback.{k}": torch.tensor(v, dtype=torch.int64) for k, v in feedback.items()})
    return state


def test_old_brsf_state_dict_loads_and_resumes_the_same_draws() -> None:
    saved = old_state(nni_bio.get_rule("brsf").linear(6, 5), seed=123456789, step=7)
    layer = nni_bio.get_rule("brsf").linear(6, 5)
    seed = layer.seed
    layer.load_state_dict(saved)
    assert (layer.feedback.seed, layer.feedback.step, layer.seed) == (123456789, 7, seed)
    layer.train()
    x = torch.randn(3, 6, requires_grad=True)
    g = torch.randn(3, 5)
    layer(x).backward(g)
    generator = torch.Generator().manual_seed((123456789 * MIX + 8) % (2**63 - 1))  # step 8 is drawn
    bound = math.sqrt(6.0 / (6 + 5))
    magnitude = torch.empty(5, 6).uniform_(-bound, bound, generator=generator).abs()
    torch.testing.assert_close(x.grad, g @ (magnitude * torch.sign(saved["weight"])), rtol=1e-5, atol=1e-6)
    del saved["feedback.step"]
    with pytest.raises(RuntimeError, match="feedback.step"):
        nni_bio.get_rule("brsf").linear(6, 5).load_state_dict(saved)


def test_old_dfa_state_dict_loads_with_its_projection() -> None:
    saved = old_state(nni_bio.get_rule("dfa").linear(6, 5), seed=987654321)
    layer = nni_bio.get_rule("dfa").linear(6, 5)
    layer.load_state_dict(saved)
    assert layer.feedback.seed == 987654321 and type(layer.feedback.seed) is int
    bound = math.sqrt(6.0 / (3 + 6))
    expected = torch.empty(3, 6).uniform_(-bound, bound, generator=torch.Generator().manual_seed(987654321))
    torch.testing.assert_close(layer.feedback.projection(3, 6, torch.device("cpu")), expected, rtol=0, atol=0)
    assert "feedback.seed" in layer.state_dict() and not list(layer.feedback.buffers())


def test_dfa_projection_is_built_once() -> None:
    layer = nni_bio.get_rule("dfa").linear(6, 5)
    model = nni_bio.enable_dfa(nn.Sequential(layer, nn.ReLU(), nni_bio.get_rule("backprop").linear(5, 3)))
    seen = []
    for _ in range(3):
        F.cross_entropy(model(torch.randn(4, 6, requires_grad=True)), torch.tensor([0, 1, 2, 0])).backward()
        seen.append(next(iter(layer.feedback._cache.values())))
    assert seen[0] is seen[1] is seen[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("rule", ["brsf", "dfa", "fa", "frsf", "usf", "kp"])
def test_no_host_sync_per_training_step_on_gpu(rule: str) -> None:
    model = nn.Sequential(nni_bio.get_rule(rule).conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nni_bio.get_rule(rule).linear(8 * 8 * 8, 10)).cuda()
    nni_bio.enable_dfa(model)
    x, y = torch.randn(4, 3, 8, 8, device="cuda"), torch.randint(0, 10, (4,), device="cuda")
    F.cross_entropy(model(x), y).backward()  # first step: lazy state (DFA's projection) is built
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            F.cross_entropy(model(x), y).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
