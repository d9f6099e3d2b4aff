"""The DARTS genotype format and its cells, shared by the CIFAR and ImageNet networks (pure PyTorch).

Plain-data genotype helpers (:func:`full_args`, :func:`export_genotype`, :func:`with_preset`, the
candidate lists), :class:`DartsCell`, :class:`AuxiliaryHead` and :func:`stack_cells`. The networks are
built in :mod:`nni_bio.search_spaces.darts_net` (``NetworkCIFAR``, :func:`~nni_bio.search_spaces.darts_net.build_network`)
and :mod:`nni_bio.search_spaces.darts_imagenet` (``NetworkImageNet``); both import this module, neither
imports the other's helpers. The genotype format and the presets are described in
:mod:`nni_bio.search_spaces.darts_net`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import NniBioError
from nni_bio.nas.candidates import candidate_name, check_rules, parse_candidate
from nni_bio.nas.ops import (DARTS_OPS, PARAMETER_FREE, FactorizedReduce, ReLUConvBN, bio_weight_split, build_op,
                         check_op, drop_path, supports)
SPACE = "darts"
DEFAULT_RULES = ("usf", "brsf", "frsf", "fa")

#: constructor arguments of DartsSpace and their defaults (the paper's search supernet)
DEFAULT_ARGS: dict[str, Any] = {
    "in_channels": 3, "num_classes": 10, "width": 16, "num_cells": 8, "num_nodes": 4, "stem_multiplier": 3,
    "rules": list(DEFAULT_RULES), "ops": list(DARTS_OPS), "fixed_rule": "usf", "reduce_skip_rules": False,
    "preset": "bio",
}
#: presets of the layers outside the searched cell ops (stem, cell-input preprocessing, stride-2
#: skip_connect, classifier, auxiliary head); see the module docstring
PRESETS: dict[str, str] = {
    "bio": "no backprop layer anywhere: stem, cell pre-processing, skip FactorizedReduce, classifier and "
           "auxiliary head use fixed_rule (a bio rule, usf by default)",
    "reference": "the reference code's setting: stem, cell pre-processing, skip FactorizedReduce, classifier and "
                 "auxiliary head learn by backprop; only the cell ops use bio rules",
}
#: the final networks :func:`build_network` builds: (default width, default cells)
NETWORKS: dict[str, tuple[int, int]] = {"cifar": (36, 20), "imagenet": (48, 14)}
CELL_TYPES = ("normal", "reduce")
OPS_PER_NODE = 2
NUM_INPUTS = 2


class GenotypeError(NniBioError, ValueError):
    """A genotype or sample that does not fit the space."""


def full_args(args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor arguments with defaults filled in, as JSON-ready plain data (lists, not tuples)."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(DEFAULT_ARGS))
    if unknown:
        raise GenotypeError(f"unknown DARTS space arguments {unknown}; known: {', '.join(DEFAULT_ARGS)}")
    out = {**DEFAULT_ARGS, **args}
    out["rules"], out["ops"] = list(out["rules"]), [check_op(op) for op in out["ops"]]
    out["preset"], out["fixed_rule"] = _resolve_preset(args.get("preset"), args.get("fixed_rule"))
    return out


def _is_backprop(rule: str) -> bool:
    return get_rule(rule).info.family == "backprop"


def _resolve_preset(preset: str | None, fixed_rule: str | None) -> tuple[str, str]:
    """``(preset, fixed_rule)`` from what was given; contradictions are errors."""
    if preset is None:
        rule = DEFAULT_ARGS["fixed_rule"] if fixed_rule is None else fixed_rule
        return ("reference" if _is_backprop(rule) else "bio"), rule
    if preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(str(preset), PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise GenotypeError(f"unknown preset {preset!r}.{hint} Presets: {', '.join(PRESETS)}")
    if preset == "reference":
        if fixed_rule is not None and not _is_backprop(fixed_rule):
            raise GenotypeError(f"preset 'reference' trains the stem, cell pre-processing, skip FactorizedReduce, "
                                f"classifier and auxiliary head with backprop, but fixed_rule={fixed_rule!r}: drop "
                                f"fixed_rule, or use preset 'bio'")
        return preset, "backprop" if fixed_rule is None else fixed_rule
    rule = DEFAULT_ARGS["fixed_rule"] if fixed_rule is None else fixed_rule
    if _is_backprop(rule):
        raise GenotypeError(f"preset 'bio' has no backprop layer, but fixed_rule={rule!r}: use a bio fixed_rule "
                            f"(e.g. 'usf'), or preset 'reference'")
    return preset, rule


def with_preset(genotype: Mapping[str, Any], preset: str) -> dict[str, Any]:
    """``genotype`` with its arguments switched to ``preset`` (``bio`` keeps a bio ``fixed_rule``, else ``usf``).

    Example:
        >>> with_preset(BIODARTS, "reference")["args"]["fixed_rule"]
        'backprop'
    """
    if genotype.get("space", SPACE) != SPACE:
        raise GenotypeError(f"presets exist for the {SPACE!r} space only, not for a {genotype.get('space')!r} "
                            f"genotype (its fixed layers follow args['fixed_rule'])")
    args = {k: v for k, v in dict(genotype.get("args") or {}).items() if k != "preset"}
    if preset == "reference" or (args.get("fixed_rule") is not None and _is_backprop(args["fixed_rule"])):
        args.pop("fixed_rule", None)
    return {**genotype, "args": full_args({**args, "preset": preset})}


def preset_op(name: str, stride: int, preset: str) -> str:
    """The candidate actually built: in the ``reference`` preset a stride-2 ``skip_connect`` drops its
    ``@rule`` (it then uses ``fixed_rule``, i.e. backprop), as in the reference code."""
    op, _ = parse_candidate(name)
    return op if preset == "reference" and op == "skip_connect" and stride != 1 else name


def reduction_cells(num_cells: int) -> set[int]:
    """Indices of the reduction cells: L//3 and 2L//3, as in DARTS."""
    return {num_cells // 3, 2 * num_cells // 3}


def cell_candidates(args: Mapping[str, Any], cell_type: str) -> list[str]:
    """Candidate names of every op slot of a cell type, in the space's order (ops as given, rules sorted).

    Parameter-free ops are one candidate. Pairs a rule cannot build (a sep/dil conv with a rule
    without grouped-conv support) are left out. ``skip_connect`` is one candidate (Identity at stride 1, a
    FactorizedReduce with ``fixed_rule`` at stride 2), except in reduction cells when
    ``reduce_skip_rules`` is true: then ``skip_connect@rule`` per rule.
    """
    args = full_args(args)
    rules = check_rules(args["rules"])
    per_rule = lambda op: op not in PARAMETER_FREE and (  # noqa: E731
        op != "skip_connect" or (cell_type == "reduce" and args["reduce_skip_rules"]))
    return [candidate_name(op, rule) for op in args["ops"]
            for rule in ([r for r in rules if supports(op, r)] if per_rule(op) else [None])]


def labels(num_nodes: int, cell_type: str) -> list[tuple[str, str]]:
    """(op label, input label) of every slot, node by node: ``("normal/op_2_0", "normal/input_2_0")``, ..."""
    return [(f"{cell_type}/op_{i}_{k}", f"{cell_type}/input_{i}_{k}")
            for i in range(NUM_INPUTS, NUM_INPUTS + num_nodes) for k in range(OPS_PER_NODE)]


def _input_index(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise GenotypeError(f"an op slot takes exactly one input, got {value!r}")
        value = value[0]
    return int(value)


def export_genotype(sample: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn an NNI sample of :class:`DartsSpace` into a JSON-serializable genotype (see module doc).

    Args:
        sample: ``{label: value}`` from ``space.freeze``/``simplify`` sampling, an NNI tuner or a
            one-shot export; input choices may be ``[j]`` or ``j``.
        args: the space's constructor arguments (missing ones take their defaults).

    Raises:
        GenotypeError: a label is missing, a candidate is not in the space, an input is out of range.
    """
    args = full_args(args)
    genotype: dict[str, Any] = {"space": SPACE, "args": args, "sample": {}}
    for cell_type in CELL_TYPES:
        allowed = cell_candidates(args, cell_type)
        edges = []
        for op_label, input_label in labels(args["num_nodes"], cell_type):
            missing = [label for label in (op_label, input_label) if label not in sample]
            if missing:
                raise GenotypeError(f"sample lacks {missing}; it has {sorted(sample)}")
            op, j = str(sample[op_label]), _input_index(sample[input_label])
            node = int(op_label.rsplit("_", 2)[1])
            if op not in allowed:
                raise GenotypeError(f"{op_label}={op!r} is not a candidate of the {cell_type} cell: {allowed}")
            if not 0 <= j < node:
                raise GenotypeError(f"{input_label}={j} is out of range: node {node} takes inputs 0..{node - 1}")
            genotype["sample"][op_label], genotype["sample"][input_label] = op, [j]
            edges.append([op, j])
        genotype[cell_type] = edges
        genotype[f"{cell_type}_concat"] = list(range(NUM_INPUTS, NUM_INPUTS + args["num_nodes"]))
    genotype["sample"] = dict(sorted(genotype["sample"].items()))
    return genotype


def sample_from_edge_weights(weights: Mapping[str, Mapping[str, float]], num_nodes: int = 4, *,
                             exclude: Iterable[str] = ("none",)) -> dict[str, Any]:
    """DARTS' derivation rule: per node keep the two incoming edges whose best non-``none`` op weighs
    most, and take that op on each.

    Args:
        weights: ``{"normal/3_1": {candidate: weight}, ...}`` (edge ``cell/target_source``), i.e. what
            NNI's DARTS ``strategy.oneshot_module.export_probs()`` returns for a ``Cell``.
        num_nodes: intermediate nodes per cell.
        exclude: candidates never chosen.
    """
    exclude = set(exclude)
    sample: dict[str, Any] = {}
    for cell_type in CELL_TYPES:
        for i in range(NUM_INPUTS, NUM_INPUTS + num_nodes):
            best = []
            for j in range(i):
                edge = weights.get(f"{cell_type}/{i}_{j}")
                if edge is None:
                    raise GenotypeError(f"weights lack edge {cell_type}/{i}_{j}; have {sorted(weights)}")
                op, w = max(((o, w) for o, w in edge.items() if o not in exclude), key=lambda t: t[1])
                best.append((w, j, op))
            best.sort(key=lambda t: -t[0])
            for k, (_, j, op) in enumerate(sorted(best[:OPS_PER_NODE], key=lambda t: t[1])):
                sample[f"{cell_type}/op_{i}_{k}"], sample[f"{cell_type}/input_{i}_{k}"] = op, [j]
    return sample


# --------------------------------------------------------------------------------------------
# the final network (DARTS NetworkCIFAR)


class DartsCell(nn.Module):
    """A DARTS cell with a fixed list of ``(candidate, input)`` edges, two per node."""

    def __init__(self, edges: Sequence[Sequence[Any]], concat: Sequence[int], C_prev_prev: int, C_prev: int, C: int,
                 *, reduction: bool, reduction_prev: bool, fixed_rule: str, affine: bool = True, preset: str = "bio"):
        super().__init__()
        if len(edges) % OPS_PER_NODE:
            raise GenotypeError(f"a cell needs {OPS_PER_NODE} edges per node, got {len(edges)} edges")
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, rule=fixed_rule, affine=affine) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, rule=fixed_rule, affine=affine))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, rule=fixed_rule, affine=affine)
        self.indices = [int(j) for _, j in edges]
        self.concat = [int(i) for i in concat]
        self.ops = nn.ModuleList()
        for n, (name, j) in enumerate(edges):
            node = NUM_INPUTS + n // OPS_PER_NODE
            if not 0 <= int(j) < node:
                raise GenotypeError(f"edge {n} ({name!r}) takes input {j}, but node {node} takes inputs 0..{node - 1}")
            stride = 2 if reduction and int(j) < NUM_INPUTS else 1
            self.ops.append(build_op(preset_op(name, stride, preset), C, C, stride, rule=fixed_rule, affine=affine))
        self.multiplier = len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for n in range(0, len(self.ops), OPS_PER_NODE):
            total = 0
            for op, j in zip(self.ops[n:n + OPS_PER_NODE], self.indices[n:n + OPS_PER_NODE]):
                h = op(states[j])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' CIFAR auxiliary tower (input 8x8 after two reductions of 32 px) with rule layers.

    At other input sizes the 5x5/3 average pool becomes an adaptive pool to 2x2.
    """

    def __init__(self, C: int, num_classes: int, *, rule: str):
        super().__init__()
        r = get_rule(rule)
        self.features = nn.Sequential(
            r.conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            r.conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = r.linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        if x.shape[-2:] == (8, 8):
            x = nn.functional.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        else:
            x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


def stack_cells(genotype: Mapping[str, Any], width: int, num_cells: int, C_prev_prev: int, C_prev: int, *,
                reduction_prev: bool, fixed_rule: str, preset: str) -> tuple[nn.ModuleList, int, int]:
    """DARTS' stack of cells after the stem: ``(cells, channels of the last cell, channels after cell 2L//3)``.

    Reductions (doubling the width) at L//3 and 2L//3; ``reduction_prev`` says whether the stem's two
    outputs differ in resolution (ImageNet), so the first cell reduces its c_{k-2} input.
    """
    cells, C_curr, C_aux = nn.ModuleList(), width, C_prev
    reductions = reduction_cells(num_cells)
    for i in range(num_cells):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        cell_type = "reduce" if reduction else "normal"
        cell = DartsCell(genotype[cell_type], genotype[f"{cell_type}_concat"], C_prev_prev, C_prev, C_curr,
                         reduction=reduction, reduction_prev=reduction_prev, fixed_rule=fixed_rule, preset=preset)
        cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        if i == 2 * num_cells // 3:
            C_aux = C_prev
    return cells, C_prev, C_aux


__all__ = [
    "AuxiliaryHead", "CELL_TYPES", "DEFAULT_ARGS", "DEFAULT_RULES", "DartsCell", "GenotypeError", "NETWORKS", "NUM_INPUTS", "OPS_PER_NODE", "PRESETS", "SPACE", "bio_weight_split", "cell_candidates", "export_genotype", "full_args", "labels", "preset_op", "reduction_cells", "sample_from_edge_weights", "stack_cells", "with_preset",
]
