"""A restricted unpickler for user-provided data files (CIFAR, ImageNet16).

``pickle.load`` on a file from a user or the internet can execute arbitrary code: a pickle names
callables (``os.system``, ``subprocess.Popen``, ...) and calls them while loading. The data sets
nni-bio reads are pickled ``dict``s of lists, strings and numpy arrays, so :class:`SafeUnpickler`
admits exactly that: builtin containers and scalars plus the few numpy globals needed to rebuild
arrays and dtypes (numpy 1.x and 2.x module names, pickle protocols 0-5, Python 2 files). Anything
else is refused before it is imported, let alone called.

Example:
    >>> import pickle, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "batch")
    >>> with open(path, "wb") as f:
    ...     pickle.dump({"labels": [1, 2]}, f, protocol=2)
    >>> safe_load(path)
    {'labels': [1, 2]}
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from nni_bio.data._api import DataError

_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes written by Python 3 with pickle protocol <= 2
    *((m, f) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for f in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
             "int", "float", "complex", "bool"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set (it could run code)."""

    def __init__(self, module: str, name: str):
        self.global_name = f"{module}.{name}"
        super().__init__(f"refusing to load global {self.global_name}")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds plain containers, scalars and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:  # receives raw names, e.g. "__builtin__"
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return super().find_class("builtins", name)
        if (module, name) in _NUMPY:
            # numpy 2 keeps numpy.core only as a deprecated alias of numpy._core: import the real one
            if module.startswith("numpy.core."):
                try:
                    return super().find_class("numpy._core." + module.split(".", 2)[2], name)
                except ImportError:  # numpy 1.x has no numpy._core
                    pass
            return super().find_class(module, name)
        raise UnsafePickleError(module, name)


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler` (``encoding="latin1"``, as torchvision does).

    Raises:
        DataError: the file names the file and says why it cannot be loaded: it asks for a
            callable that could execute code, it is not a pickle, or it is truncated.
    """
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as exc:
        raise DataError(
            f"{path}: refusing to unpickle: the file asks for {exc.global_name}, which could execute code. "
            "Data files may contain only plain containers (dict, list, str, int, ...) and numpy arrays. "
            "Do not use this file unless you know where it comes from; a genuine copy of the data set "
            "contains no such object."
        ) from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); "
                        "the file may be truncated or not a data batch") from exc
