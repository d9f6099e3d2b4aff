"""Linear and conv2d layers whose backward pass follows a learning rule.

The forward pass is the ordinary ``F.linear``/``F.conv2d`` with the layer's own ``weight`` and
``bias``; the rule's :class:`~nni_bio.rule.Feedback` module (attribute ``feedback``) decides the
backward pass. A layer can switch rules in place (:meth:`RuleLayer.set_rule`) and keeps its weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from nni_bio.errors import RuleStateError

if TYPE_CHECKING:
    from nni_bio.dfa import ErrorBus
    from nni_bio.rule import LearningRule

Needs = tuple[bool, bool, bool]


class LayerOp:
    """Geometry of a layer and its fused backward (input, weight and bias gradients in one call)."""

    kind: str

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        """Gradients with ``matrix`` in place of W for the input; exact local weight/bias gradients."""
        raise NotImplementedError


class LinearOp(LayerOp):
    kind = "linear"

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ matrix.to(g.dtype)).view(x.shape) if needs[0] else None
        gw = g2.t() @ x.reshape(-1, x.shape[-1]).to(g.dtype) if needs[1] else None
        gb = g2.sum(0) if needs[2] else None
        return gx, gw, gb


class Conv2dOp(LayerOp):
    kind = "conv2d"

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        if x.dim() == 3:  # unbatched (C, H, W) input, which F.conv2d (and nn.Conv2d) accept
            gx, gw, gb = self.grads(g.unsqueeze(0), x.unsqueeze(0), matrix, needs)
            return (gx.squeeze(0) if gx is not None else None), gw, gb
        # The weight gradient of a convolution depends on the weight's shape only, so one call with
        # the feedback tensor in W's place gives the substituted input gradient and the exact weight
        # gradient: the same cost as plain backprop.
        bias_sizes = [matrix.shape[0]] if needs[2] else None
        return torch.ops.aten.convolution_backward(
            g, x.to(g.dtype), matrix.to(g.dtype), bias_sizes, list(self.stride), list(self.padding),
            list(self.dilation), False, [0, 0], self.groups, list(needs),
        )


class _RuleFunction(torch.autograd.Function):
    """Forward: the ordinary layer. Backward: whatever the layer's Feedback module says."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, layer: RuleLayer) -> Tensor:
        out = layer.op.forward(x, weight, bias)
        ctx.layer_feedback, ctx.op, ctx.has_bias = layer.feedback, layer.op, bias is not None
        saved_out = out if layer.feedback.needs_output else None
        ctx.save_for_backward(x, feedback, saved_out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, feedback, out = ctx.saved_tensors
        nx, nw, nb, nfb = ctx.needs_input_grad[:4]
        needs = (nx, nw or nfb, nb and ctx.has_bias)
        gx, gw, gb = ctx.layer_feedback.backward(ctx.op, grad_out, x, feedback, out, needs)
        # A feedback tensor that requires grad (Kolen-Pollack) gets exactly W's gradient.
        return gx, gw if nw else None, gb, gw if nfb else None, None


class RuleLayer(nn.Module):
    """Base of the layers hosting a learning rule: ``weight``, ``bias``, ``feedback`` and ``rule_name``."""

    op: LayerOp
    weight: nn.Parameter
    bias: nn.Parameter | None
    feedback: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.rule_name = ""
        self.bus: ErrorBus | None = None  # set by nni_bio.enable_dfa for rules needing the output error

    def _init_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def rule(self) -> LearningRule:
        from nni_bio._registry import get_rule

        return get_rule(self.rule_name)

    def set_rule(self, rule: LearningRule | str) -> RuleLayer:
        """Switch to another learning rule in place; weight and bias are kept, rule state is fresh.

        A rule with learned feedback adds Parameters: rebuild the optimizer after switching.
        """
        from nni_bio._registry import get_rule

        rule = get_rule(rule) if isinstance(rule, str) else rule
        rule._check_kind(self.op.kind)
        if getattr(self.op, "groups", 1) != 1 and not rule.info.supports_groups:
            from nni_bio.errors import UnsupportedLayerError

            raise UnsupportedLayerError(f"rule {rule.info.name!r} does not support grouped or depthwise convolutions")
        self.rule_name = rule.info.name
        self.feedback = rule.feedback(self)
        return self

    def forward(self, x: Tensor) -> Tensor:
        fb = self.feedback
        if fb.exact:
            return self.op.forward(x, self.weight, self.bias)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return self.op.forward(x, weight, bias)  # no backward can follow: skip the rule's work
        with torch.autocast(x.device.type, enabled=False):
            matrix = fb.feedback_weight(self.weight, self.training)
            return _RuleFunction.apply(x, weight, bias, matrix, self)

    def get_extra_state(self) -> dict[str, Any]:
        return {"rule": self.rule_name}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("rule") if isinstance(state, dict) else None
        if saved != self.rule_name:
            raise RuleStateError(
                f"this state was saved from a layer trained with rule {saved!r}, but the layer uses "
                f"{self.rule_name!r}; call nni_bio.swap_rule(model, {saved!r}) (or layer.set_rule) before loading"
            )


class RuleLinear(RuleLayer):
    """``torch.nn.Linear`` with a learning rule. Build it with ``get_rule(name).linear(...)``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, rule: LearningRule | str = "backprop"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.op = LinearOp()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self._init_parameters()
        self.set_rule(rule)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, rule={self.rule_name}"


class RuleConv2d(RuleLayer):
    """``torch.nn.Conv2d`` (zero padding) with a learning rule. Build it with ``get_rule(name).conv2d(...)``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
        stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
        rule: LearningRule | str = "backprop",
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.op = Conv2dOp(_pair(stride), _pair(padding), _pair(dilation), groups)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._init_parameters()
        self.set_rule(rule)

    @property
    def stride(self) -> tuple[int, int]:
        return self.op.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.op.padding

    @property
    def dilation(self) -> tuple[int, int]:
        return self.op.dilation

    @property
    def groups(self) -> int:
        return self.op.groups

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, rule={self.rule_name}")

