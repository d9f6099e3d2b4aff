"""A small reader for IDX files (MNIST, Fashion-MNIST), gzip-compressed or not.

Format: a big-endian header ``0x00 0x00 TYPE NDIM`` then NDIM uint32 sizes, then the values
row-major. Only unsigned bytes (TYPE 0x08) are used by the MNIST family: images are
``0x00000803, N, 28, 28`` + N*784 bytes, labels ``0x00000801, N`` + N bytes.

The header fixes the exact payload size, so a file is never read or decompressed past it: a
``.gz`` is decompressed at most one byte beyond what its header implies (a gzip bomb stops there),
and a header implying more than the compressed file could hold, or more than ``MAX_PAYLOAD``, is
refused before anything is decompressed.

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
#: deflate cannot expand data by more than about 1032:1, so a gzip file of S bytes holds at most this
#: many times S bytes (plus a little): a header claiming more is refused before anything is decompressed
MAX_GZIP_RATIO = 1032
#: the largest payload read (bytes): far above any MNIST-family file (Fashion-MNIST train images: 47 MB)
MAX_PAYLOAD = 1 << 30


def _header(head: bytes, path: str | os.PathLike, ndim: int | None = None) -> tuple[tuple[int, ...], int]:
    """``(shape, header length)`` from the first bytes of an IDX file, checking magic number and dims."""
    if len(head) < 4:
        raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != UBYTE or dims == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{head[:4].hex()}; expected 0x000008NN "
                        "(unsigned bytes, NN dimensions), e.g. 0x00000803 for images, 0x00000801 for labels")
    if ndim is not None and dims != ndim:
        raise DataError(f"{path}: IDX file has {dims} dimensions (magic 0x{head[:4].hex()}), expected {ndim} "
                        f"(magic 0x0000080{ndim})")
    header = 4 + 4 * dims
    if len(head) < header:
        raise DataError(f"{path}: truncated IDX header")
    return struct.unpack(f">{dims}I", head[4:header]), header


def _size(shape: tuple[int, ...], header: int) -> int:
    """Exact file size (header included) that an IDX header with ``shape`` implies (Python ints: no overflow)."""
    values = 1
    for n in shape:
        values *= n
    return header + values


def read_bytes(path: str | os.PathLike, *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """The IDX content of ``path``, gunzipped when it is gzip data (decided by its magic bytes, not its name).

    Memory is bounded by the header and the file's real size: the header's dimensions imply the exact
    payload size, which must be at most ``max_payload`` and, for gzip, at most ``MAX_GZIP_RATIO``
    times the compressed size; then at most that many bytes plus one are decompressed, and a payload
    shorter or longer than the header says is refused (a gzip bomb stops after one byte too many).
    """
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            compressed = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if not compressed:
                shape, header = _header(f.read(4 + 4 * 255), path)
                expected = _size(shape, header)
                _check_size(path, shape, expected, max_payload)
                if file_size != expected:
                    raise DataError(f"{path}: IDX header says shape {shape} ({expected:,} bytes with the header) "
                                    f"but the file has {file_size:,} bytes")
                f.seek(0)
                return f.read()
            return _gunzip(f, path, file_size, max_payload)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _check_size(path: str | os.PathLike, shape: tuple[int, ...], expected: int, max_payload: int,
                compressed_size: int | None = None) -> None:
    if expected > max_payload:
        raise DataError(f"{path}: IDX header says shape {shape}: {expected:,} bytes, more than the {max_payload:,} "
                        "this reader accepts; the file is corrupt or crafted")
    if compressed_size is not None and expected > MAX_GZIP_RATIO * compressed_size + 1024:
        raise DataError(f"{path}: IDX header says shape {shape}: {expected:,} bytes, more than a {compressed_size:,}-"
                        f"byte gzip file can hold; the file is corrupt or crafted")


def _gunzip(f, path: str | os.PathLike, file_size: int, max_payload: int) -> bytes:
    stream = gzip.GzipFile(fileobj=f, mode="rb")
    try:
        head = stream.read(4)
        if len(head) == 4 and head[:3] == b"\x00\x00\x08":
            head += stream.read(4 * head[3])
        shape, header = _header(head, path)
        expected = _size(shape, header)
        _check_size(path, shape, expected, max_payload, compressed_size=file_size)
        body = stream.read(expected - header + 1)  # one byte more than the header allows, to detect a longer payload
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if len(body) != expected - header:
        more = "more than" if len(body) > expected - header else f"only {len(body) + header:,} bytes, not"
        raise DataError(f"{path}: IDX header says shape {shape} ({expected:,} bytes with the header) but the "
                        f"decompressed file has {more} that")
    return head + body


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>", *, ndim: int | None = None) -> np.ndarray:
    """Decode IDX ``data`` (uncompressed) into a uint8 array, checking magic number and size."""
    shape, header = _header(data[:4 + 4 * 255], path, ndim)
    expected = _size(shape, header)
    if len(data) != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected:,} bytes with the header) "
                        f"but the file has {len(data):,} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) into a uint8 array; ``ndim`` checks the number of dimensions."""
    return parse_idx(read_bytes(path), path, ndim=ndim)
