"""Rule-aware cell operations of the DARTS and NAS-Bench-201 search spaces (pure PyTorch, no NNI).

Every weight-bearing conv or linear layer is built with ``nni_bio.get_rule(rule).conv2d/linear``,
so its backward pass follows the named learning rule; no layer silently falls back to backprop.
Parameter-free ops (zero, pools, identity) ignore the rule.

Each op builder has the signature ``(C_in, C_out, stride, rule, *, affine=True, pool_bn=False)``:

========================  ===================================================================
``none``                  zero (stride-aware; search only)
``max_pool_3x3``          3x3 max pool, padding 1 (+ BatchNorm2d(affine=False) if ``pool_bn``)
``avg_pool_3x3``          3x3 average pool, ``count_include_pad=False`` (same option)
``skip_connect``          Identity at stride 1; at stride 2 a :class:`FactorizedReduce` whose two
                          1x1 convs use ``rule`` (the reference code built them and dropped them,
                          leaving plain backprop convs)
``sep_conv_{3x3,5x5,7x7}`` DARTS SepConv: (ReLU, depthwise kxk, 1x1, BN) twice, stride on the first
``dil_conv_{3x3,5x5}``     DARTS DilConv: ReLU, depthwise kxk dilation 2, 1x1, BN
``nor_conv_{1x1,3x3}``     NAS-Bench-201 ReLU-Conv-BN
========================  ===================================================================

``affine`` is the BatchNorm affine flag (DARTS searches with ``False`` and retrains with ``True``);
``pool_bn`` adds DARTS' BatchNorm after pools in the search supernet. If ``C_in != C_out`` a pool
is preceded by a rule ReLU-Conv-BN 1x1 (NAS-Bench-201) and a zero op outputs ``C_out`` channels.

Example:
    >>> import torch
    >>> from nni_bio.nas.ops import build_op
    >>> op = build_op("sep_conv_3x3@usf", 8, 8, stride=2)
    >>> op(torch.randn(2, 8, 16, 16)).shape
    torch.Size([2, 8, 8, 8])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import NniBioError
from nni_bio.core.layers import RuleLayer
from nni_bio.nas.candidates import parse_candidate

#: ``(C_in, C_out, stride, rule, *, affine=True, pool_bn=False) -> nn.Module``
OpBuilder = Callable[..., nn.Module]


class UnknownOpError(NniBioError, LookupError):
    """An op name that is not in :data:`OPS`."""


class MissingRuleError(NniBioError, ValueError):
    """An op with weights was built without a learning rule."""


def _rule(rule: str | None, what: str):
    if rule is None:
        raise MissingRuleError(f"{what} has weights, so it needs a learning rule (got rule=None); "
                               "name one, e.g. 'sep_conv_3x3@usf', or pass rule='usf'")
    return get_rule(rule)


# --------------------------------------------------------------------------------------------
# modules


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (spatially strided like the other ops)."""

    def __init__(self, C_in: int, C_out: int, stride: int = 1):
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.C_in == self.C_out:
            return x.mul(0.0)
        return x.new_zeros(x.shape[0], self.C_out, *x.shape[2:])

    def extra_repr(self) -> str:
        return f"{self.C_in}, {self.C_out}, stride={self.stride}"


