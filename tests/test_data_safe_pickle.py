"""The restricted unpickler: plain containers and numpy arrays load, anything that could run code is refused."""

from __future__ import annotations

import os
import pickle
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from nni_bio.data import DataError, get_dataset
from nni_bio.data.fixtures import write_cifar10
from nni_bio.data.safe_pickle import safe_load


class _RunsCommand:
    """A payload whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _dump(obj, path: Path, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_round_trips_cifar_style_dicts(tmp_path: Path, protocol: int) -> None:
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [1, 2], "mean": np.linspace(0, 1, 6),
           "scalar": np.float32(0.5), "names": ["a", "b"], "raw": b"\x00\xff", "empty": b"", "nested": (1.5, None),
           "big_endian": np.arange(3, dtype=">f4"), "flags": np.array([True, False]), "fortran": np.asfortranarray(
               np.arange(6, dtype=np.int64).reshape(2, 3))}
    loaded = safe_load(_dump(obj, tmp_path / "batch", protocol))
    assert loaded.keys() == obj.keys()
    np.testing.assert_array_equal(loaded["data"], obj["data"])
    assert loaded["data"].dtype == np.uint8
    np.testing.assert_allclose(loaded["mean"], obj["mean"])
    assert loaded["scalar"] == np.float32(0.5) and loaded["raw"] == b"\x00\xff" and loaded["empty"] == b""
    assert loaded["nested"] == (1.5, None) and loaded["names"] == ["a", "b"]
    trusted = pickle.loads(pickle.dumps(obj, protocol=protocol))  # what the unrestricted unpickler makes
    for key in ("big_endian", "flags", "fortran"):
        np.testing.assert_array_equal(loaded[key], obj[key])
        assert loaded[key].dtype == trusted[key].dtype
        assert loaded[key].flags.f_contiguous == trusted[key].flags.f_contiguous


def test_accepts_numpy1_module_names_without_warnings(tmp_path: Path) -> None:
    payload = pickle.dumps({"data": np.ones((2, 3), np.uint8)}, protocol=2)
    assert b"numpy._core.multiarray" in payload
    path = tmp_path / "old"
    path.write_bytes(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = safe_load(path)
    np.testing.assert_array_equal(loaded["data"], np.ones((2, 3), np.uint8))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_refuses_os_system_and_does_not_run_it(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = _dump({"data": _RunsCommand(os.system, f"touch {marker}")}, tmp_path / "data_batch_1", protocol)
    with pytest.raises(DataError) as info:
        safe_load(path)
    message = str(info.value)
    assert str(path) in message and "refusing to unpickle" in message and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("func, args", [(subprocess.call, (["true"],)), (eval, ("1+1",)), (getattr, ("abc", "upper")),
                                        (__import__, ("os",))])
def test_refuses_other_code_paths(tmp_path: Path, func, args) -> None:
    path = _dump(_RunsCommand(func, *args), tmp_path / "evil")
    with pytest.raises(DataError, match="refusing to unpickle"):
        safe_load(path)


def test_not_a_pickle_and_truncated_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=f"{garbage}: not a readable pickle"):
        safe_load(garbage)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(pickle.dumps({"data": np.zeros(100, np.uint8)}, protocol=2)[:40])
    with pytest.raises(DataError, match="truncated"):
        safe_load(truncated)
    with pytest.raises(DataError, match="cannot read"):
        safe_load(tmp_path / "absent")


def test_get_dataset_refuses_a_malicious_batch(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n=4)
    marker = tmp_path / "pwned"
    _dump({"data": _RunsCommand(os.system, f"touch {marker}"), "labels": [0]}, folder / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3: refusing to unpickle"):
        get_dataset("cifar10", "train", tmp_path)
    assert not marker.exists()


# --- memory: a few crafted bytes must not make the loader allocate more than the file justifies ---------

def _int(n: int) -> bytes:
    """A pickle opcode pushing the integer ``n`` (LONG1: any size)."""
    size = (n.bit_length() + 8) // 8
    return b"\x8a" + bytes([size]) + n.to_bytes(size, "little", signed=True)


_RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
_DTYPE_U1 = b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R"


def _memory_attacks(n: int) -> dict[str, bytes]:
    """Pickles (protocol 3) that ask for about ``n`` bytes (or ``n`` rows of 3072) from a few dozen bytes."""
    return {
        "list(bytearray(n))": b"\x80\x03c__builtin__\nlist\nc__builtin__\nbytearray\n" + _int(n) + b"\x85R\x85R.",
        "bytes(n)": b"\x80\x03c__builtin__\nbytes\n" + _int(n) + b"\x85R.",
        "ndarray((n, 3072))": b"\x80\x03cnumpy\nndarray\n" + _int(n) + b"M\x00\x0c\x86\x85R.",
        "_reconstruct(ndarray, (n, 3072))": _RECONSTRUCT + _int(n) + b"M\x00\x0c\x86C\x01b\x87R.",
        "array state larger than its data": _RECONSTRUCT + b"K\x00\x85C\x01b\x87R(K\x01" + _int(n)
                                            + b"M\x00\x0c\x86" + _DTYPE_U1 + b"\x89C\x00tb.",
    }


@pytest.mark.parametrize("attack", list(_memory_attacks(1000)))
def test_refuses_calls_that_allocate_from_a_size_in_the_file(tmp_path: Path, attack: str) -> None:
    # small sizes, so that the unrestricted loader would have made them: each must be refused, not made
    path = tmp_path / "data_batch_1"
    path.write_bytes(_memory_attacks(1000)[attack])
    assert len(path.read_bytes()) < 120
    with pytest.raises(DataError, match="refusing to unpickle"):
        safe_load(path)


@pytest.mark.parametrize("name", ["list", "tuple", "dict", "set", "frozenset", "bytearray", "int", "str", "complex",
                                  "getattr", "object"])
def test_builtins_real_files_never_need_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c__builtin__\n" + name.encode() + b"\n)R.")
    with pytest.raises(DataError, match=f"refusing to unpickle: the file asks for builtins.{name}"):
        safe_load(path)


def test_refuses_object_and_structured_dtypes(tmp_path: Path) -> None:
    for protocol in (2, 5):
        for array in (np.array([None, 1], dtype=object), np.zeros(2, dtype=[("a", "u1"), ("b", "f4")])):
            path = _dump({"data": array}, tmp_path / "batch", protocol)
            with pytest.raises(DataError, match="refusing to unpickle"):
                safe_load(path)


def test_memo_references_cannot_multiply_the_data(tmp_path: Path) -> None:
    """One 64 KiB string, encoded 200 times through memo references: 13 MB from a 66 KB file."""
    text = b"a" * 65536
    payload = (b"\x80\x02c_codecs\nencode\nq\x000X" + len(text).to_bytes(4, "little") + text
               + b"q\x010X\x06\x00\x00\x00latin1q\x020(" + b"h\x00h\x01h\x02\x86R" * 200 + b"l.")
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="refusing to unpickle: .*past 2x its size"):
        safe_load(path)
    path.write_bytes(payload.replace(b"\x86R" * 200, b"\x86R" * 1).replace(b"h\x00h\x01h\x02\x86R" * 199, b""))
    assert safe_load(path) == [text]  # once is fine


_BOUNDED = r"""
import json, pickle, resource, sys
from nni_bio.data import DataError
from nni_bio.data.safe_pickle import safe_load

vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))  # 1 GiB more
results = {}
for path in sys.argv[1:]:
    try:
        results[path] = ["loaded", repr(safe_load(path))[:40]]
    except DataError as exc:
        results[path] = ["refused" if "refusing to unpickle" in str(exc) else "error", str(exc)[:300]]
print(json.dumps(results))
"""


def test_huge_requests_are_refused_without_allocating(tmp_path: Path) -> None:
    """The 115-byte attacks at full size, under a 1 GiB address-space limit: refused before any allocation.

    A memo index of 2**31 - 1 (CPython's C unpickler grows its memo table to 2**32 pointers) and a
    bytes opcode claiming 2**40 bytes from a 20-byte file must not allocate either.
    """
    import json
    import sys

    paths = []
    for i, payload in enumerate(_memory_attacks(2 ** 40).values()):
        paths.append(tmp_path / f"attack{i}")
        paths[-1].write_bytes(payload)
    memo = tmp_path / "memo"
    memo.write_bytes(b"\x80\x02K\x07r\xff\xff\xff\x7f.")  # LONG_BINPUT 2**31 - 1, then the int 7
    binbytes8 = tmp_path / "binbytes8"
    binbytes8.write_bytes(b"\x80\x04\x8e" + (2 ** 40).to_bytes(8, "little") + b"abc.")
    script = tmp_path / "bounded.py"
    script.write_text(_BOUNDED)
    run = subprocess.run([sys.executable, str(script), *map(str, paths), str(memo), str(binbytes8)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.splitlines()[-1])
    for path in paths:
        assert results[str(path)][0] == "refused", results[str(path)]
    assert results[str(memo)] == ["loaded", "7"]
    assert results[str(binbytes8)][0] == "error" and "truncated" in results[str(binbytes8)][1]


def _python2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) with numpy 1.x wrote CIFAR-10: str keys and values, the
    dtype built with int flags, the pixels one BINSTRING that ``encoding="latin1"`` reads as a str."""
    def string(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text if len(text) < 256 else b"T" + len(text).to_bytes(4, "little") + text

    rows, width = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01M"
             + rows.to_bytes(2, "little") + b"M" + width.to_bytes(2, "little") + b"\x86cnumpy\ndtype\nq\x06U\x02u1"
             b"K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
             + string(data.tobytes()) + b"tb")
    names = b"".join(string(f"img_{i}.png".encode()) for i in range(rows))
    return (b"\x80\x02}q\x01(" + string(b"batch_label") + string(b"training batch 1 of 5") + string(b"labels")
            + b"]q\x08(" + b"".join(b"K" + bytes([v]) for v in labels) + b"e" + string(b"data") + array
            + string(b"filenames") + b"]q\t(" + names + b"eu.")


def test_reads_a_python2_cifar_batch_like_pickle_does(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, size=(12, 3072), dtype=np.uint8)
    payload = _python2_cifar_batch(data, list(range(10)) + [0, 1])
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    loaded, trusted = safe_load(path), pickle.loads(payload, encoding="latin1")
    assert loaded.keys() == trusted.keys() == {"batch_label", "labels", "data", "filenames"}
    np.testing.assert_array_equal(loaded["data"], data)
    assert loaded["data"].dtype == np.uint8 and loaded["labels"] == trusted["labels"]
    assert loaded["filenames"] == trusted["filenames"] and loaded["batch_label"] == "training batch 1 of 5"
