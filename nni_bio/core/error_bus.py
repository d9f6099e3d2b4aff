"""The output-error bus that direct-feedback rules (the ``dfa`` rule, ``nni_bio/rules/dfa.py``) read in
their backward pass.

Direct feedback alignment sends the network's output error e = dL/dlogits straight to every DFA
layer. :func:`enable_dfa` is the one call a network with DFA layers needs: it records e when the
loss is back-propagated into the model's (main) output and hands it to every rule layer. Without
it, a DFA layer's backward raises :class:`~nni_bio.core.errors.DFAWiringError` instead of silently
back-propagating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from nni_bio.core.layers import RuleLayer

_BUS_ATTR = "_nni_bio_error_bus"


def main_output(output: Any) -> Tensor:
    """The logits of a model output: the tensor itself, or the first element of a tuple/list
    (DARTS-style ``(logits, aux_logits)``: auxiliary heads never feed the bus)."""
    return output[0] if isinstance(output, (tuple, list)) else output


class ErrorBus:
    """Holds the output error of the latest backward pass through one model."""

    def __init__(self) -> None:
        self.error: Tensor | None = None

    def clear(self) -> None:
        self.error = None

    def store(self, grad: Tensor) -> None:
        self.error = grad.detach().flatten(1)


class _ClearBus:
    def __init__(self, bus: ErrorBus):
        self.bus = bus

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.bus.clear()


class _CaptureOutputError:
    def __init__(self, bus: ErrorBus, select: Callable[[Any], Tensor]):
        self.bus, self.select = bus, select

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        logits = self.select(output)
        if isinstance(logits, Tensor) and logits.requires_grad:
            logits.register_hook(self.bus.store)


def enable_dfa(model: nn.Module, select_output: Callable[[Any], Tensor] = main_output) -> nn.Module:
    """Wire ``model`` so its direct-feedback layers receive the output error. Idempotent.

    Call it once after building the model (and again after adding layers by other means than
    :func:`nni_bio.swap_rule`, which re-wires by itself). Training then uses the ordinary
    ``loss.backward(); optimizer.step()`` loop.

    Example:
        >>> import torch, nni_bio
        >>> net = torch.nn.Sequential(nni_bio.get_rule("dfa").linear(8, 16), torch.nn.ReLU(),
        ...                           nni_bio.get_rule("backprop").linear(16, 3))
        >>> net = nni_bio.enable_dfa(net)
        >>> torch.nn.functional.cross_entropy(net(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    """
    bus = getattr(model, _BUS_ATTR, None)
    if bus is None:
        bus = ErrorBus()
        setattr(model, _BUS_ATTR, bus)
        model.register_forward_pre_hook(_ClearBus(bus))
        model.register_forward_hook(_CaptureOutputError(bus, select_output))
    for module in model.modules():
        if isinstance(module, RuleLayer):
            module.bus = bus
    return model


def error_readers(model: nn.Module) -> list[RuleLayer]:
    """The rule layers of ``model`` whose rule reads the output error (``RuleInfo.needs_global_error``: DFA)."""
    return [m for m in model.modules() if isinstance(m, RuleLayer) and m.rule.info.needs_global_error]


def error_bus(model: nn.Module) -> ErrorBus | None:
    """The bus installed by :func:`enable_dfa`, if any."""
    return getattr(model, _BUS_ATTR, None)
