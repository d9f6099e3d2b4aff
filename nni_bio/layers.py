"""The old place of :mod:`nni_bio.core.layers`, kept for plugins written against nni-bio 0.1: importing it
warns (``FutureWarning``) and gives the very same objects. It goes in the next release; import from
``nni_bio.core.layers`` (or the top-level ``nni_bio``) instead."""

import warnings as _warnings

from nni_bio.core import layers as _moved

_warnings.warn("nni_bio.layers has moved to nni_bio.core.layers: import from there (or from nni_bio); "
               "the old name goes in the next release", FutureWarning, stacklevel=2)


def __getattr__(name: str) -> object:
    return getattr(_moved, name)


def __dir__() -> list[str]:
    return dir(_moved)
