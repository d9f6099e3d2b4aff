"""nni_bio.swap_rule and rule_map: switch rules in place, keep the weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nni_bio
from nni_bio.core.error_bus import error_bus
from nni_bio.core.layers import RuleLayer


def mlp(rule: str = "backprop") -> nn.Sequential:
    r = nni_bio.get_rule(rule)
    return nn.Sequential(r.linear(4, 16), nn.ReLU(), r.linear(16, 16), nn.ReLU(), r.linear(16, 3))


def blobs(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs in 4-D."""
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = torch.arange(n) % 3
    return centers[y] + 0.3 * torch.randn(n, 4), y


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    x, y = blobs()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_swap_by_name_keeps_weights() -> None:
    model = mlp("fa")
    before = weights(model)
    assert nni_bio.swap_rule(model, "usf") is model
    assert nni_bio.rule_map(model) == {"0": "usf", "2": "usf", "4": "usf"}
    for name, value in weights(model).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_swap_by_pattern_mapping() -> None:
    model = nn.Sequential()
    model.add_module("features", mlp("backprop"))
    model.add_module("head", nni_bio.get_rule("backprop").linear(3, 2))
    nni_bio.swap_rule(model, {"features.4": "kp", "features.*": "usf"})  # first match wins
    assert nni_bio.rule_map(model) == {"features.0": "usf", "features.2": "usf", "features.4": "kp",
                                       "head": "backprop"}  # unmatched layers keep their rule


def test_swap_by_callable() -> None:
    model = mlp("backprop")
    seen: list[str] = []

    def choose(name: str, layer: RuleLayer) -> str | None:
        seen.append(name)
        return "frsf" if layer.out_features == 16 else None

    nni_bio.swap_rule(model, choose)
    assert seen == ["0", "2", "4"]
    assert nni_bio.rule_map(model) == {"0": "frsf", "2": "frsf", "4": "backprop"}


def test_swap_accepts_rule_object_and_rejects_other_specs() -> None:
    model = mlp()
    nni_bio.swap_rule(model, nni_bio.get_rule("brsf"))
    assert set(nni_bio.rule_map(model).values()) == {"brsf"}
    with pytest.raises(TypeError, match="mapping or a callable"):
        nni_bio.swap_rule(model, 3)  # type: ignore[arg-type]
    with pytest.raises(nni_bio.UnknownRuleError):
        nni_bio.swap_rule(model, {"*": "not_a_rule"})


def test_bp_trained_model_fine_tunes_with_usf() -> None:
    model = mlp("backprop")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, optimizer, steps=5)
    before = weights(model)
    nni_bio.swap_rule(model, "usf")
    for name, value in weights(model).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    losses = train(model, optimizer, steps=30)  # same optimizer: the Parameters are the same objects
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model[0].weight, before["0.weight"])


def test_swap_to_backprop_gives_exact_gradients() -> None:
    model = mlp("fa")
    x, y = blobs(8)
    nni_bio.swap_rule(model, "backprop")
    F.cross_entropy(model(x), y).backward()
    reference = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")})
    F.cross_entropy(reference(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_swap_to_dfa_wires_the_bus() -> None:
    model = mlp("backprop")
    assert error_bus(model) is None
    nni_bio.swap_rule(model, {"2": "dfa"})
    bus = error_bus(model)
    assert bus is not None and all(layer.bus is bus for layer in model if isinstance(layer, RuleLayer))
    x, y = blobs(8)
    F.cross_entropy(model(x), y).backward()  # no DFAWiringError
    assert bus.error is not None and model[0].weight.grad.abs().sum() > 0


def test_swap_rewires_new_layers_of_a_wired_model() -> None:
    model = nni_bio.enable_dfa(mlp("dfa"))
    bus = error_bus(model)
    model[4] = nni_bio.get_rule("fa").linear(16, 3)  # added by other means: not wired yet
    assert model[4].bus is None
    nni_bio.swap_rule(model, {"4": "usf"})
    assert error_bus(model) is bus and model[4].bus is bus


@pytest.mark.parametrize("rule", ["fa", "frsf", "kp", "brsf", "dfa"])
def test_swapping_to_the_rule_a_layer_has_keeps_its_state(rule: str) -> None:
    model = nni_bio.enable_dfa(mlp(rule))
    x, y = blobs(8)
    F.cross_entropy(model(x), y).backward()  # brsf: step 1
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    feedback = [m.feedback for m in model if isinstance(m, RuleLayer)]
    nni_bio.swap_rule(model, rule)
    assert [m.feedback for m in model if isinstance(m, RuleLayer)] == feedback
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_swap_fa_net_to_fa_keeps_b() -> None:
    model = mlp("fa")
    b = model[0].feedback.matrix.clone()
    nni_bio.swap_rule(model, "fa")
    torch.testing.assert_close(model[0].feedback.matrix, b, rtol=0, atol=0)
