"""Linear and conv2d layers whose backward pass follows a learning rule.

The forward pass is the ordinary ``F.linear``/``F.conv2d`` with the layer's own ``weight`` and
``bias``; the rule's :class:`~nni_bio.core.rule.Feedback` module (attribute ``feedback``) decides the
backward pass. A layer holds its rule object (``layer.rule``), never looks rule names up, and can
switch rules in place (:meth:`RuleLayer.set_rule`) keeping its weights.

This module is the bottom of the rule core: it knows a rule only through the object it is given.
``rule.py`` (the contract and the ``rule.linear``/``rule.conv2d`` builders) builds on it, the registry
(``_registry.py``) on both, and ``error_bus.py``, ``swap.py`` and ``testing.py`` on top.

Reproducibility: every layer makes the same draws from the global RNG whatever its rule (Xavier
weights, then one 63-bit :attr:`RuleLayer.seed`); rules draw their feedback state from
:meth:`RuleLayer.rule_generator`, a private stream seeded by it. The rule chosen for one layer
therefore changes neither the other layers' weights nor the global RNG state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from nni_bio.core.errors import RuleContractError, RuleStateError, RuleTypeError, UnsupportedLayerError

if TYPE_CHECKING:  # type-only: these modules import this one
    from nni_bio.core.error_bus import ErrorBus
    from nni_bio.core.rule import Feedback, LearningRule

Needs = tuple[bool, bool, bool]
#: whether autocast is on for any device type: one C call (torch.is_autocast_enabled(type) costs ten times more)
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)
_SEED_BOUND = 2**63 - 1


class LayerOp:
    """Geometry of a layer and its fused backward (input, weight and bias gradients in one call).

    A rule's :meth:`~nni_bio.core.rule.Feedback.backward` receives it as ``op``: ``op.forward`` is the
    layer's forward and ``op.grads`` the gradients with any tensor of W's shape in W's place.
    """

    kind: str

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        """Gradients with ``matrix`` in place of W for the input; exact local weight/bias gradients."""
        raise NotImplementedError

    def sign_grads(self, g: Tensor, x: Tensor, weight: Tensor, magnitude: Tensor | float, needs: Needs,
                   scratch: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor | None, ...]:
        """:meth:`grads` with ``B = sign(weight) * magnitude`` (``sign(0) = 0``) in W's place. B is built
        here, only if the input gradient is needed, in ``scratch(weight)`` when ``scratch`` is given (e.g.
        :meth:`~nni_bio.core.rule.Feedback.scratch`). ``weight`` must not require grad."""
        if not needs[0]:  # B is not read: only its shape matters
            return self.grads(g, x, weight, needs)
        matrix = torch.sign(weight, out=scratch(weight)) if scratch is not None else torch.sign(weight)
        return self.grads(g, x, matrix.mul_(magnitude), needs)


class LinearOp(LayerOp):
    kind = "linear"

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        flat = g.dim() != 2  # (..., features) inputs: the products run on (rows, features)
        g2 = g.reshape(-1, g.shape[-1]) if flat else g
        dtype = g.dtype
        gx = gw = gb = None
        if needs[0]:
            gx = g2 @ (matrix if matrix.dtype == dtype else matrix.to(dtype))
            gx = gx.view(x.shape) if flat else gx
        if needs[1]:
            x2 = x.reshape(-1, x.shape[-1]) if flat else x
            gw = g2.t() @ (x2 if x2.dtype == dtype else x2.to(dtype))
        if needs[2]:
            gb = g2.sum(0)
        return gx, gw, gb

    def sign_grads(self, g: Tensor, x: Tensor, weight: Tensor, magnitude: Tensor | float, needs: Needs,
                   scratch: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor | None, ...]:
        # B is built in the memory the weight gradient is then written to: B is read (g @ B) while it
        # is still in the cache, the gradient's stores hit lines B just brought in, and no tensor of W's
        # size is allocated or kept besides the gradient itself (measured in benchmarks/README.md,
        # rule_overhead.py: "What was changed").
        # Not when the backward itself is differentiated (out= ops are not) or traced.
        if not (needs[0] and needs[1]) or weight.dtype != g.dtype or torch.is_grad_enabled() \
                or torch.compiler.is_compiling():
            return super().sign_grads(g, x, weight, magnitude, needs, scratch)
        flat = g.dim() != 2
        g2 = g.reshape(-1, g.shape[-1]) if flat else g
        x2 = x.reshape(-1, x.shape[-1]) if flat else x
        shared = torch.empty(weight.shape, dtype=g.dtype, device=g.device)
        gx = g2 @ torch.sign(weight, out=shared).mul_(magnitude)
        gw = torch.mm(g2.t(), x2 if x2.dtype == g.dtype else x2.to(g.dtype), out=shared)  # overwrites B
        return (gx.view(x.shape) if flat else gx), gw, (g2.sum(0) if needs[2] else None)


class Conv2dOp(LayerOp):
    """A convolution with symmetric zero ``padding``; ``pad`` (F.pad order: left, right, top, bottom)
    first pads the input asymmetrically, for ``padding="same"`` with an even total padding."""

    kind = "conv2d"

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                 pad: tuple[int, int, int, int] | None = None):
        self.stride, self.padding, self.dilation, self.groups, self.pad = stride, padding, dilation, groups, pad

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs: Needs) -> tuple[Tensor | None, ...]:
        if x.dim() == 3:  # unbatched (C, H, W) input, which F.conv2d (and nn.Conv2d) accept
            gx, gw, gb = self.grads(g.unsqueeze(0), x.unsqueeze(0), matrix, needs)
            return (gx.squeeze(0) if gx is not None else None), gw, gb
        padded = F.pad(x, self.pad) if self.pad is not None else x
        # The weight gradient of a convolution depends on the weight's shape only, so one call with
        # the feedback tensor in W's place gives the substituted input gradient and the exact weight
        # gradient: the same cost as plain backprop.
        bias_sizes = [matrix.shape[0]] if needs[2] else None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, padded.to(g.dtype), matrix.to(g.dtype), bias_sizes, list(self.stride), list(self.padding),
            list(self.dilation), False, [0, 0], self.groups, list(needs),
        )
        if gx is not None and self.pad is not None:
            left, _, top, _ = self.pad
            gx = gx[..., top:top + x.shape[-2], left:left + x.shape[-1]]
        return gx, gw, gb


def _same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]
                  ) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """``padding="same"`` as nn.Conv2d does it: symmetric when it can, else the extra row/column at the end."""
    totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    if all(t % 2 == 0 for t in totals):
        return (totals[0] // 2, totals[1] // 2), None
    (th, tw), (top, left) = totals, (totals[0] // 2, totals[1] // 2)
    return (0, 0), (left, tw - left, top, th - top)


class _RuleFunction(torch.autograd.Function):
    """Forward: the ordinary layer. Backward: whatever the layer's Feedback module says."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, layer: RuleLayer) -> Tensor:
        fb, op = layer._modules["feedback"], layer.op
        out = op.forward(x, weight, bias)
        ctx.layer_feedback, ctx.op, ctx.has_bias = fb, op, bias is not None
        ctx.save_for_backward(x, feedback, out if fb.needs_output else None)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, feedback, out = ctx.saved_tensors
        nx, nw, nb, nfb = ctx.needs_input_grad[:4]
        needs = (nx, nw or nfb, nb and ctx.has_bias)
        gx, gw, gb = ctx.layer_feedback.backward(ctx.op, grad_out, x, feedback, out, needs)
        # Learned feedback (RuleInfo.learned_feedback, e.g. Kolen-Pollack) gets exactly W's gradient;
        # RuleLayer.forward refuses any other feedback tensor that requires grad.
        return gx, gw if nw else None, gb, gw if nfb else None, None


