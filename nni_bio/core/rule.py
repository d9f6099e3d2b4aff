"""The learning-rule contract: what a rule declares and what it must provide.

A *learning rule* decides how one weight-bearing layer (linear or conv2d) learns. The forward pass is
always the ordinary layer; a rule changes the backward pass. It does so through a per-layer
:class:`Feedback` module that the host layer (:class:`nni_bio.core.layers.RuleLinear`,
:class:`nni_bio.core.layers.RuleConv2d`) owns under the attribute ``feedback``. Rule state therefore shows
up in ``state_dict`` under ``feedback.*``: fixed tensors as buffers, learned ones as Parameters.

Plugin authors subclass :class:`LearningRule`, set ``info`` (with ``api_version``, which nni-bio
requires) and implement ``feedback``, then register the rule under the ``nni_bio.rules`` entry-point
group::

    [project.entry-points."nni_bio.rules"]
    my_rule = "my_package.my_rule:MyRule"

Run ``nni_bio.testing.check_rule("my_rule")`` to check it behaves like the built-ins and keeps the
math the contract promises (exact local gradients, feedback of W's shape, no gradient leaking into W).

The builders ``rule.linear``/``rule.conv2d`` make the host layers of :mod:`nni_bio.core.layers`, which this
module builds on; the layers know a rule only through the object they are given.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from nni_bio.core.layers import LayerOp, RuleConv2d, RuleLayer, RuleLinear

#: Version of the rule contract in this module. A plugin declares the version it was written for in
#: ``RuleInfo.api_version``; nni-bio refuses a plugin whose version it does not support.
PLUGIN_API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})

Family = Literal["backprop", "feedback", "direct", "local"]
LayerKind = Literal["linear", "conv2d"]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _refs(holder: dict[str, Any], key: str) -> int:
    return sys.getrefcount(holder[key])


def _unshared(holder: dict[str, Any], key: str) -> bool:
    """Whether ``holder[key]`` (a tensor) is referenced by ``holder`` only: by no other Python name,
    and (``Tensor._use_count``) by no autograd graph, view or other C++ owner. False when torch
    cannot tell."""
    return _USE_COUNT is not None and _refs(holder, key) == _FREE_REFS and _USE_COUNT(holder[key]) == 1


#: below this size a fresh tensor costs less than the checks of reuse (malloc's free lists serve it without
#: page faults: glibc maps only blocks of 128 KiB and up on their own), as in a supernet's thousands of small layers
_SCRATCH_MIN_BYTES = 128 * 1024
_USE_COUNT = getattr(Tensor, "_use_count", None)  # C++ owners of a TensorImpl (torch >= 2.1)
_FREE_REFS = _refs({"t": object()}, "t")  # what _refs counts for an object held by the dict alone


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
        api_version: plugin API version the rule was written for (:data:`PLUGIN_API_VERSION` when it
            was written). Required: a rule that leaves it out is refused when it is loaded.
        layer_kinds: layer kinds the rule can build.
        supports_groups: whether grouped/depthwise conv2d is supported.
        needs_global_error: the rule needs the network output error (call :func:`nni_bio.enable_dfa`).
        learned_feedback: the rule owns trainable feedback Parameters besides weight and bias, and its
            feedback tensor may require grad (it then receives W's gradient). Without it, a feedback
            tensor that requires grad is refused at forward time
            (:class:`~nni_bio.core.errors.RuleContractError`).
    """

    name: str
    family: Family
    summary: str
    paper: str = ""
    api_version: int | None = None
    layer_kinds: tuple[LayerKind, ...] = ("linear", "conv2d")
    supports_groups: bool = True
    needs_global_error: bool = False
    learned_feedback: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"rule name {self.name!r} must match {_NAME.pattern} (it becomes a module name)")
        version = self.api_version
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ValueError(f"rule {self.name!r}: api_version must be an int (e.g. {PLUGIN_API_VERSION}), "
                             f"not {self.api_version!r}")


