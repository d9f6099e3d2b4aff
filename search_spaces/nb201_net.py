"""The NAS-Bench-201 genotype and network built from it (pure PyTorch: no NNI import).

The cell has 4 nodes and 6 edges ``j -> i`` (j < i); node i sums its incoming edges and the cell
outputs node 3. Edge labels are shared by every cell (one cell genotype, as in NAS-Bench-201):
``cell/0_1``, ``cell/0_2``, ``cell/1_2``, ``cell/0_3``, ``cell/1_3``, ``cell/2_3``.

A genotype is JSON::

    {"space": "nb201",
     "args": {constructor arguments of NB201Space},
     "sample": {"cell/0_1": "nor_conv_3x3@usf", "cell/0_2": "skip_connect", ...},
     "arch": "|nor_conv_3x3@usf~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1@fa~1|none~2|"}

``arch`` is the NAS-Bench-201 architecture string (``|op~source|`` per edge, nodes separated by
``+``) with nni-bio candidate names. The stem conv, the two residual reduction blocks and the
classifier use ``args["fixed_rule"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import NniBioError
from nni_bio.nas.candidates import candidate_name, check_rules, parse_candidate
from nni_bio.nas.ops import (NB201_OPS, ResNetBasicBlock, bio_weight_split, build_op, check_op, has_weights,
                         supports)

SPACE = "nb201"
DEFAULT_RULES = ("usf", "brsf", "frsf", "fa")
NUM_NODES = 4
#: (source, target) of the cell's edges, in arch-string order
EDGES = [(j, i) for i in range(1, NUM_NODES) for j in range(i)]

#: constructor arguments of NB201Space and their defaults
DEFAULT_ARGS: dict[str, Any] = {
    "in_channels": 3, "num_classes": 10, "width": 16, "cells_per_stage": 5,
    "rules": list(DEFAULT_RULES), "ops": list(NB201_OPS), "fixed_rule": "usf",
}


class GenotypeError(NniBioError, ValueError):
    """A genotype, sample or arch string that does not fit the space."""


def edge_label(source: int, target: int) -> str:
    return f"cell/{source}_{target}"


def full_args(args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor arguments with defaults filled in, as JSON-ready plain data."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(DEFAULT_ARGS))
    if unknown:
        raise GenotypeError(f"unknown NB201 space arguments {unknown}; known: {', '.join(DEFAULT_ARGS)}")
    out = {**DEFAULT_ARGS, **args}
    out["rules"], out["ops"] = list(out["rules"]), [check_op(op) for op in out["ops"]]
    get_rule(out["fixed_rule"])
    return out


def cell_candidates(args: Mapping[str, Any]) -> list[str]:
    """Candidates of every edge: ops without weights in the cell (stride 1, same channels) once, the
    others once per rule that can build them (ops in the given order, rules sorted)."""
    args = full_args(args)
    rules = check_rules(args["rules"])
    return [candidate_name(op, rule) for op in args["ops"]
            for rule in ([r for r in rules if supports(op, r)] if has_weights(op, 1, 1, 1) else [None])]


def arch_string(sample: Mapping[str, Any]) -> str:
    """The NAS-Bench-201 string of a sample: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    nodes = []
    for i in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{sample[edge_label(j, i)]}~{j}" for j in range(i)) + "|")
    return "+".join(nodes)


def sample_from_arch(arch: str) -> dict[str, str]:
    """Inverse of :func:`arch_string`."""
    sample: dict[str, str] = {}
    nodes = arch.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise GenotypeError(f"arch string {arch!r} has {len(nodes)} nodes, expected {NUM_NODES - 1}")
    for i, node in enumerate(nodes, start=1):
        edges = [e for e in node.strip("|").split("|") if e]
        if len(edges) != i:
            raise GenotypeError(f"node {i} of {arch!r} has {len(edges)} edges, expected {i}")
        for edge in edges:
            op, _, source = edge.rpartition("~")
            if not op or not source.isdigit() or int(source) >= i:
                raise GenotypeError(f"bad edge {edge!r} in {arch!r}: expected 'op~source' with source < {i}")
            sample[edge_label(int(source), i)] = op
    return sample


