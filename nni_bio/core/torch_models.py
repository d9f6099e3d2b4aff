"""Any PyTorch model with any rule: :func:`convert` puts rule layers in place of a model's ``nn.Conv2d`` and
``nn.Linear`` modules, holding the very same weights; :func:`to_torch` takes them out again.

This is BioTorch's ``BioModule(model, mode=...)`` for nni-bio's rules, built-in and plugins alike::

    >>> import torch, nni_bio
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(8 * 4 * 4, 10))
    >>> x = torch.randn(2, 3, 4, 4)
    >>> before = net(x)
    >>> net = nni_bio.convert(net, "usf")
    >>> torch.equal(net(x), before), nni_bio.rule_map(net)
    (True, {'0': 'usf', '3': 'usf'})
    >>> type(nni_bio.to_torch(net)[0]).__name__
    'Conv2d'

A layer keeps its weight and bias Parameters (the same objects: an optimizer built before still updates them,
and parameter names do not change), stride, padding (``"same"`` and non-zero padding modes included),
dilation and groups. Each rule layer's seed, from which its rule draws feedback state, comes from ``seed`` and
the layer's name, so a conversion is reproducible and leaves the global random generator alone.

Modules that hold weights but cannot be converted (``nn.Conv1d``, ``nn.MultiheadAttention``, which calls its
projections functionally, subclasses of ``nn.Conv2d``/``nn.Linear`` with their own ``forward``, ...) are named in
one warning: they keep training with exact gradients.
"""

from __future__ import annotations

import fnmatch
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.core.error_bus import enable_dfa, error_readers
from nni_bio.core.errors import UnsupportedLayerError
from nni_bio.core.layers import Conv2dOp, RuleConv2d, RuleLayer, RuleLinear
from nni_bio.core.rule import LearningRule

__all__ = ["NotConvertedWarning", "convert", "to_torch"]

RuleChoice = str | LearningRule | Mapping[str, str] | Callable[[str, nn.Module], "str | LearningRule | None"]


class NotConvertedWarning(UserWarning):
    """Layers with weights that :func:`convert` left as they were (they train with exact gradients)."""


class PaddingModeConv2dOp(Conv2dOp):
    """A convolution whose input is padded with ``F.pad(mode=...)`` (reflect, replicate, circular) first: the
    input gradient goes back through the padding exactly, as in ``nn.Conv2d(padding_mode=...)``."""

    def __init__(self, stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                 pad: tuple[int, int, int, int], mode: str):
        super().__init__(stride, (0, 0), dilation, groups)
        self.mode_pad, self.mode = pad, mode

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(F.pad(x, self.mode_pad, mode=self.mode), weight, bias, self.stride, 0, self.dilation,
                        self.groups)

    def grads(self, g: Tensor, x: Tensor, matrix: Tensor, needs) -> tuple[Tensor | None, ...]:
        with torch.enable_grad():
            source = x.detach().requires_grad_(bool(needs[0]))
            padded = F.pad(source, self.mode_pad, mode=self.mode)
        gp, gw, gb = super().grads(g, padded.detach(), matrix, needs)
        gx = torch.autograd.grad(padded, source, gp)[0] if needs[0] else None
        return gx, gw, gb


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _chooser(rule: RuleChoice) -> Callable[[str, nn.Module], LearningRule | None]:
    if isinstance(rule, (str, LearningRule)):
        resolved = get_rule(rule)
        return lambda name, module: resolved
    if isinstance(rule, Mapping):
        table = [(pattern, get_rule(r)) for pattern, r in rule.items()]  # unknown names fail here, with a hint
        return lambda name, module: next((r for p, r in table if fnmatch.fnmatchcase(name, p)), None)
    if callable(rule):
        return lambda name, module: (lambda r: None if r is None else get_rule(r))(rule(name, module))
    raise TypeError(f"rule must be a rule name, a LearningRule, a mapping of patterns to rule names or a callable, "
                    f"not {type(rule).__name__}")


#: subclasses of ``nn.Linear``/``nn.Conv2d`` whose own ``forward`` computes the same thing as torch's
SAME_AS_TORCH = {
    "timm.layers.linear.Linear",  # F.linear, with a dtype cast only when TorchScript-compiled
}


def _convertible(module: nn.Module) -> bool:
    """An ``nn.Conv2d`` or ``nn.Linear`` whose forward is torch's own (a subclass may change what it computes)."""
    if f"{type(module).__module__}.{type(module).__qualname__}" in SAME_AS_TORCH:
        return True
    if isinstance(module, nn.Conv2d):
        return type(module).forward is nn.Conv2d.forward and type(module)._conv_forward is nn.Conv2d._conv_forward
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _has_weights(module: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in module.parameters(recurse=False))


