"""A restricted unpickler for user-provided data files (CIFAR, ImageNet16).

``pickle.load`` on a file from a user or the internet can execute arbitrary code: a pickle names
callables (``os.system``, ``subprocess.Popen``, ...) and calls them while loading. It can also ask
for any amount of memory from a few bytes: ``list(bytearray(2**40))``, ``numpy.ndarray((N, 3072))``,
a memo index of 2**31 (CPython's C unpickler then allocates a 16 GiB memo table), or one string
copied a million times through memo references.

The data sets nni-bio reads are pickled ``dict``s of lists, strings and numpy arrays, so
:class:`SafeUnpickler` admits exactly that and nothing more:

- no builtin callable except ``bytes()`` without arguments (an empty ``bytes`` under protocol <= 2);
  dicts, lists, tuples, sets, strings and numbers are built by pickle opcodes, not by calls;
- numpy arrays and scalars only the way numpy pickles them, with their arguments checked:
  ``_reconstruct(ndarray, (0,), b"b")`` then a state whose raw bytes have exactly the array's size,
  ``_frombuffer`` (protocol 5), ``scalar``; ``dtype`` only for plain numeric types (no object,
  structured or sub-array dtypes); ``_codecs.encode(str, "latin1")`` for bytes written by Python 3
  with protocol <= 2. ``numpy.ndarray`` itself cannot be called;
- every array, scalar and encoded string the file makes counts against a budget of twice the file's
  size (plus 1 MiB); a file that asks for more is refused. A genuine file needs about its own size;
- it runs on the pure-Python unpickler over the file's bytes in memory (bounded by the real file
  size), whose memo is a dict: no opcode can make it allocate more than the data it reads.

Numpy 1.x and 2.x module names, pickle protocols 0-5 and Python 2 files (read with
``encoding="latin1"``) load. Anything else is refused before it is imported, let alone called.

Example:
    >>> import pickle, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "batch")
    >>> with open(path, "wb") as f:
    ...     pickle.dump({"labels": [1, 2]}, f, protocol=2)
    >>> safe_load(path)
    {'labels': [1, 2]}
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from nni_bio.data._api import DataError

try:  # numpy 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

#: bytes a file may make (arrays, scalars, encoded strings) per byte of its own size, plus SLACK
BUDGET_PER_FILE_BYTE = 2
BUDGET_SLACK = 1 << 20
_NUMERIC_DTYPE = re.compile(r"^[<>|=]?[?biufc]\d{0,2}$")
_BYTE_ORDERS = ("<", ">", "|", "=")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global or a call outside the allowed set (it could run code)."""

    def __init__(self, module: str, name: str, detail: str = ""):
        self.global_name = f"{module}.{name}" if module else name
        self.detail = detail
        super().__init__(f"refusing to load {self.global_name}{detail}")


class OversizedPickleError(pickle.UnpicklingError):
    """The pickle asks for more memory than its size can justify."""