def export_genotype(sample: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON genotype of an NNI sample of :class:`NB201Space` (see the module docstring).

    Raises:
        GenotypeError: an edge label is missing or its candidate is not in the space.
    """
    args = full_args(args)
    allowed = cell_candidates(args)
    clean: dict[str, str] = {}
    for j, i in EDGES:
        label = edge_label(j, i)
        if label not in sample:
            raise GenotypeError(f"sample lacks {label!r}; it has {sorted(sample)}")
        if sample[label] not in allowed:
            raise GenotypeError(f"{label}={sample[label]!r} is not a candidate: {allowed}")
        clean[label] = str(sample[label])
    return {"space": SPACE, "args": args, "sample": dict(sorted(clean.items())), "arch": arch_string(clean)}


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell with fixed edges ``{(source, target): candidate}``."""

    def __init__(self, edges: Mapping[tuple[int, int], str], C: int, *, fixed_rule: str, affine: bool = True):
        super().__init__()
        self.edges = [(j, i) for j, i in EDGES]
        self.ops = nn.ModuleList(build_op(edges[e], C, C, 1, rule=fixed_rule, affine=affine) for e in self.edges)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            nodes.append(sum(op(nodes[j]) for op, (j, t) in zip(self.ops, self.edges) if t == i))
        return nodes[-1]


class NB201Network(nn.Module):
    """Stem (3x3 conv, BN), three stages of ``cells_per_stage`` cells at width, 2x and 4x width joined
    by residual reduction blocks, BN-ReLU, global pooling, classifier."""

    def __init__(self, genotype: Mapping[str, Any], *, width: int, cells_per_stage: int, num_classes: int,
                 in_channels: int):
        super().__init__()
        args = full_args(genotype.get("args"))
        rule = args["fixed_rule"]
        sample = genotype.get("sample") or sample_from_arch(genotype["arch"])
        edges = {(j, i): sample[edge_label(j, i)] for j, i in EDGES}
        for name in edges.values():
            check_op(parse_candidate(name)[0])
        self.genotype = dict(genotype)
        self.stem = nn.Sequential(get_rule(rule).conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))
        layers: list[nn.Module] = []
        C = width
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(C, 2 * C, 2, rule=rule))
                C *= 2
            layers.extend(NB201Cell(edges, C, fixed_rule=rule) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = get_rule(rule).linear(C, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(x).flatten(1))


def build_network(genotype: Mapping[str, Any], *, width: int | None = None, cells_per_stage: int | None = None,
                  num_classes: int | None = None, in_channels: int | None = None) -> NB201Network:
    """The network of ``genotype``; each option defaults to the genotype's ``args``.

    The genotype needs ``sample`` or ``arch`` (``args`` default to the space defaults).

    Example:
        >>> import torch
        >>> arch = "|nor_conv_3x3@usf~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1@fa~1|none~2|"
        >>> g = {"space": "nb201", "arch": arch}
        >>> build_network(g, width=4, cells_per_stage=1)(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """
    if genotype.get("space", SPACE) != SPACE:
        raise GenotypeError(f"genotype is for space {genotype.get('space')!r}, not {SPACE!r}")
    args = full_args(genotype.get("args"))
    pick = lambda value, key: args[key] if value is None else value  # noqa: E731
    return NB201Network(genotype, width=pick(width, "width"), cells_per_stage=pick(cells_per_stage, "cells_per_stage"),
                        num_classes=pick(num_classes, "num_classes"), in_channels=pick(in_channels, "in_channels"))


__all__ = [
    "DEFAULT_ARGS", "DEFAULT_RULES", "EDGES", "GenotypeError", "NB201Cell", "NB201Network", "arch_string",
    "bio_weight_split", "build_network", "cell_candidates", "edge_label", "export_genotype", "full_args",
    "sample_from_arch",
]
