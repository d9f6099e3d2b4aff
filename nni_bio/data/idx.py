"""A small reader for IDX files (MNIST, Fashion-MNIST), gzip-compressed or not.

Format: a big-endian header ``0x00 0x00 TYPE NDIM`` then NDIM uint32 sizes, then the values
row-major. Only unsigned bytes (TYPE 0x08) are used by the MNIST family: images are
``0x00000803, N, 28, 28`` + N*784 bytes, labels ``0x00000801, N`` + N bytes.

Example:
    >>> import os, struct, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(struct.pack(">II", 0x801, 3) + bytes([1, 2, 3]))
    >>> read_idx(path).tolist()
    [1, 2, 3]
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from nni_bio.data._api import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``, gunzipped when it is gzip data (decided by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>", *, ndim: int | None = None) -> np.ndarray:
    """Decode IDX ``data`` (uncompressed) into a uint8 array, checking magic number and size."""
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or dims == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{data[:4].hex()}; expected 0x000008NN "
                        "(unsigned bytes, NN dimensions), e.g. 0x00000803 for images, 0x00000801 for labels")
    if ndim is not None and dims != ndim:
        raise DataError(f"{path}: IDX file has {dims} dimensions (magic 0x{data[:4].hex()}), expected {ndim} "
                        f"(magic 0x0000080{ndim})")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected:,} bytes with the header) "
                        f"but the file has {len(data):,} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) into a uint8 array; ``ndim`` checks the number of dimensions."""
    return parse_idx(read_bytes(path), path, ndim=ndim)