class Feedback(nn.Module):
    """Per-layer state and backward pass of a learning rule.

    The default backward sends the error down through :meth:`feedback_weight` and computes the exact
    local weight and bias gradients, in one fused call (family ``feedback``). Rules that do something
    else (direct projection, Hebbian pseudo-gradients) override :meth:`backward`. Feedback of the form
    ``B = sign(W) * magnitude`` subclasses :class:`SignFeedback` instead (B is then built in the backward).

    Attributes:
        exact: if true the host layer runs plain ``F.linear``/``F.conv2d`` (true backprop).
        needs_output: if true the layer output is saved for :meth:`backward`.
        host_state: names of plain-int attributes (seeds, step counters) saved in the state dict as
            int64 tensors under ``<prefix><name>``. They stay Python ints on the host, so reading them
            in a forward or backward never waits for the GPU.
    """

    exact: ClassVar[bool] = False
    needs_output: ClassVar[bool] = False
    host_state: ClassVar[tuple[str, ...]] = ()
    _sign_path: ClassVar[bool] = False  # see SignFeedback
    _default_backward: ClassVar[bool] = True  # backward is Feedback.backward: op.grads with feedback_weight's B

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._default_backward = cls.backward is Feedback.backward

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        """Tensor of ``weight``'s shape that replaces W when the error is sent to the layer below.

        Called at forward time only when a backward pass can follow. ``training`` is true for a
        training-mode forward (rules that redraw per step do it then, never in eval).
        Return a tensor that does not require grad (build it under ``torch.no_grad()`` or detach it).
        Only a rule declaring ``RuleInfo(learned_feedback=True)`` may return one that requires grad (a
        Parameter independent of W, as Kolen-Pollack's B): it then receives exactly W's gradient.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement feedback_weight() or backward()")

    def scratch(self, weight: Tensor) -> Tensor:
        """An uninitialised tensor of ``weight``'s shape, layout, dtype and device to build this step's feedback
        in, e.g. ``torch.sign(weight, out=self.scratch(weight))``: reused from call to call.

        The memory of the previous call is handed out again only if nothing else holds it any more: no
        autograd graph that saved it is still waiting for its backward (nor retained), no caller keeps
        the tensor or a view of it. Otherwise a new tensor is made (and kept for the next call). This
        saves a weight-sized allocation per layer and training step, which on the CPU also means page
        faults each time the allocator hands the memory back to the OS. Under ``torch.compile``, and for a
        weight under 128 KiB (cheaper to allocate than to check), it returns a fresh tensor. Not part of the
        state dict, not copied by ``deepcopy``. (A
        :class:`SignFeedback` uses it in ``feedback_weight`` and in a convolution's backward; a linear
        layer's backward builds its B in the weight gradient's memory instead.)
        """
        if torch.compiler.is_compiling() or weight.nbytes < _SCRATCH_MIN_BYTES:
            return torch.empty_like(weight)  # traced code stays functional; a small tensor is cheaper fresh
        if "_scratch" in self.__dict__ and _unshared(self.__dict__, "_scratch"):  # before naming it here
            buf = self.__dict__["_scratch"]
            if buf.stride() == weight.stride() and buf.dtype == weight.dtype and buf.device == weight.device \
                    and buf.shape == weight.shape:
                return buf
        buf = self.__dict__["_scratch"] = torch.empty_like(weight)  # W's layout (channels_last too)
        return buf

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_scratch", None)  # copies and pickles make their own on first use
        return state

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

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self.host_state:
            destination[prefix + name] = torch.tensor(getattr(self, name), dtype=torch.int64)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name in self.host_state:
            key = prefix + name
            if key in state_dict:
                setattr(self, name, int(state_dict[key]))
                if key in unexpected_keys:
                    unexpected_keys.remove(key)
            elif strict:
                missing_keys.append(key)


class SignFeedback(Feedback):
    """Feedback of the sign-concordant kind: ``B = sign(W) * magnitude``, ``sign(0) = 0``, W the current weight.

    Subclasses implement :meth:`sign_magnitude` only (uSF, frSF and brSF are built this way).
    :meth:`feedback_weight` gives the whole B, for whoever reads it (metrics such as the W-B angle,
    :mod:`nni_bio.testing`). The host layer does not call it: at forward time it calls
    :meth:`sign_magnitude` and keeps W and the magnitude; the backward builds B from them where it is
    used, for a linear layer in the memory W's gradient is written to next (no extra weight-sized
    tensor, B still in the cache when it is read). The gradients are those of the B that
    :meth:`feedback_weight` returns, B of the weight and magnitude at forward time: changing W (or a
    magnitude tensor) in place between a forward and its backward is refused by autograd, as a change
    of W is for ``nn.Linear``.

    A subclass that overrides :meth:`feedback_weight` or :meth:`~Feedback.backward`, or an instance
    whose ``feedback_weight`` is replaced, gets the general path instead (B built at forward time by
    ``feedback_weight`` and handed to ``backward``).
    """

    _sign_path: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._sign_path = cls.feedback_weight is SignFeedback.feedback_weight and cls.backward is Feedback.backward

    def sign_magnitude(self, weight: Tensor, training: bool) -> Tensor | float:
        """The magnitude of B for one forward: a float, or a tensor of ``weight``'s shape (or one that
        broadcasts to it) that does not require grad (a buffer, a view of one). It is kept for the
        backward, where B is built: as for W, autograd refuses that backward if the tensor was changed
        in place in between. Called once per forward that can be followed by a backward, and by
        :meth:`feedback_weight`; ``training`` as there (a rule that redraws per step does it when it
        is true)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sign_magnitude()")

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        magnitude = self.sign_magnitude(weight, training)
        return torch.sign(weight.detach(), out=self.scratch(weight)).mul_(magnitude)  # detached: no graph


