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
           "scalar": np.float32(0.5), "names": ["a", "b"], "raw": b"\x00\xff", "set": {1, 2}, "nested": (1.5, None)}
    loaded = safe_load(_dump(obj, tmp_path / "batch", protocol))
    assert loaded.keys() == obj.keys()
    np.testing.assert_array_equal(loaded["data"], obj["data"])
    assert loaded["data"].dtype == np.uint8
    np.testing.assert_allclose(loaded["mean"], obj["mean"])
    assert loaded["scalar"] == np.float32(0.5) and loaded["raw"] == b"\x00\xff" and loaded["set"] == {1, 2}


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
