"""How to rebuild the network of a run: a plain-JSON *model spec*.

``nni-bio train`` stores the spec in ``spec.json``, ``result.json`` and every checkpoint;
``nni-bio attack`` rebuilds the same network from it and loads the weights. Two kinds::

    {"kind": "fixed", "model": "small-cnn", "width": null, "rule": "usf", "rule_map": {}}
    {"kind": "genotype", "genotype": {"space": "darts", ...}, "options": {"width": 36, "num_cells": 20,
     "auxiliary": true}, "rule": null, "rule_map": {}}

For both, ``rule`` (every layer) and then ``rule_map`` (fnmatch pattern -> rule) are applied with
:func:`nni_bio.swap_rule` after building; a genotype network otherwise keeps the rules its
genotype names. A ``rule_map`` pattern that matches no rule layer is an error for both kinds.
The data set's shape (channels, classes, image size) is passed where the builder accepts it, so
a cell searched on CIFAR-10 retrains on CIFAR-100. On ``imagenet`` a builder with a ``network``
option (DARTS) builds its ImageNet network (two stride-2 stems, the ImageNet auxiliary head);
``options["network"]`` overrides that choice.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from nni_bio.core.errors import NniBioError


def fixed_spec(model: str, *, rule: str = "backprop", rule_map: Mapping[str, str] | None = None,
               width: int | None = None, model_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec = {"kind": "fixed", "model": model, "width": width, "rule": rule, "rule_map": dict(rule_map or {})}
    if model_args:  # timm: models' constructor arguments
        spec["model_args"] = dict(model_args)
    return spec


def genotype_spec(genotype: Mapping[str, Any], *, width: int | None = None, cells: int | None = None,
                  auxiliary: bool = False, rule: str | None = None,
                  rule_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if width is not None:
        options["width"] = width
    if cells is not None:
        options["cells"] = cells
    if auxiliary:
        options["auxiliary"] = True
    return {"kind": "genotype", "genotype": dict(genotype), "options": options, "rule": rule,
            "rule_map": dict(rule_map or {})}


#: data sets on which a builder with a ``network`` option builds its ImageNet network
IMAGENET_NETWORK_DATASETS = frozenset({"imagenet"})


def preset_of(spec: Mapping[str, Any]) -> str | None:
    """The layer preset of a DARTS genotype network (``"bio"`` or ``"reference"``), else None.

    ``spec["rule"]``/``spec["rule_map"]`` are applied after the preset and may change those layers.
    """
    genotype = spec.get("genotype") or {}
    if spec.get("kind") != "genotype" or genotype.get("space") != "darts":
        return None
    from nni_bio.search_spaces.darts_cells import full_args

    return full_args(genotype.get("args"))["preset"]


def describe(spec: Mapping[str, Any]) -> str:
    """Short name of the network: ``small-cnn[usf]``, ``darts genotype[C36 L20]``."""
    rules = spec.get("rule") or ""
    if spec.get("rule_map"):
        rules = (rules + "+" if rules else "") + "map"
    if spec["kind"] == "fixed":
        return f"{spec['model']}[{rules or 'backprop'}]"
    opts = spec.get("options", {})
    size = " ".join(f"{k}={v}" for k, v in opts.items())
    name = f"{spec['genotype'].get('space', '?')} genotype"
    return name + (f"[{size}]" if size else "") + (f"[{rules}]" if rules else "")


def _builder_parameters(space_cls: type) -> set[str]:
    """Keyword options ``space_cls.build_network(genotype, **options)`` accepts."""
    from nni_bio.search_spaces._genotype import GenotypeMixin

    if getattr(space_cls.build_network, "__func__", None) is GenotypeMixin.build_network.__func__:
        init = getattr(space_cls, "_init_wrapped", space_cls.__init__)  # NNI wraps ModelSpace.__init__
        return set(inspect.signature(init).parameters) - {"self"}
    builder = getattr(importlib.import_module(space_cls.__module__), "build_network", None)
    if builder is None:
        return set()
    return {name for name, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY}


def build_model(spec: Mapping[str, Any], dataset: str) -> nn.Module:
    """The network of ``spec`` for data set ``dataset`` (fresh weights; seed torch first)."""
    from nni_bio.data import dataset_info
    from nni_bio.core.swap import swap_rule

    info = dataset_info(dataset)
    shape = {"in_channels": info.channels, "num_classes": info.num_classes, "image_size": info.image_size}
    if spec["kind"] == "fixed":
        from nni_bio.nas.fixed_models import build_fixed_model

        return build_fixed_model(spec["model"], width=spec.get("width"), rule=spec.get("rule") or "backprop",
                                 rule_map=spec.get("rule_map"), model_args=spec.get("model_args"), **shape)
    if spec["kind"] != "genotype":
        raise NniBioError(f"unknown model spec kind {spec['kind']!r}: 'fixed' or 'genotype'")
    from nni_bio.search_spaces import space_class

    genotype = spec["genotype"]
    if "space" not in genotype:
        raise NniBioError("the genotype has no 'space' key: expected "
                          "{\"space\": NAME, \"args\": {...}, \"sample\": {...}}")
    space_cls = space_class(genotype["space"])
    accepted = _builder_parameters(space_cls)
    options: dict[str, Any] = {k: v for k, v in shape.items() if k in accepted}
    if dataset in IMAGENET_NETWORK_DATASETS and "network" in accepted:
        options["network"] = "imagenet"
    for key, value in spec.get("options", {}).items():
        names = {"cells": ("num_cells", "cells_per_stage"), "auxiliary": ("auxiliary",), "width": ("width",),
                 "network": ("network",)}[key]
        target = next((n for n in names if n in accepted), None)
        if target is None:
            raise NniBioError(f"the {genotype['space']!r} space has no {key!r} option (its network takes: "
                              f"{', '.join(sorted(accepted)) or 'nothing'})")
        options[target] = value
    model = space_cls.build_network(genotype, **options)
    if spec.get("rule"):
        swap_rule(model, spec["rule"])
    if spec.get("rule_map"):
        _check_patterns(model, spec["rule_map"], f"the {genotype['space']!r} genotype network")
        swap_rule(model, dict(spec["rule_map"]))
    return model


def _check_patterns(model: nn.Module, rule_map: Mapping[str, str], what: str) -> None:
    """Raise if a ``rule_map`` pattern matches no rule layer (a typo would otherwise change nothing)."""
    from nni_bio.core.layers import RuleLayer

    names = [n for n, m in model.named_modules() if isinstance(m, RuleLayer)]
    unmatched = [p for p in rule_map if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise NniBioError(f"rule-map patterns {unmatched} match no layer of {what}; layer names: {shown} "
                          "(nni-bio train --print-layers, without --rule-map, lists them with their rules)")


__all__ = ["build_model", "describe", "fixed_spec", "genotype_spec", "preset_of"]