class LearningRule:
    """A learning rule: builds layers whose backward follows it.

    Subclasses set ``info`` and implement :meth:`feedback`. Instances hold configuration only (all
    per-layer state lives in the :class:`Feedback` module); a layer holds its rule object, and copies
    of a layer share it.

    Example:
        >>> import nni_bio, torch
        >>> layer = nni_bio.get_rule("fa").linear(4, 3)
        >>> layer(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    info: ClassVar[RuleInfo]

    def feedback(self, layer: RuleLayer) -> Feedback:
        """Build the per-layer state for ``layer`` (it already has ``weight``, ``bias``, ``op`` and ``seed``).

        Draw random state from ``layer.rule_generator()`` (a CPU generator seeded by the layer), never
        from the global RNG: the rule of one layer must not change the initial weights of the others.
        """
        raise NotImplementedError

    def linear(self, in_features: int, out_features: int, *, bias: bool = True) -> RuleLinear:
        """A linear layer ``y = x W^T + b`` trained with this rule."""
        return RuleLinear(in_features, out_features, bias=bias, rule=self)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
        stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
    ) -> RuleConv2d:
        """A 2-D convolution trained with this rule (same arguments as ``torch.nn.Conv2d``, zero padding,
        ``padding="same"`` included)."""
        return RuleConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                          dilation=dilation, groups=groups, bias=bias, rule=self)

    def __deepcopy__(self, memo: dict[int, Any]) -> LearningRule:
        return self  # configuration only: copies of a layer share their rule

    def __repr__(self) -> str:
        return f"<learning rule {self.info.name!r} ({self.info.family})>"


def xavier_std(weight: Tensor) -> float:
    """Standard deviation of Xavier init for ``weight`` with PyTorch's fan conventions."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return (2.0 / (fan_in + fan_out)) ** 0.5


def xavier_like(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A fresh Xavier-uniform tensor of ``weight``'s shape, dtype and device (fp32 if weight is low precision).

    Drawn on ``generator``'s device (then moved to the weight's), so a CPU generator gives the same
    values on any device; without a generator, from the global RNG of the weight's device.
    """
    bound = 3.0 ** 0.5 * xavier_std(weight)
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    device = generator.device if generator is not None else weight.device
    out = torch.empty(weight.shape, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    return out.to(weight.device)


__all__ = ["PLUGIN_API_VERSION", "Feedback", "LayerOp", "LearningRule", "RuleInfo", "SignFeedback", "xavier_like",
           "xavier_std"]
