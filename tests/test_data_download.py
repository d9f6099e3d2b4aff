"""`nni-bio data download` against a local HTTP server on 127.0.0.1 serving fixture archives: a good one, a
corrupt one and one cut short, which a second run resumes with an HTTP Range request."""

from __future__ import annotations

import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import pytest

from nni_bio.cli import main
from nni_bio.data import DataError, get_dataset
from nni_bio.data import download as dl
from nni_bio.data.fixtures import write_cifar10


class Server:
    """Serves ``files`` (name -> bytes); ``cut`` names are sent half, with the full Content-Length, then closed."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.ranges: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = owner.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if "Range" in self.headers:
                    owner.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if self.path.lstrip("/") in owner.cut:
                    owner.cut.discard(self.path.lstrip("/"))
                    chunk = chunk[: len(chunk) // 2]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def cifar_archive(tmp_path: Path) -> bytes:
    write_cifar10(tmp_path / "src", n=10)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive.read_bytes()


def use(monkeypatch, body: bytes) -> None:
    """The fixture archive stands for the official one (its MD5 in the table)."""
    source = dl.SOURCES["cifar10"]
    monkeypatch.setitem(dl.SOURCES, "cifar10", dl.Source(source.base_url, {
        "cifar-10-python.tar.gz": hashlib.md5(body).hexdigest()}))


def test_download_verifies_and_unpacks_where_get_dataset_finds_it(tmp_path, server, monkeypatch):
    body = cifar_archive(tmp_path)
    use(monkeypatch, body)
    server.files["cifar-10-python.tar.gz"] = body
    data = tmp_path / "data"
    assert main(["data", "download", "cifar10", "--data-dir", str(data), "--mirror", server.url, "--no-progress"]) == 0
    assert len(get_dataset("cifar10", "test", data_dir=data)) == 10
    assert not list(data.glob("*.part"))


def test_a_corrupt_file_is_deleted_and_the_error_says_so(tmp_path, server, monkeypatch, capsys):
    body = cifar_archive(tmp_path)
    use(monkeypatch, body)
    server.files["cifar-10-python.tar.gz"] = body[:-10] + b"x" * 10
    data = tmp_path / "data"
    assert main(["data", "download", "cifar10", "--data-dir", str(data), "--mirror", server.url, "--no-progress"]) == 2
    assert "is not the published file" in capsys.readouterr().err
    assert not any(data.rglob("cifar-10-python.tar.gz*"))


def test_a_download_cut_short_resumes_with_a_range_request(tmp_path, server, monkeypatch, capsys):
    body = cifar_archive(tmp_path)
    use(monkeypatch, body)
    server.files["cifar-10-python.tar.gz"] = body
    server.cut.add("cifar-10-python.tar.gz")
    data = tmp_path / "data"
    command = ["data", "download", "cifar10", "--data-dir", str(data), "--mirror", server.url, "--no-progress"]
    assert main(command) == 2
    assert "run the same command again to continue" in capsys.readouterr().err
    part = data / "cifar-10-python.tar.gz.part"
    assert 0 < part.stat().st_size < len(body)
    assert main(command) == 0
    assert server.ranges == [f"bytes={len(body) // 2}-"]  # only the rest was asked for
    assert len(get_dataset("cifar10", "train", data_dir=data)) > 0


def test_sets_that_cannot_be_downloaded_say_where_to_get_them(tmp_path, capsys):
    assert main(["data", "download", "imagenet", "--data-dir", str(tmp_path)]) == 2
    assert "image-net.org" in capsys.readouterr().err
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        dl.download("cifar1O", tmp_path)
    with pytest.raises(DataError, match="only http and https"):
        dl.download("cifar10", tmp_path, mirror="file:///etc")


def test_not_found_names_the_download_command(tmp_path):
    with pytest.raises(DataError, match="nni-bio data download cifar10 --data-dir"):
        get_dataset("cifar10", "train", data_dir=tmp_path)