class ReLUConvBN(nn.Sequential):
    """ReLU, conv (with ``rule``), BatchNorm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, *, rule: str | None,
                 dilation: int = 1, affine: bool = True):
        r = _rule(rule, "ReLUConvBN")
        super().__init__(
            nn.ReLU(inplace=False),
            r.conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs (both with ``rule``), concat, BN.

    The second conv sees the input shifted by one pixel (zero-padded at the far edge, as in NNI), so
    odd sizes work; ``C_out`` may be odd.
    """

    def __init__(self, C_in: int, C_out: int, *, rule: str | None, affine: bool = True):
        super().__init__()
        r = _rule(rule, "FactorizedReduce (skip_connect at stride 2)")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = r.conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = r.conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = self.pad(x)[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class SepConv(nn.Sequential):
    """DARTS separable conv: ReLU, depthwise kxk (stride), 1x1, BN, ReLU, depthwise kxk, 1x1, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, *, rule: str | None,
                 affine: bool = True):
        r = _rule(rule, "SepConv")
        super().__init__(
            nn.ReLU(inplace=False),
            r.conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            r.conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            r.conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            r.conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """DARTS dilated conv: ReLU, depthwise dilated kxk (stride), 1x1, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int, *,
                 rule: str | None, affine: bool = True):
        r = _rule(rule, "DilConv")
        super().__init__(
            nn.ReLU(inplace=False),
            r.conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                     bias=False),
            r.conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class Pool(nn.Sequential):
    """3x3 max or average pool; a rule ReLU-Conv-BN 1x1 first if the channel count changes; an
    optional BatchNorm2d(affine=False) after (DARTS supernet)."""

    def __init__(self, mode: str, C_in: int, C_out: int, stride: int, *, rule: str | None = None,
                 affine: bool = True, bn: bool = False):
        layers: list[nn.Module] = []
        if C_in != C_out:
            layers.append(ReLUConvBN(C_in, C_out, 1, 1, 0, rule=rule, affine=affine))
        if mode == "max":
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        elif mode == "avg":
            layers.append(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
        else:
            raise ValueError(f"pool mode must be 'max' or 'avg', not {mode!r}")
        if bn:
            layers.append(nn.BatchNorm2d(C_out, affine=False))
        super().__init__(*layers)


class ResNetBasicBlock(nn.Module):
    """The NAS-Bench-201 residual reduction block: two ReLU-Conv-BN 3x3 (the first strided) plus a
    shortcut (stride 2: 2x2 average pool then 1x1 conv; channel change: ReLU-Conv-BN 1x1). All convs
    use ``rule``."""

    def __init__(self, C_in: int, C_out: int, stride: int, *, rule: str | None, affine: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, not {stride}")
        r = _rule(rule, "ResNetBasicBlock")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, rule=rule, affine=affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, rule=rule, affine=affine)
        self.downsample: nn.Module | None
        if stride == 2:
            # ceil_mode keeps the shortcut's size equal to conv_a's on odd inputs (same as floor on even ones)
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                            r.conv2d(C_in, C_out, 1, bias=False))
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, rule=rule, affine=affine)
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_b(self.conv_a(x))
        return out + (self.downsample(x) if self.downsample is not None else x)


def drop_path(x: Tensor, drop_prob: float, training: bool = True) -> Tensor:
    """Drop whole samples of ``x`` with probability ``drop_prob`` and rescale the rest (DARTS).

    Identity in eval mode or when ``drop_prob`` is 0. Uses the global RNG.
    """
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(keep)
    return x.div(keep).mul(mask)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; ``drop_prob`` is an attribute a schedule may change."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


# --------------------------------------------------------------------------------------------
# op builders: (C_in, C_out, stride, rule, *, affine, pool_bn) -> nn.Module


