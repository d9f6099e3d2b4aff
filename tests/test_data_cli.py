"""``nni-bio data check|list``, checksum reporting, and proof that nothing touches the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import nni_bio.data
from nni_bio.cli import main
from nni_bio.data import DATASETS, check_dataset, fashion_mnist, get_dataset
from nni_bio.data import checksums
from nni_bio.data.fixtures import (write_cifar10, write_cifar100, write_fashion_mnist, write_imagenet16,
                                   write_imagenet_folder)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NNI_BIO_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    for attr in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, attr, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def all_fixtures(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_cifar10(root, n=10)
    write_cifar100(root, n=20)
    write_imagenet16(root, n=12)
    write_fashion_mnist(root)
    write_imagenet_folder(root, classes=2, per_class=3, val_per_class=1, size=16)
    return root


def test_check_a_fixture_exits_zero(all_fixtures: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", "cifar10", "--data-dir", str(all_fixtures)]) == 0
    out = capsys.readouterr().out
    assert "cifar10: usable" in out and str(all_fixtures / "cifar-10-batches-py") in out
    assert "train:     45" in out and "val:       5" in out and "test:      10" in out
    assert "classes:   10" in out and "CIFAR-format data, not the official CIFAR-10 files" in out


def test_check_uses_env_var(all_fixtures: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("NNI_BIO_DATA", str(all_fixtures))
    assert main(["data", "check", "imagenet16-120"]) == 0
    out = capsys.readouterr().out
    assert "with labels 121..1000 skipped" in out and "ImageNet16-format data" in out


def test_check_a_broken_dir_exits_non_zero_with_reason(all_fixtures: Path, capsys: pytest.CaptureFixture) -> None:
    (all_fixtures / "cifar-100-python" / "test").unlink()
    assert main(["data", "check", "cifar100", "--data-dir", str(all_fixtures)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nni-bio data: error: data set 'cifar100' not found")
    assert "missing test" in err and "--data-dir" in err


def test_check_a_malicious_file_exits_non_zero(all_fixtures: Path, capsys: pytest.CaptureFixture) -> None:
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {all_fixtures / 'pwned'}",)

    (all_fixtures / "ImageNet16" / "val_data").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    assert main(["data", "check", "imagenet16-120", "--data-dir", str(all_fixtures)]) == 2
    assert "val_data: refusing to unpickle" in capsys.readouterr().err
    assert not (all_fixtures / "pwned").exists()


def test_check_unknown_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", "cifar-10"]) == 2
    assert "Did you mean 'cifar10'" in capsys.readouterr().err


def test_list_says_found_or_not(all_fixtures: Path, capsys: pytest.CaptureFixture) -> None:
    (all_fixtures / "cifar-10-batches-py" / "test_batch").unlink()
    assert main(["data", "list", "--data-dir", str(all_fixtures)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == set(DATASETS)
    assert "not found" in lines["cifar10"] and str(all_fixtures / "cifar-10-batches-py") in lines["cifar10"]
    for name in ("digits", "cifar100", "imagenet16-120", "fashion-mnist", "imagenet"):
        assert " found " in lines[name], lines[name]


def test_genuine_copies_are_reported(all_fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = all_fixtures / "cifar-10-batches-py"
    fake_official = {name: checksums.md5_file(folder / name) for name in checksums.OFFICIAL_MD5["cifar10"]}
    monkeypatch.setitem(checksums.OFFICIAL_MD5, "cifar10", fake_official)
    report = check_dataset("cifar10", all_fixtures)
    assert report.genuine is True and report.checksum == "genuine CIFAR-10 (7/7 files match the official MD5s)"
    (folder / "batches.meta").unlink()  # optional: still genuine on the files present, and noted
    report = check_dataset("cifar10", all_fixtures)
    assert report.genuine is True and any("batches.meta" in note for note in report.notes)


def test_fashion_payload_checksums(all_fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_dataset("fashion-mnist", all_fixtures).genuine is False
    folder = all_fixtures / "fashion-mnist"
    from nni_bio.data.idx import read_bytes

    payload = {p.name[:-3]: checksums.md5_bytes(read_bytes(p)) for p in folder.glob("*.gz")}
    monkeypatch.setitem(checksums.PAYLOAD_MD5, "fashion-mnist", payload)
    report = check_dataset("fashion-mnist", all_fixtures)
    assert report.genuine is True and "re-compressed" in " ".join(report.notes)


def test_nothing_touches_the_network(all_fixtures: Path, no_network: None, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("192.0.2.1", 80))  # the guard works
    for name in DATASETS:
        for split in ("train", "val", "test"):
            x, _ = get_dataset(name, split, all_fixtures)[0]
        assert main(["data", "check", name, "--data-dir", str(all_fixtures)]) == 0
    assert main(["data", "list", "--data-dir", str(all_fixtures)]) == 0
    capsys.readouterr()


def test_no_download_anywhere_in_the_data_layer_but_the_download_command() -> None:
    """Only nni_bio/data/download.py fetches, and only `nni-bio data download` calls it."""
    package = Path(nni_bio.data.__file__).parent
    sources = [*package.glob("*.py"), Path(nni_bio.data.__file__).parents[1] / "commands" / "data.py"]
    for path in sources:
        if path.name == "download.py":
            continue
        text = path.read_text()
        assert "download=True" not in text and "urllib" not in text and "requests" not in text, path
        assert "import download" not in text or path.name == "data.py", path  # the command only
    assert "download(" not in (package / "locate.py").read_text()  # it names the command, it does not run it


def test_a_missing_data_set_never_reaches_the_network(tmp_path, monkeypatch) -> None:
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("the data layer opened a URL")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(nni_bio.data.DataError, match="not found"):
        nni_bio.data.get_dataset("cifar10", "train", data_dir=tmp_path)
