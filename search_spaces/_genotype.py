"""The default genotype contract of a search space: the sample plus the constructor arguments.

A genotype is plain JSON: ``{"space": NAME, "args": {...}, "sample": {label: candidate}}``.
Spaces with a richer final network (DARTS) override ``export_genotype``/``build_network``.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class GenotypeMixin:
    """``export_genotype`` and ``build_network`` for spaces whose final network is the frozen space."""

    space_name: str = ""

    @classmethod
    def export_genotype(cls, sample: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return {"space": cls.space_name, "args": dict(args), "sample": dict(sorted(sample.items()))}

    @classmethod
    def build_network(cls, genotype: dict[str, Any], **options: Any) -> nn.Module:
        """Rebuild the network; ``options`` override constructor arguments (e.g. ``width``)."""
        from nni_bio.nas import freeze

        if genotype.get("space") != cls.space_name:
            raise ValueError(f"genotype is for space {genotype.get('space')!r}, not {cls.space_name!r}")
        return freeze(cls(**{**genotype["args"], **options}), genotype["sample"])
