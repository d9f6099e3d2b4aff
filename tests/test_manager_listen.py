"""NNI's manager listens on loopback (plus a remote experiment's nniManagerIp), never on every interface.

NNI 3.0's REST server (web UI and the whole API, no authentication) listened on all interfaces;
nni_bio.nas._compat.patch_manager_listen_address binds it where it must. Checked on a real local experiment
by reading its listening sockets; tests/test_remote.py does the same for a remote one.
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml
from nni_tools import free_port, listening_addresses, wait_for

from nni_bio.nas import _compat


def hosts_for(mode: str, nni_manager_ip: str | None = None, listen: str | None = None) -> str:
    """What the patched launcher hands the manager, run from the very text the patch appends."""
    namespace: dict = {"os": os}
    exec(_compat._LAUNCHER_HOSTS, namespace)  # noqa: S102  (our own source text)
    config = type("Config", (), {"nni_manager_ip": nni_manager_ip})()
    old = os.environ.pop(_compat.LISTEN_ENV, None)
    try:
        if listen is not None:
            os.environ[_compat.LISTEN_ENV] = listen
        return namespace["_nni_bio_manager_hosts"](config, mode)
    finally:
        os.environ.pop(_compat.LISTEN_ENV, None)
        if old is not None:
            os.environ[_compat.LISTEN_ENV] = old


def test_the_addresses_the_manager_binds():
    assert hosts_for("local") == "127.0.0.1"
    assert hosts_for("local", nni_manager_ip="10.0.0.5") == "127.0.0.1"  # a local experiment has no workers
    assert hosts_for("remote", nni_manager_ip="10.0.0.5") == "127.0.0.1,10.0.0.5"
    assert hosts_for("remote") == "127.0.0.1"  # NNI then tells the workers "localhost"
    assert hosts_for("local", listen="10.0.0.7") == "127.0.0.1,10.0.0.7"
    assert hosts_for("remote", nni_manager_ip="10.0.0.5", listen="0.0.0.0") == "0.0.0.0"  # asked for: every interface


def fake_nni(root) -> str:
    """A copy of the files the patch edits, holding exactly the text it expects (and a little more)."""
    node = root / "nni_node"
    for parts, pieces, _ in _compat._LISTEN_PATCHES:
        path = node.joinpath(*parts).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("// before\n" + "// between\n".join(old for old, _ in pieces) + "// after\n")
    compat_js = node.joinpath(*_compat._V3_COMPAT_JS)
    compat_js.parent.mkdir(parents=True, exist_ok=True)
    compat_js.write_text(f"// {_compat._V3_PATCH_MARK}\n")
    return str(node)


def test_the_patch_applies_once_and_is_checked(tmp_path):
    node = fake_nni(tmp_path)
    assert _compat.manager_patches_missing(node) == ["the manager listens on loopback only"]
    assert _compat.patch_manager_listen_address(node) is True
    assert _compat.patch_manager_listen_address(node) is False
    assert _compat.manager_patches_missing(node) == []
    index = (tmp_path / "nni_node" / "rest_server" / "index.js").read_text()
    assert "app.listen(this.port, nniBioHosts[0])" in index and "app.listen(this.port);" not in index
    assert "hostName = '0.0.0.0'" not in (tmp_path / "nni_node" / "common" / "restServer.js").read_text()
    assert "def _nni_bio_manager_hosts" in (tmp_path / "nni" / "experiment" / "launcher.py").read_text()


def test_the_patch_refuses_a_manager_it_does_not_know(tmp_path):
    node = fake_nni(tmp_path)
    index = tmp_path / "nni_node" / "rest_server" / "index.js"
    index.write_text("server.listen(port, host);\n")
    with pytest.raises(RuntimeError, match="cannot bind the manager to chosen addresses"):
        _compat.patch_manager_listen_address(node)
    assert index.read_text() == "server.listen(port, host);\n"


def test_nni_bio_refuses_to_run_an_unpatchable_manager_and_names_the_command(monkeypatch):
    from nni_bio.core.errors import NniBioError

    monkeypatch.setattr(_compat, "manager_patches_missing", lambda node_dir=None: ["the manager listens on loopback only"])

    def read_only(node_dir=None):
        raise PermissionError(13, "Permission denied", "/usr/lib/python3/dist-packages/nni_node/rest_server/index.js")

    monkeypatch.setattr(_compat, "patch_manager_listen_address", read_only)
    with pytest.raises(NniBioError, match="run `nni-bio setup-nni`"):
        _compat.ensure_manager_patched()


def test_setup_nni_applies_the_patches_and_check_says_what_is_missing(monkeypatch, capsys):
    from nni_bio.cli import main

    missing = ["the manager listens on loopback only"]
    monkeypatch.setattr(_compat, "manager_patches_missing", lambda node_dir=None: list(missing))
    assert main(["setup-nni", "--check"]) == 1 and "lacks: the manager listens" in capsys.readouterr().out
    calls = []
    monkeypatch.setattr(_compat, "patch_v3_parameter_binding", lambda node_dir=None: calls.append("v3") or False)
    monkeypatch.setattr(_compat, "patch_manager_listen_address", lambda node_dir=None: calls.append("listen") or True)
    assert main(["setup-nni"]) == 0 and calls == ["v3", "listen"]
    out = capsys.readouterr().out
    assert "already patched: remote trials" in out and "patched: the manager listens" in out
    missing.clear()
    assert main(["setup-nni", "--check"]) == 0


def experiment(tmp_path) -> str:
    path = tmp_path / "experiment.yml"
    path.write_text(yaml.safe_dump({
        "experimentName": "nni-bio listen test", "searchSpace": {"x": {"_type": "choice", "_value": [1, 2]}},
        "trialCommand": f"{sys.executable} -c pass", "trialCodeDirectory": str(tmp_path), "trialConcurrency": 1,
        "maxTrialNumber": 1, "tuner": {"name": "Random"}, "trainingService": {"platform": "local"},
        "experimentWorkingDirectory": str(tmp_path / "experiments")}))
    return path


@pytest.mark.slow
def test_a_local_experiment_listens_on_loopback_only(tmp_path, nnictl):
    _compat.ensure_manager_patched()  # what scripts/setup.sh, nni-bio search and nni-bio study do
    port = free_port()
    nnictl.create(experiment(tmp_path), port)
    assert wait_for(lambda: listening_addresses(port), 30, "the manager to listen") == {"127.0.0.1"}
    assert not listening_addresses(port + 1)


@pytest.mark.slow
def test_an_explicit_address_opens_it_there_too(tmp_path, nnictl):
    _compat.ensure_manager_patched()
    port = free_port()
    nnictl.env[_compat.LISTEN_ENV] = "127.0.0.3"  # a loopback address: nothing is opened to the network
    nnictl.create(experiment(tmp_path), port)
    wait_for(lambda: listening_addresses(port) >= {"127.0.0.1", "127.0.0.3"}, 30, "the manager to listen on both")
    assert listening_addresses(port) == {"127.0.0.1", "127.0.0.3"}
    from nni_bio.launch.experiment import RestClient

    assert RestClient(port, host="127.0.0.3").status()["status"] in ("RUNNING", "DONE", "INITIALIZED")
