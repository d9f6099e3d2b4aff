"""timm models as nni-bio networks: ``timm:<name>`` wherever a model is named (``nni-bio train --model
timm:resnet18 --rule usf``, a study's fixed skeleton).

The model is built without weights (``pretrained=False``: nothing is downloaded) for the data set's channels
and classes, and its ``nn.Conv2d``/``nn.Linear`` layers become rule layers (:func:`nni_bio.convert`). Small
inputs are handled as timm users do it, never by resizing the images: models whose constructor takes
``img_size`` (ViT, DeiT, ...) get the data set's image size; anything else is passed in ``model_args``
(e.g. ``{"patch_size": 4}`` for a ViT on 32x32 images, or ``{"output_stride": 8}`` where a family offers it).

Example:
    >>> net = build_timm("resnet10t", in_channels=1, num_classes=10, image_size=28)
    >>> import torch; net(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from nni_bio.core.errors import NniBioError

__all__ = ["PREFIX", "build_timm", "is_timm_name"]

PREFIX = "timm:"


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def build_timm(name: str, *, in_channels: int, num_classes: int, image_size: int,
               model_args: Mapping[str, Any] | None = None) -> nn.Module:
    """timm model ``name`` (with or without the ``timm:`` prefix), fresh weights, every layer a ``backprop`` rule
    layer (swap rules afterwards with :func:`nni_bio.swap_rule`)."""
    import timm
    import torch

    from nni_bio.core.torch_models import convert

    name = name[len(PREFIX):] if is_timm_name(name) else name
    if name not in timm.list_models():
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), 3)
        raise NniBioError(f"unknown timm model {name!r}" + (f" (did you mean {', '.join(near)}?)" if near else "")
                          + "; `python -c \"import timm; print(timm.list_models('resnet*'))\"` lists them")
    kwargs: dict[str, Any] = {"pretrained": False, "in_chans": in_channels, "num_classes": num_classes}
    with torch.device("meta"):
        accepted = inspect.signature(type(timm.create_model(name, pretrained=False)).__init__).parameters
    if "img_size" in accepted:
        kwargs["img_size"] = image_size
    kwargs.update(model_args or {})
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as exc:
        raise NniBioError(f"timm model {name!r} refuses its arguments {dict(model_args or {})}: {exc}") from exc
    return convert(model, "backprop")