def _layer_seed(seed: int, name: str) -> int:
    return (zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def _rule_layer(module: nn.Module, rule: LearningRule, seed: int) -> RuleLayer:
    backprop = get_rule("backprop")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # nothing drawn from the user's generator
        if isinstance(module, nn.Linear):
            layer: RuleLayer = RuleLinear(module.in_features, module.out_features, bias=module.bias is not None,
                                          rule=backprop)
        else:
            zeros = module.padding_mode == "zeros"
            layer = RuleConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                               padding=module.padding if zeros else 0, dilation=module.dilation,
                               groups=module.groups, bias=module.bias is not None, rule=backprop)
            if not zeros:
                layer.op = PaddingModeConv2dOp(layer.op.stride, layer.op.dilation, layer.op.groups,
                                               tuple(module._reversed_padding_repeated_twice), module.padding_mode)
                layer._padding = module.padding
            layer.padding_mode = module.padding_mode
    layer.weight, layer.bias = module.weight, module.bias  # the same Parameters
    layer.seed = seed
    layer.train(module.training)
    return layer.set_rule(rule)


def _children(model: nn.Module):
    """``(parent, attribute, qualified name, module)`` of every module below ``model``, parents first."""
    stack = [("", model)]
    while stack:
        prefix, parent = stack.pop()
        for attribute, child in list(parent.named_children()):
            name = f"{prefix}.{attribute}" if prefix else attribute
            yield parent, attribute, name, child
            stack.append((name, child))


def convert(model: nn.Module, rule: RuleChoice = "backprop", *, include: str | Iterable[str] | None = None,
            exclude: str | Iterable[str] | None = None, seed: int = 0) -> nn.Module:
    """Replace ``model``'s ``nn.Conv2d`` and ``nn.Linear`` modules with rule layers, in place; return ``model``.

    Args:
        model: any PyTorch model (timm, torchvision, your own).
        rule: one rule (name or object) for every layer; a mapping of fnmatch patterns over module names to
            rule names (first match wins; unmatched layers stay torch layers), as :func:`nni_bio.swap_rule`
            takes it; or a callable ``(module_name, module) -> rule name or None``.
        include: fnmatch pattern(s): convert only the layers whose name matches one (default: all).
        exclude: fnmatch pattern(s): leave the layers whose name matches one (e.g. ``"head*"``).
        seed: with each layer's name, the seed its rule draws feedback state from.

    A model with direct-feedback layers (``dfa``) is wired to its output error (:func:`nni_bio.enable_dfa`):
    its main output must be the logits. Layers with weights that cannot be converted are named in one
    :class:`NotConvertedWarning`. Rebuild the optimizer when a rule with learned feedback (``kp``) came in.

    Example:
        >>> import torch, nni_bio
        >>> net = nni_bio.convert(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)),
        ...                       {"0": "fa", "*": "dfa"})
        >>> nni_bio.rule_map(net)
        {'0': 'fa', '1': 'dfa'}
    """
    choose, include, exclude = _chooser(rule), _patterns(include), _patterns(exclude)
    skipped: list[str] = []
    functional: set[int] = set()  # modules whose layers are called through torch.nn.functional, not as modules
    for parent, attribute, name, module in _children(model):
        if id(parent) in functional:
            functional.add(id(module))
            continue
        if (include is not None and not any(fnmatch.fnmatchcase(name, p) for p in include)) or (
                exclude and any(fnmatch.fnmatchcase(name, p) for p in exclude)):
            continue
        if isinstance(module, nn.MultiheadAttention):  # F.multi_head_attention_forward reads its weights
            functional.add(id(module))
            skipped.append(f"{name} ({type(module).__name__})")
            continue
        if isinstance(module, RuleLayer):
            continue
        if not _convertible(module):
            if _has_weights(module):
                skipped.append(f"{name} ({type(module).__name__})")
            continue
        chosen = choose(name, module)
        if chosen is None:
            continue
        try:
            setattr(parent, attribute, _rule_layer(module, chosen, _layer_seed(seed, name)))
        except UnsupportedLayerError as exc:  # e.g. a depthwise convolution and a rule without groups
            skipped.append(f"{name} ({type(module).__name__}: {exc})")
    if skipped:
        warnings.warn(f"nni_bio.convert left {len(skipped)} layer(s) with weights as they were (they train with "
                      f"exact gradients): {', '.join(skipped)}", NotConvertedWarning, stacklevel=2)
    if error_readers(model):
        enable_dfa(model)
    return model


def to_torch(model: nn.Module) -> nn.Module:
    """Put ``nn.Conv2d`` and ``nn.Linear`` back in place of every rule layer, in place, with the same weight and
    bias Parameters; return ``model``. Feedback state is dropped.

    Example:
        >>> import torch, nni_bio
        >>> net = nni_bio.to_torch(nni_bio.convert(torch.nn.Sequential(torch.nn.Linear(4, 2)), "fa"))
        >>> type(net[0]).__name__
        'Linear'
    """
    for parent, attribute, _, module in list(_children(model)):
        if not isinstance(module, RuleLayer):
            continue
        with torch.device("meta"):
            if isinstance(module, RuleLinear):
                plain: nn.Module = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            else:
                plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                                  padding=module.padding, dilation=module.dilation, groups=module.groups,
                                  bias=module.bias is not None,
                                  padding_mode=getattr(module, "padding_mode", "zeros"))
        plain.weight, plain.bias = module.weight, module.bias
        plain.train(module.training)
        setattr(parent, attribute, plain)
    return model