def _none(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
    return Zero(C_in, C_out, stride)


def _pool(mode: str) -> OpBuilder:
    def build(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
        return Pool(mode, C_in, C_out, stride, rule=rule, affine=affine, bn=pool_bn)
    return build


def _skip(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    if stride == 1:
        return ReLUConvBN(C_in, C_out, 1, 1, 0, rule=rule, affine=affine)
    if stride == 2:
        return FactorizedReduce(C_in, C_out, rule=rule, affine=affine)
    raise ValueError(f"skip_connect supports stride 1 or 2, not {stride}")


def _sep(k: int) -> OpBuilder:
    def build(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
        return SepConv(C_in, C_out, k, stride, k // 2, rule=rule, affine=affine)
    return build


def _dil(k: int) -> OpBuilder:
    def build(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
        return DilConv(C_in, C_out, k, stride, k - 1, 2, rule=rule, affine=affine)
    return build


def _nor(k: int) -> OpBuilder:
    def build(C_in, C_out, stride, rule, *, affine=True, pool_bn=False):
        return ReLUConvBN(C_in, C_out, k, stride, k // 2, rule=rule, affine=affine)
    return build


#: every op by name
OPS: dict[str, OpBuilder] = {
    "none": _none,
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "sep_conv_7x7": _sep(7),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
    "nor_conv_1x1": _nor(1),
    "nor_conv_3x3": _nor(3),
}

#: the DARTS op set of the paper (sep_conv_7x7 exists in OPS but, as in DARTS, is not searched)
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
#: the NAS-Bench-201 op set
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: ops without weights whatever the stride (one search candidate, no rule)
PARAMETER_FREE = frozenset({"none", "max_pool_3x3", "avg_pool_3x3"})


def check_op(name: str) -> str:
    """Return ``name`` if it is an op in :data:`OPS`, else raise with a did-you-mean hint."""
    if name not in OPS:
        close = difflib.get_close_matches(name, OPS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownOpError(f"unknown op {name!r}.{hint} Available ops: {', '.join(OPS)}")
    return name


def has_weights(op: str, C_in: int, C_out: int, stride: int) -> bool:
    """Whether op ``op`` has weight-bearing layers at this shape (skip_connect only when it resamples)."""
    check_op(op)
    if op == "skip_connect":
        return stride != 1 or C_in != C_out
    if op in PARAMETER_FREE:
        return C_in != C_out and op != "none"
    return True


#: ops built from depthwise (grouped) convs
GROUPED = frozenset({"sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5"})


def supports(op: str, rule: str) -> bool:
    """Whether ``rule`` can build the layers of ``op`` (conv2d; grouped convs for sep/dil convs).

    Spaces leave out ``op@rule`` candidates that cannot be built, e.g. a sep conv with a rule that
    declares ``supports_groups=False``.
    """
    check_op(op)
    if op in PARAMETER_FREE:
        return True
    info = get_rule(rule).info
    return "conv2d" in info.layer_kinds and (op not in GROUPED or info.supports_groups)


def unsupported_candidates(ops: Iterable[str], rules: Iterable[str]) -> list[str]:
    """The ``op@rule`` pairs of ``ops`` x ``rules`` that the rule cannot build (see :func:`supports`)."""
    rules = sorted(set(rules))
    return [f"{op}@{rule}" for op in ops for rule in rules if not supports(op, rule)]


def build_op(name: str, C_in: int, C_out: int, stride: int = 1, *, rule: str | None = None,
             affine: bool = True, pool_bn: bool = False) -> nn.Module:
    """Build an op from a candidate name (``op`` or ``op@rule``).

    Args:
        name: ``"sep_conv_3x3@usf"`` (the rule in the name wins) or ``"max_pool_3x3"``.
        C_in, C_out, stride: shape of the op.
        rule: rule for an op named without one that has weights (e.g. a stride-2 ``skip_connect``).
        affine: BatchNorm affine flag.
        pool_bn: BatchNorm2d(affine=False) after pools (DARTS supernet).

    Raises:
        UnknownOpError: the op is not in :data:`OPS`.
        MissingRuleError: the op has weights here but no rule is given.
    """
    op, named_rule = parse_candidate(name)
    return OPS[check_op(op)](C_in, C_out, stride, named_rule or rule, affine=affine, pool_bn=pool_bn)


# --------------------------------------------------------------------------------------------
# weight accounting (defect #2 of the reference code: report the bio vs backprop split)

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Bilinear, nn.Embedding)


def bio_weight_split(model: nn.Module) -> dict:
    """Trainable parameters of ``model`` by learning rule.

    Parameters of rule layers (weight, bias, learned feedback) count for their rule; those of plain
    ``torch.nn`` conv/linear layers count as ``"backprop"`` (they learn by exact backprop); all other
    trainable parameters (BatchNorm affine, ...) as ``"other"``. Frozen feedback buffers are not
    parameters and are never counted.

    Returns:
        ``{"per_rule": {rule: n}, "bio": n, "backprop": n, "other": n, "total": n,
        "bio_fraction": bio / (bio + backprop), "plain_layers": [names of plain torch layers]}``

    Example:
        >>> import torch, nni_bio
        >>> net = torch.nn.Sequential(nni_bio.get_rule("usf").linear(4, 3), torch.nn.Linear(3, 2))
        >>> split = bio_weight_split(net)
        >>> split["bio"], split["backprop"], split["plain_layers"]
        (15, 8, ['1'])
    """
    per_rule: dict[str, int] = {}
    owner: dict[int, str] = {}
    plain: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, RuleLayer):
            for p in module.parameters():
                owner.setdefault(id(p), module.rule_name)
        elif isinstance(module, _WEIGHT_LAYERS):
            plain.append(name)
            for p in module.parameters(recurse=False):
                owner.setdefault(id(p), "backprop")
    bio = backprop = other = 0
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        rule = owner.get(id(p))
        if rule is None:
            other += p.numel()
            continue
        per_rule[rule] = per_rule.get(rule, 0) + p.numel()
        if get_rule(rule).info.family == "backprop":
            backprop += p.numel()
        else:
            bio += p.numel()
    return {"per_rule": dict(sorted(per_rule.items())), "bio": bio, "backprop": backprop, "other": other,
            "total": bio + backprop + other, "bio_fraction": bio / max(bio + backprop, 1), "plain_layers": plain}


__all__ = [
    "DARTS_OPS", "GROUPED", "NB201_OPS", "OPS", "PARAMETER_FREE", "DilConv", "DropPath", "FactorizedReduce",
    "MissingRuleError", "OpBuilder", "Pool", "ReLUConvBN", "ResNetBasicBlock", "SepConv", "UnknownOpError", "Zero",
    "bio_weight_split", "build_op", "check_op", "drop_path", "has_weights", "supports", "unsupported_candidates",
]
