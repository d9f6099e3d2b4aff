"""The learning-rule contract: what a rule declares and what it must provide.

A *learning rule* decides how one weight-bearing layer (linear or conv2d) learns. The forward pass is
always the ordinary layer; a rule changes the backward pass. It does so through a per-layer
:class:`Feedback` module that the host layer (:class:`nni_bio.layers.RuleLinear`,
:class:`nni_bio.layers.RuleConv2d`) owns under the attribute ``feedback``. Rule state therefore shows
up in ``state_dict`` under ``feedback.*``: fixed tensors as buffers, learned ones as Parameters.

Plugin authors subclass :class:`LearningRule`, set ``info`` and implement ``feedback``, then register
the rule under the ``nni_bio.rules`` entry-point group::

    [project.entry-points."nni_bio.rules"]
    my_rule = "my_package.my_rule:MyRule"

Run ``nni_bio.testing.check_rule("my_rule")`` to check it behaves like the built-ins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor, nn

from nni_bio.errors import UnsupportedLayerError

if TYPE_CHECKING:
    from nni_bio.layers import LayerOp, RuleConv2d, RuleLayer, RuleLinear

#: Version of the rule contract in this module. A plugin declares the version it was written for in
#: ``RuleInfo.api_version``; nni-bio refuses a plugin whose version it does not support.
PLUGIN_API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})

Family = Literal["backprop", "feedback", "direct", "local"]
LayerKind = Literal["linear", "conv2d"]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RuleInfo:
    """What a rule declares about itself.

    Attributes:
        name: identifier (``^[a-z][a-z0-9_]*$``); it becomes a ``LayerChoice`` key and a module name.
        family: ``backprop`` (exact), ``feedback`` (error sent down through another tensor than W),
            ``direct`` (the network's output error is projected to the layer), ``local`` (the weight
            update ignores the error, e.g. Hebbian).
        summary: one line for ``nni-bio rules``.
        paper: reference of the method.
        api_version: plugin API version the rule was written for.
        layer_kinds: layer kinds the rule can build.
        supports_groups: whether grouped/depthwise conv2d is supported.
        needs_global_error: the rule needs the network output error (call :func:`nni_bio.enable_dfa`).
        learned_feedback: the rule owns trainable feedback Parameters besides weight and bias.
    """

    name: str
    family: Family
    summary: str
    paper: str = ""
    api_version: int = PLUGIN_API_VERSION
    layer_kinds: tuple[LayerKind, ...] = ("linear", "conv2d")
    supports_groups: bool = True
    needs_global_error: bool = False
    learned_feedback: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"rule name {self.name!r} must match {_NAME.pattern} (it becomes a module name)")


class Feedback(nn.Module):
    """Per-layer state and backward pass of a learning rule.

    The default backward sends the error down through :meth:`feedback_weight` and computes the exact
    local weight and bias gradients, in one fused call (family ``feedback``). Rules that do something
    else (direct projection, Hebbian pseudo-gradients) override :meth:`backward`.

    Attributes:
        exact: if true the host layer runs plain ``F.linear``/``F.conv2d`` (true backprop).
        needs_output: if true the layer output is saved for :meth:`backward`.
    """

    exact: ClassVar[bool] = False
    needs_output: ClassVar[bool] = False

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        """Tensor of ``weight``'s shape that replaces W when the error is sent to the layer below.

        Called at forward time only when a backward pass can follow. ``training`` is true for a
        training-mode forward (rules that redraw per step do it then, never in eval).
        A returned tensor that requires grad receives the same gradient as W (Kolen-Pollack).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement feedback_weight() or backward()")

    def backward(
        self, op: LayerOp, grad_out: Tensor, x: Tensor, feedback: Tensor, output: Tensor | None,
        needs: tuple[bool, bool, bool],
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Return ``(grad_input, grad_weight, grad_bias)`` for one backward call.

        Args:
            op: geometry of the layer, with fused ``op.grads(...)`` helpers.
            grad_out: gradient arriving at the layer output.
            x: the layer input (in the compute dtype).
            feedback: what :meth:`feedback_weight` returned at forward time.
            output: the layer output if ``needs_output`` else ``None``.
            needs: which of input, weight and bias need a gradient.
        """
        return op.grads(grad_out, x, feedback, needs)


class LearningRule:
    """A learning rule: builds layers whose backward follows it.

    Subclasses set ``info`` and implement :meth:`feedback`. Instances are stateless; all per-layer
    state lives in the :class:`Feedback` module.

    Example:
        >>> import nni_bio, torch
        >>> layer = nni_bio.get_rule("fa").linear(4, 3)
        >>> layer(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    info: ClassVar[RuleInfo]

    def feedback(self, layer: RuleLayer) -> Feedback:
        """Build the per-layer state for ``layer`` (it already has ``weight``, ``bias`` and ``op``)."""
        raise NotImplementedError

    def linear(self, in_features: int, out_features: int, *, bias: bool = True) -> RuleLinear:
        """A linear layer ``y = x W^T + b`` trained with this rule."""
        from nni_bio.layers import RuleLinear

        self._check_kind("linear")
        return RuleLinear(in_features, out_features, bias=bias, rule=self)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
        stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
    ) -> RuleConv2d:
        """A 2-D convolution trained with this rule (same arguments as ``torch.nn.Conv2d``)."""
        from nni_bio.layers import RuleConv2d

        self._check_kind("conv2d")
        if groups != 1 and not self.info.supports_groups:
            raise UnsupportedLayerError(f"rule {self.info.name!r} does not support grouped or depthwise convolutions")
        return RuleConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                          dilation=dilation, groups=groups, bias=bias, rule=self)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.info.layer_kinds:
            raise UnsupportedLayerError(
                f"rule {self.info.name!r} cannot build a {kind} layer (it supports: {', '.join(self.info.layer_kinds)})"
            )

    def __repr__(self) -> str:
        return f"<learning rule {self.info.name!r} ({self.info.family})>"


def xavier_std(weight: Tensor) -> float:
    """Standard deviation of Xavier init for ``weight`` with PyTorch's fan conventions."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return (2.0 / (fan_in + fan_out)) ** 0.5


def xavier_like(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A fresh Xavier-uniform tensor of ``weight``'s shape, dtype and device (fp32 if weight is low precision)."""
    bound = 3.0 ** 0.5 * xavier_std(weight)
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    out = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    return out.uniform_(-bound, bound, generator=generator)


__all__ = ["PLUGIN_API_VERSION", "Feedback", "LearningRule", "RuleInfo", "xavier_like", "xavier_std"]
