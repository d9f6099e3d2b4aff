"""The default genotype contract of a search space: the sample plus the constructor arguments.

A genotype is plain JSON: ``{"space": NAME, "args": {...}, "sample": {label: candidate}}``.
Spaces with a richer final network (DARTS) override ``export_genotype``/``build_network``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


class GenotypeMixin:
    """``export_genotype`` and ``build_network`` for spaces whose final network is the frozen space."""

    space_name: str = ""

    @classmethod
    def export_genotype(cls, sample: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return {"space": cls.space_name, "args": dict(args), "sample": dict(sorted(sample.items()))}

    @classmethod
    def build_network(cls, genotype: dict[str, Any], **options: Any) -> nn.Module:
        """Rebuild the network; ``options`` override constructor arguments (e.g. ``width``).

        Its initial weights depend only on the global seed and on each layer's name and shape, never on
        the other candidates its space offered (a space builds every candidate before it freezes one):
        the same ops with other rules, from a one-rule space or a six-rule one, start from the same
        forward weights, so a seed pairs networks across arms. The global RNG advances by one draw.
        """
        from nni_bio.nas.mutables import freeze

        if genotype.get("space") != cls.space_name:
            raise ValueError(f"genotype is for space {genotype.get('space')!r}, not {cls.space_name!r}")
        base = int(torch.randint(0, 2**62, (), device="cpu"))
        with torch.random.fork_rng(devices=[]):
            model = freeze(cls(**{**genotype["args"], **options}), genotype["sample"])
            reinitialize(model, base)
        return model


def reinitialize(model: nn.Module, base_seed: int) -> nn.Module:
    """Draw every layer's initial parameters again from a seed of its own: ``base_seed`` and the layer's name.

    Rule layers get fresh Xavier weights, zero biases, a new layer seed and the feedback state their rule
    builds from it; other layers run their ``reset_parameters``. Uses (and leaves changed) the global RNG:
    call it under ``torch.random.fork_rng``.
    """
    from nni_bio.core.layers import RuleLayer

    for name, module in model.named_modules():
        if isinstance(module, RuleLayer):
            torch.manual_seed(_layer_seed(base_seed, name))
            module._init_parameters()
            module.feedback = module.rule.feedback(module)
        elif callable(getattr(module, "reset_parameters", None)) and any(True for _ in module.parameters(recurse=False)):
            torch.manual_seed(_layer_seed(base_seed, name))
            module.reset_parameters()
    return model


def _layer_seed(base_seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{base_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