class _SignFeedbackFunction(torch.autograd.Function):
    """The layer under a sign-concordant feedback (:class:`nni_bio.core.rule.SignFeedback`): B =
    sign(W) * magnitude is not built at forward time; the backward builds it from the W saved here
    (autograd's version check refuses a W changed in place in between, as for ``nn.Linear``) and the
    magnitude of that forward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, source: Tensor | None,
                magnitude: Tensor | None, scale: float, layer: RuleLayer) -> Tensor:
        op = layer.op
        out = op.forward(x, weight, bias)
        ctx.layer_feedback, ctx.op, ctx.has_bias, ctx.scale = layer._modules["feedback"], op, bias is not None, scale
        ctx.save_for_backward(x, weight if source is None else source, magnitude)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, magnitude = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad[:3]
        needs = (nx, nw, nb and ctx.has_bias)
        weight = weight.detach()  # the sign source: never differentiated (create_graph included)
        # the feedback's reused buffer, but never for a traced backward (fake tensors must not be kept)
        scratch = ctx.layer_feedback.scratch if type(weight) is Tensor and not torch.compiler.is_compiling() else None
        gx, gw, gb = ctx.op.sign_grads(grad_out, x, weight, ctx.scale if magnitude is None else magnitude,
                                       needs, scratch)
        return gx, gw if nw else None, gb, None, None, None, None


_autograd_c = torch._C._autograd
_push_hooks = getattr(_autograd_c, "_push_saved_tensors_default_hooks", None)
_pop_hooks = getattr(_autograd_c, "_pop_saved_tensors_default_hooks", None)
_hooks_enabled = getattr(_autograd_c, "_saved_tensors_hooks_is_enabled", None)
_top_hooks = getattr(_autograd_c, "_top_saved_tensors_default_hooks", None)
_HOOKS_AVAILABLE = None not in (_push_hooks, _pop_hooks, _hooks_enabled, _top_hooks)


def _modified(t: Tensor, saved_version: int) -> RuntimeError:
    return RuntimeError(
        "one of the variables needed for gradient computation has been modified by an inplace operation: "
        f"[{t.type()} {list(t.shape)}] is at version {t._version}; expected version {saved_version} instead. "
        "(nni-bio: a rule layer's input, weight or feedback was changed in place between its forward and backward)")


class _FeedbackInWeightsPlace:
    """Saved-tensor hooks for one convolution call: autograd's own convolution node saves the feedback B
    (or, for a sign-concordant rule, what builds it) in W's place.

    The backward of ``F.conv2d`` is ``convolution_backward(g, x, W)``, and it reads W only for the input
    gradient (the weight gradient needs W's shape alone). With B in W's place it gives the rule's input
    gradient and the exact local weight and bias gradients: what the rule's own backward computes, the
    same call with the same arguments, but run by autograd in C++, with no Python function per layer and
    step. Autograd does not check the version of a tensor saved through hooks, so :meth:`unpack` does:
    changing the input, W (sign rules) or B in place before the backward is refused, as before.
    """

    __slots__ = ("weight", "matrix", "magnitude", "magnitude_version", "feedback")

    def __init__(self, weight: Tensor, matrix: Tensor | None, magnitude: Tensor | float | None,
                 feedback: Feedback) -> None:
        # matrix: a ready B (feedback_weight); else B = sign(weight) * magnitude, built in the backward
        self.weight, self.matrix, self.magnitude, self.feedback = weight, matrix, magnitude, feedback
        self.magnitude_version = magnitude._version if isinstance(magnitude, Tensor) else None

    def pack(self, t: Tensor) -> tuple[Tensor | None, int]:
        if t is self.weight:
            return None, (t if self.matrix is None else self.matrix)._version
        return t, t._version

    def unpack(self, packed: tuple[Tensor | None, int]) -> Tensor:
        t, version = packed
        if t is not None:
            if t._version != version:
                raise _modified(t, version)
            return t
        matrix, magnitude = self.matrix, self.magnitude
        if matrix is not None:
            if matrix._version != version:
                raise _modified(matrix, version)
            return matrix
        weight = self.weight
        if weight._version != version:
            raise _modified(weight, version)
        if self.magnitude_version is not None and magnitude._version != self.magnitude_version:
            raise _modified(magnitude, self.magnitude_version)
        weight = weight.detach()  # the sign source: never differentiated (create_graph included)
        return torch.sign(weight, out=self.feedback.scratch(weight)).mul_(magnitude)


def _autograd_can_keep_feedback() -> bool:
    """Whether a convolution may hand its feedback to autograd's node (:class:`_FeedbackInWeightsPlace`):
    not while tracing, and not inside someone else's saved-tensor hooks (checkpointing, offloading), which
    must see every saved tensor."""
    return not torch.compiler.is_compiling() and _HOOKS_AVAILABLE and _hooks_enabled() and _top_hooks(False) is None


class RuleLayer(nn.Module):
    """Base of the layers hosting a learning rule: ``weight``, ``bias``, ``feedback``, ``rule`` and ``seed``."""

    op: LayerOp
    weight: nn.Parameter
    bias: nn.Parameter | None
    feedback: Feedback
    #: a convolution's rule backward is autograd's own with B in W's place (_FeedbackInWeightsPlace)
    _saves_feedback_in_weights_place = False

    def __init__(self) -> None:
        super().__init__()
        self.rule_name = ""
        self.seed = 0
        self.bus: ErrorBus | None = None  # set by nni_bio.enable_dfa for rules needing the output error

    def _init_parameters(self) -> None:
        """Xavier-uniform weight, zero bias, then the layer's seed: the same global draws for every rule."""
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.seed = int(torch.randint(0, _SEED_BOUND, (), device="cpu"))

    def rule_generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with the layer's seed: rules draw their initial feedback state
        from it (move the result to the weight's device), never from the global RNG."""
        return torch.Generator().manual_seed(self.seed)

    @property
    def rule(self) -> LearningRule:
        """The rule object this layer follows."""
        return self._rule

    def set_rule(self, rule: LearningRule) -> RuleLayer:
        """Switch to another learning rule in place; weight and bias are kept.

        The new rule's state is built fresh from the layer's seed (so switching back gives the same
        fixed feedback again); switching to the rule the layer already has keeps its state. A rule with
        learned feedback adds Parameters: rebuild the optimizer after switching. To switch by name, use
        ``layer.set_rule(nni_bio.get_rule(name))`` or :func:`nni_bio.swap_rule`.
        """
        info = getattr(rule, "info", None)
        if isinstance(rule, (str, type)) or info is None or not callable(getattr(rule, "feedback", None)):
            hint = (f"; pass nni_bio.get_rule({rule!r})" if isinstance(rule, str)
                    else f"; pass an instance, {rule.__name__}()" if isinstance(rule, type) else "")
            raise RuleTypeError(f"set_rule() takes a LearningRule instance, not {rule!r}{hint}")
        if self.op.kind not in info.layer_kinds:
            raise UnsupportedLayerError(
                f"rule {info.name!r} cannot build a {self.op.kind} layer (it supports: {', '.join(info.layer_kinds)})")
        if getattr(self.op, "groups", 1) != 1 and not info.supports_groups:
            raise UnsupportedLayerError(f"rule {info.name!r} does not support grouped or depthwise convolutions")
        keep = self.rule_name == info.name and "feedback" in self._modules
        self._rule = rule
        if not keep:
            self.rule_name = info.name
            self.feedback = rule.feedback(self)
        return self

    def forward(self, x: Tensor) -> Tensor:
        # nn.Module.__getattr__ is slow next to a plain dict lookup, and this runs for every layer and step
        fb, params = self._modules["feedback"], self._parameters
        master = weight = params["weight"] if "weight" in params else self.weight  # else: parametrized
        bias = params["bias"] if "bias" in params else self.bias
        if fb.exact:
            return self.op.forward(x, weight, bias)
        autocast = (_any_autocast() or torch.compiler.is_compiling()) and torch.is_autocast_enabled(x.device.type)
        if autocast:
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if not (torch.is_grad_enabled() and (x.requires_grad or master.requires_grad)):
            return self.op.forward(x, weight, bias)  # no backward can follow: skip the rule's work
        if not autocast:  # entering torch.autocast costs more Python than the rest of this call
            return self._apply_rule(fb, x, weight, bias, master)
        with torch.autocast(x.device.type, enabled=False):
            return self._apply_rule(fb, x, weight, bias, master)

    def _apply_rule(self, fb: Feedback, x: Tensor, weight: Tensor, bias: Tensor | None, master: Tensor) -> Tensor:
        if getattr(fb, "_sign_path", False) and "feedback_weight" not in fb.__dict__:  # a SignFeedback as written
            magnitude = fb.sign_magnitude(master, self.training)
            is_tensor = isinstance(magnitude, Tensor)
            if is_tensor and magnitude.requires_grad:
                raise RuleContractError(f"rule {self.rule_name!r}: sign_magnitude() returned a tensor that requires "
                                        "grad; compute it under torch.no_grad() or .detach() it")
            if self._saves_feedback_in_weights_place and weight is master and _autograd_can_keep_feedback():
                return self._conv_with_feedback_saved(x, weight, bias, _FeedbackInWeightsPlace(weight, None, magnitude, fb))
            source = None if weight is master else master.detach()  # autocast: the sign of the fp32 master
            if not is_tensor:
                return _SignFeedbackFunction.apply(x, weight, bias, source, None, float(magnitude), self)
            return _SignFeedbackFunction.apply(x, weight, bias, source, magnitude, 1.0, self)
        matrix = fb.feedback_weight(master, self.training)
        if matrix.requires_grad and not self._rule.info.learned_feedback:
            raise RuleContractError(
                f"rule {self.rule_name!r}: feedback_weight() returned a tensor that requires grad, so the "
                "gradient sent to it would flow back into the weights (W's gradient would be wrong). Compute "
                "it under torch.no_grad() or .detach() it; if the feedback is meant to learn, declare "
                "RuleInfo(learned_feedback=True) and return a Parameter that does not depend on W."
            )
        if self._saves_feedback_in_weights_place and weight is master and not matrix.requires_grad \
                and fb._default_backward and not fb.needs_output and "backward" not in fb.__dict__ \
                and _autograd_can_keep_feedback():
            return self._conv_with_feedback_saved(x, weight, bias, _FeedbackInWeightsPlace(weight, matrix, None, fb))
        return _RuleFunction.apply(x, weight, bias, matrix, self)

    def _conv_with_feedback_saved(self, x: Tensor, weight: Tensor, bias: Tensor | None,
                                  hooks: _FeedbackInWeightsPlace) -> Tensor:
        _push_hooks(hooks.pack, hooks.unpack)
        try:
            return self.op.forward(x, weight, bias)
        finally:
            _pop_hooks()

    def get_extra_state(self) -> dict[str, Any]:
        return {"rule": self.rule_name, "seed": self.seed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("rule") if isinstance(state, dict) else None
        if saved != self.rule_name:
            raise RuleStateError(
                f"this state was saved from a layer trained with rule {saved!r}, but the layer uses "
                f"{self.rule_name!r}; call nni_bio.swap_rule(model, {saved!r}) (or layer.set_rule) before loading"
            )
        if "seed" in state:  # absent in states saved before nni-bio kept the layer seed
            self.seed = int(state["seed"])


class RuleLinear(RuleLayer):
    """``torch.nn.Linear`` with a learning rule. Build it with ``get_rule(name).linear(...)``."""

    def __init__(self, in_features: int, out_features: int, *, rule: LearningRule, bias: bool = True):
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
    """``torch.nn.Conv2d`` (zero padding) with a learning rule. Build it with ``get_rule(name).conv2d(...)``.

    ``padding`` is an int, a pair or ``"same"``/``"valid"``, as for ``nn.Conv2d``; ``layer.padding``
    gives it back as given (a pair or the string), ready for ``F.conv2d``.
    """

    _saves_feedback_in_weights_place = True

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *, rule: LearningRule,
        stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        stride, dilation = _pair(stride), _pair(dilation)
        pad = None
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            symmetric, pad = _same_padding(self.kernel_size, dilation) if padding == "same" else ((0, 0), None)
            self._padding: str | tuple[int, int] = padding
        else:
            symmetric = self._padding = _pair(padding)
        self.op = Conv2dOp(stride, symmetric, dilation, groups, pad)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._init_parameters()
        self.set_rule(rule)

    @property
    def stride(self) -> tuple[int, int]:
        return self.op.stride

    @property
    def padding(self) -> str | tuple[int, int]:
        return self._padding

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
