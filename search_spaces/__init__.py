"""Search spaces over architectures and learning rules (installed as ``nni_bio.search_spaces``).

One ``ModelSpace`` per file; constructor arguments are plain data (rule names as strings), so a
trial process rebuilds identical candidates. ``get_space(name, **kwargs)`` builds one by name;
``space_json`` gives the search-space JSON nnictl's tuners read (``nni-bio export-space``, the preflight).
"""

from __future__ import annotations

import importlib
from typing import Any

#: space name -> "module:class"
SPACES = {
    "tiny": "nni_bio.search_spaces.tiny:TinySpace",
    "rule_per_layer": "nni_bio.search_spaces.rule_per_layer:RulePerLayerSpace",
    "darts": "nni_bio.search_spaces.darts:DartsSpace",
    "nb201": "nni_bio.search_spaces.nb201:NB201Space",
    "timm_rules": "nni_bio.search_spaces.timm_rules:TimmRulesSpace",
}


def space_class(name: str) -> type:
    """The ModelSpace class registered as ``name``."""
    if name not in SPACES:
        import difflib

        from nni_bio.core.errors import NniBioError

        close = difflib.get_close_matches(name, SPACES, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise NniBioError(f"unknown search space {name!r}.{hint} Available: {', '.join(SPACES)}")
    module, _, cls = SPACES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def space_arguments(space_cls: type, extra: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Constructor arguments of ``space_cls`` for ``dataset``: the data set's shape (channels, classes,
    image size) where the space accepts it, then ``extra``.

    Example:
        >>> space_arguments(space_class("tiny"), {"width": 4}, "digits")
        {'in_channels': 1, 'num_classes': 10, 'image_size': 8, 'width': 4}
    """
    import inspect

    from nni_bio.data import dataset_info

    info = dataset_info(dataset)
    init = getattr(space_cls, "_init_wrapped", space_cls.__init__)  # NNI wraps ModelSpace.__init__
    accepted = inspect.signature(init).parameters
    shape = {"in_channels": info.channels, "num_classes": info.num_classes, "image_size": info.image_size}
    return {**{k: v for k, v in shape.items() if k in accepted}, **extra}


def get_space(name: str, **kwargs: Any):
    """Build search space ``name`` with plain-data arguments."""
    return space_class(name)(**kwargs)


def space_json(space: str, dataset: str, space_args: dict, fmt: str = "choice") -> dict:
    """The search-space JSON for ``space`` built as a trial would build it (``fmt``: ``"choice"`` for HPO
    tuners, ``"nas"`` for NNI's ``layer_choice`` format)."""
    from nni_bio.nas.mutables import search_space_json

    cls = space_class(space)
    result = search_space_json(cls(**space_arguments(cls, space_args, dataset)))
    if fmt == "nas":
        result = {k: {"_type": "layer_choice", "_value": v["_value"]} for k, v in result.items()}
    return result