class _ArrayType:
    """Stands for ``numpy.ndarray``, which a pickle may pass to ``_reconstruct`` but never call."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _ArrayType()


class _Allowed:
    """An allowed callable: ``make(*args)`` checks the arguments, then makes the object."""

    __slots__ = ("name", "make")

    def __init__(self, name: str, make: Callable[..., Any]):
        self.name, self.make = name, make

    def __call__(self, *args: Any) -> Any:
        return self.make(*args)


def _numeric_dtype(value: Any, where: str) -> np.dtype:
    if not (isinstance(value, np.dtype) and value.kind in "biufc" and value.fields is None and value.subdtype is None):
        raise UnsafePickleError("", where, f" with dtype {value!r} (only plain numeric dtypes are allowed)")
    return value


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked one by one
    """An unpickler that only rebuilds plain containers, scalars and numeric numpy arrays.

    Args:
        file: a binary file object; :func:`safe_load` passes the file's bytes in a ``BytesIO``.
        budget: the most bytes of arrays, scalars and encoded strings the file may make.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, *, budget: int, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self._budget = budget
        self._unbuilt: set[int] = set()  # ids of arrays made by _reconstruct whose state is still to come
        self._allowed = {
            ("builtins", "bytes"): _Allowed("builtins.bytes", self._bytes),
            ("_codecs", "encode"): _Allowed("_codecs.encode", self._encode),
            ("numpy", "dtype"): _Allowed("numpy.dtype", self._dtype),
            ("multiarray", "_reconstruct"): _Allowed("numpy._core.multiarray._reconstruct", self._reconstruct),
            ("multiarray", "scalar"): _Allowed("numpy._core.multiarray.scalar", self._scalar),
            ("numeric", "_frombuffer"): _Allowed("numpy._core.numeric._frombuffer", self._frombuffer),
        }

    # -- what a name may resolve to ------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:  # receives raw names, e.g. "__builtin__"
        if module in ("builtins", "__builtin__"):
            module = "builtins"
        elif module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            module = "multiarray"
        elif module in ("numpy.core.numeric", "numpy._core.numeric"):
            module = "numeric"
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise UnsafePickleError(module, name)
        return allowed

    # -- the calls a genuine file makes, with their arguments checked ---------------------------

    def _spend(self, nbytes: int, what: str) -> None:
        self._budget -= nbytes
        if self._budget < 0:
            raise OversizedPickleError(f"{what} would take the data made from the file past "
                                       f"{BUDGET_PER_FILE_BYTE}x its size (plus {BUDGET_SLACK:,} bytes)")

    @staticmethod
    def _bytes(*args: Any) -> bytes:
        if args:
            raise UnsafePickleError("builtins", "bytes", f" called with arguments {args!r:.80}")
        return b""

    def _encode(self, text: Any = None, encoding: Any = None, *rest: Any) -> bytes:
        if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError("_codecs", "encode", " except as encode(str, 'latin1')")
        self._spend(len(text), f"a {len(text):,}-byte string")
        return codecs.encode(text, "latin1")

    def _dtype(self, name: Any = None, align: Any = False, copy: Any = True, *rest: Any) -> np.dtype:
        if rest or not isinstance(name, str) or not _NUMERIC_DTYPE.match(name):
            raise UnsafePickleError("numpy", "dtype", f"({name!r:.40}) (only plain numeric dtypes are allowed)")
        return _numeric_dtype(np.dtype(name, bool(align), bool(copy)), "numpy.dtype")

    def _reconstruct(self, subtype: Any = None, shape: Any = None, dtype: Any = None, *rest: Any) -> np.ndarray:
        if rest or subtype is not _NDARRAY or shape != (0,) or dtype not in ("b", b"b"):
            raise UnsafePickleError("numpy", "_reconstruct", f" with arguments {(subtype, shape, dtype)!r:.80} "
                                    "(numpy pickles _reconstruct(ndarray, (0,), b'b'))")
        array = np.ndarray((0,), np.int8)
        self._unbuilt.add(id(array))
        return array

    def _scalar(self, dtype: Any = None, data: Any = None, *rest: Any) -> Any:
        dtype = _numeric_dtype(dtype, "numpy.scalar")
        if rest or not isinstance(data, (bytes, str)) or len(data) != dtype.itemsize:
            raise UnsafePickleError("numpy", "scalar", f" with {type(data).__name__} data for dtype {dtype}")
        self._spend(dtype.itemsize, "a scalar")
        return _numpy_scalar(dtype, data)

    def _frombuffer(self, buffer: Any = None, dtype: Any = None, shape: Any = None, order: Any = "C",
                    *rest: Any) -> np.ndarray:
        dtype = _numeric_dtype(dtype, "numpy._frombuffer")
        if isinstance(buffer, pickle.PickleBuffer):
            buffer = buffer.raw()
        if rest or not isinstance(buffer, (bytes, bytearray, memoryview)) or order not in ("C", "F") \
                or not _is_shape(shape):
            raise UnsafePickleError("numpy", "_frombuffer", " except on in-band bytes with a shape")
        self._spend(len(buffer), f"a {len(buffer):,}-byte array")
        return np.frombuffer(buffer, dtype).reshape(shape, order=order)

    # -- opcodes that call things ------------------------------------------------------------------

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(func, _Allowed) or not isinstance(args, tuple):
            raise UnsafePickleError("", repr(func)[:60], " as a callable")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in _BYTE_ORDERS
                    and state[2:] == (None, None, None, -1, -1, 0)):
                raise UnsafePickleError("numpy", "dtype", f" with state {state!r:.80} (not a plain numeric dtype)")
            inst.__setstate__(state)
        elif type(inst) is np.ndarray and id(inst) in self._unbuilt:
            self._build_array(inst, state)
        else:
            raise UnsafePickleError("", type(inst).__name__, " with a state (only numpy arrays and dtypes have one)")

    dispatch[pickle.BUILD[0]] = load_build

    def _build_array(self, array: np.ndarray, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and _is_shape(state[1])
                and isinstance(state[4], (bytes, str))):
            raise UnsafePickleError("numpy", "ndarray", f" with state {state!r:.80}")
        dtype = _numeric_dtype(state[2], "numpy.ndarray")
        nbytes = dtype.itemsize
        for size in state[1]:
            nbytes *= size
        if nbytes != len(state[4]):
            raise UnsafePickleError("numpy", "ndarray", f" of shape {state[1]} and dtype {dtype} ({nbytes:,} bytes) "
                                    f"from {len(state[4]):,} bytes of data")
        self._spend(nbytes, f"an array of shape {state[1]}")
        self._unbuilt.discard(id(array))
        array.__setstate__(state)

    def _refuse(self) -> None:
        raise UnsafePickleError("", "object construction (INST/OBJ/NEWOBJ)", "; data files hold no objects")

    for _code in (pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX):
        dispatch[_code[0]] = _refuse
    del _code


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler` (``encoding="latin1"``, as torchvision does).

    Raises:
        DataError: the file names the file and says why it cannot be loaded: it asks for a
            callable that could execute code, it is not a pickle, or it is truncated.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()  # bounded by the file's real size; no opcode can read past it
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    budget = BUDGET_PER_FILE_BYTE * len(raw) + BUDGET_SLACK
    try:
        return SafeUnpickler(io.BytesIO(raw), budget=budget, encoding="latin1").load()
    except OversizedPickleError as exc:
        raise DataError(
            f"{path}: refusing to unpickle: {exc}. A genuine data batch needs about its own size in memory; "
            "this file was crafted or is corrupt."
        ) from exc
    except UnsafePickleError as exc:
        raise DataError(
            f"{path}: refusing to unpickle: the file asks for {exc.global_name}{exc.detail}, which could execute "
            "code or allocate arbitrary memory. Data files may contain only plain containers (dict, list, str, "
            "int, ...) and numeric numpy arrays. "
            "Do not use this file unless you know where it comes from; a genuine copy of the data set "
            "contains no such object."
        ) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); "
                        "the file may be truncated or not a data batch") from exc
