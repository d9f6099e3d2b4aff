"""nni_bio.enable_dfa: the output-error bus that direct-feedback layers read in backward."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nni_bio
from nni_bio.core.error_bus import error_bus
from nni_bio.core.errors import DFAWiringError

R = nni_bio.get_rule


def mixed_convnet() -> nn.Sequential:
    """conv->BN->ReLU (backprop), depthwise dfa conv, 1x1 usf conv, dfa linear, fa head."""
    return nn.Sequential(
        R("backprop").conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        R("dfa").conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        R("usf").conv2d(8, 8, 1), nn.ReLU(),
        nn.Flatten(), R("dfa").linear(8 * 4 * 4, 16), nn.ReLU(), R("fa").linear(16, 4),
    )


def prototypes(n: int = 64) -> tuple[Tensor, Tensor]:
    """Four classes: a fixed 3x4x4 pattern each, plus noise."""
    protos = torch.randn(4, 3, 4, 4)
    y = torch.arange(n) % 4
    return protos[y] + 0.5 * torch.randn(n, 3, 4, 4), y


def test_unwired_dfa_raises_instead_of_backprop() -> None:
    model = mixed_convnet()
    x, y = prototypes(8)
    loss = F.cross_entropy(model(x), y)
    with pytest.raises(DFAWiringError, match="enable_dfa"):
        loss.backward()


def test_mixed_network_learns_with_plain_training_loop() -> None:
    model = nni_bio.enable_dfa(mixed_convnet())
    x, y = prototypes()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    depthwise_before = model[3].weight.detach().clone()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert not torch.allclose(model[3].weight, depthwise_before)  # the dfa layers train too


def test_backward_of_a_loss_not_from_the_main_output_raises() -> None:
    model = nni_bio.enable_dfa(mixed_convnet())
    x, y = prototypes(8)
    F.cross_entropy(model(x), y).backward()  # leaves an output error on the bus
    model(x)  # a new forward clears it: a stale error must not be projected
    hidden = model[:10](x)  # a second forward through part of the model only: no output error
    with pytest.raises(DFAWiringError):
        hidden.square().sum().backward()


class WithAux(nn.Module):
    """DARTS-style model returning (logits, aux_logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(R("backprop").linear(6, 8), nn.ReLU())
        self.dfa = R("dfa").linear(8, 8)
        self.head = nn.Linear(8, 3)
        self.aux = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.head(torch.relu(self.dfa(h))), self.aux(h)


def test_only_the_main_output_feeds_the_bus() -> None:
    model = nni_bio.enable_dfa(WithAux())
    hidden: list[Tensor] = []
    model.dfa.register_forward_pre_hook(lambda m, args: hidden.append(args[0]) or args[0].retain_grad())
    logits, aux = model(torch.randn(4, 6))
    e_main, e_aux = torch.randn_like(logits), torch.randn_like(aux)
    ((logits * e_main).sum() + (aux * e_aux).sum()).backward()
    torch.testing.assert_close(error_bus(model).error, e_main, rtol=0, atol=0)
    projection = model.dfa.feedback.projection(3, 8, torch.device("cpu"))
    torch.testing.assert_close(hidden[0].grad, e_main @ projection + e_aux @ model.aux.weight)


def test_enable_dfa_is_idempotent() -> None:
    model = mixed_convnet()
    assert nni_bio.enable_dfa(model) is model
    bus = error_bus(model)
    hooks = (len(model._forward_pre_hooks), len(model._forward_hooks))
    assert nni_bio.enable_dfa(model) is model
    assert error_bus(model) is bus
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == hooks
    x, y = prototypes(8)
    F.cross_entropy(model(x), y).backward()
    assert bus.error is not None and bus.error.shape == (8, 4)


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_copy_of_wired_model_has_its_own_bus(duplicate: Callable[[nn.Module], nn.Module]) -> None:
    model = nni_bio.enable_dfa(mixed_convnet())
    twin = duplicate(model)
    bus, twin_bus = error_bus(model), error_bus(twin)
    assert twin_bus is not None and twin_bus is not bus
    assert all(m.bus is twin_bus for m in twin.modules() if isinstance(m, nni_bio.RuleLayer))
    x, y = prototypes(8)
    F.cross_entropy(twin(x), y).backward()
    assert twin_bus.error is not None and bus.error is None
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(model[3].weight.grad, twin[3].weight.grad)
