"""Helpers of the end-to-end NNI tests (test_remote.py, test_faults.py): an SSH server on 127.0.0.1 that
this process starts and stops, nnictl with a private HOME, polling, and the processes of a trial."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
VENV_BIN = Path(sys.executable).parent
WORKER_BIN = ROOT / "scripts" / "nni-worker" / "bin"  # pythonPath of examples/*-remote.yml
HOME_ON_EXAMPLE_WORKERS = "/home/nni/nni-bio"  # the checkout's path in examples/*-remote.yml
EXAMPLE_PYTHON = f"{HOME_ON_EXAMPLE_WORKERS}/.venv/bin/python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (what the machine exposes there)."""
    return {c.laddr.ip for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def sshd_binary() -> str:
    """sshd and ssh-keygen, or skip (locally) / fail (in CI, where .ci/run installs openssh-server through
    scripts/system-packages.sh)."""
    candidates = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
    sshd = shutil.which("sshd") or next((p for p in candidates if Path(p).exists()), None)
    missing = [name for name, path in (("sshd", sshd), ("ssh-keygen", shutil.which("ssh-keygen"))) if path is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (scripts/system-packages.sh: apt-get install openssh-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the remote training-service tests")
        pytest.skip(reason)
    return sshd


class SshServer:
    """OpenSSH's sshd on 127.0.0.1, on a free port, with its own config, host key and client key.

    Public-key logins only (no passwords, no keyboard-interactive), the SFTP subsystem NNI needs, and
    ``HOME`` set to a folder of its own (``SetEnv``), so the worker's NNI files land there and its
    ``~/.bashrc`` is ours: one that puts another ``python3``/``python`` first on PATH, as pyenv and
    conda do, and a pip configuration pointing at an index that refuses connections, as on a cluster
    without a package index.
    """

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.port = free_port()
        self.user = getpass.getuser()
        self.key = root / "client_key"
        self.log = root / "sshd.log"
        self.extra_env: dict[str, str] = {}  # more SetEnv variables
        self.proc: subprocess.Popen | None = None

    def start(self) -> SshServer:
        sshd = sshd_binary()
        self.home.mkdir(parents=True)
        for key in (self.root / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.root / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        foreign = self.root / "foreign-python"
        foreign.mkdir()
        for name in ("python", "python3"):
            fake = foreign / name
            fake.write_text("#!/bin/sh\necho \"$0: a python3 put first on PATH by ~/.bashrc, not the project's\" >&2\n"
                            "exit 1\n")
            fake.chmod(0o755)
        (self.home / ".bashrc").write_text(f'export PATH="{foreign}:$PATH"   # like pyenv or conda\n')
        env = {"HOME": self.home, "PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
               "PIP_RETRIES": 0, **self.extra_env}
        config = self.root / "sshd_config"
        config.write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.root / "host_key"}
PidFile {self.root / "sshd.pid"}
AuthorizedKeysFile {self.root / "authorized_keys"}
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM {"yes" if self._account_locked() else "no"}
StrictModes no
Subsystem sftp internal-sftp
SetEnv {" ".join(f"{k}={v}" for k, v in env.items())}
LogLevel VERBOSE
""")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 15, f"sshd on 127.0.0.1:{self.port} ({self.log})")
        login = subprocess.run(["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
                                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                f"{self.user}@127.0.0.1", "echo $HOME"], capture_output=True, text=True, timeout=30)
        if login.stdout.strip() != str(self.home):
            pytest.fail(f"cannot log in to the test's sshd: {login.stderr}\n{self.log.read_text()}")
        return self

    def _account_locked(self) -> bool:
        """Without PAM, a root sshd refuses an account whose password is locked ('!' in /etc/shadow)."""
        try:
            for line in Path("/etc/shadow").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name == self.user:
                    return rest.startswith("!")
        except OSError:  # not root: sshd cannot read it either
            pass
        return False

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"sshd exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(16).startswith(b"SSH-")
        except OSError:
            return False

    def machine(self, example: dict[str, Any]) -> dict[str, Any]:
        """An example's ``machineList`` entry pointed at this server and at this checkout."""
        return {**example, "host": "127.0.0.1", "port": self.port, "user": self.user, "sshKeyFile": str(self.key),
                "pythonPath": example["pythonPath"].replace(HOME_ON_EXAMPLE_WORKERS, str(ROOT))}

    def trial_keepers(self) -> list[int]:
        """Process ids of the NNI trial keepers running for this server's user (in its HOME)."""
        pids = []
        for pid_file in self.home.glob("nni-experiments/*/environments/*/trial_keeper*/trial_keeper.pid"):
            pid = int(pid_file.read_text())
            if psutil.pid_exists(pid):
                pids.append(pid)
        return pids

    def stop_listener(self) -> None:
        """What `systemctl stop ssh` does: the listening sshd goes, open sessions stay."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def vanish(self) -> None:
        """The machine goes away: sshd and its sessions, the NNI trial keeper and every trial die at once."""
        sessions = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
        self.stop_listener()
        for session in sessions:
            _kill(session.pid)
        for keeper in self.trial_keepers():  # launched with setpgrp: its group holds its trials
            try:
                os.killpg(keeper, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Teardown: everything vanish() kills, whatever state the test left."""
        if self.proc is not None:
            self.vanish()


def start_ssh_server(root: Path) -> SshServer:
    server = SshServer(root)
    if Path(sys.prefix) != ROOT / ".venv":  # the worker bin runs <checkout>/.venv unless told otherwise
        server.extra_env = {"NNI_BIO_WORKER_PYTHON": sys.executable}
    return server.start()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def remote_config(tmp_path: Path, server: SshServer, *, trials: int, concurrency: int, epochs: str,
                  manager_ip: str = "127.0.0.1") -> Path:
    """examples/digits-remote.yml pointed at ``server`` and this checkout, everything written under tmp_path."""
    config = yaml.safe_load((EXAMPLES / "digits-remote.yml").read_text())
    command = config["trialCommand"]
    assert f"{EXAMPLE_PYTHON} -m nni_bio.trial" in command, "the example calls the worker's python by absolute path"
    config.update(
        experimentName="nni-bio remote test",
        searchSpaceFile=str(EXAMPLES / config["searchSpaceFile"]),
        trialCodeDirectory=str(EXAMPLES),
        trialCommand=command.replace(EXAMPLE_PYTHON, sys.executable).replace("--epochs 5", epochs),
        trialConcurrency=concurrency,
        maxTrialNumber=trials,
        maxExperimentDuration="10m",
        nniManagerIp=manager_ip,
        experimentWorkingDirectory=str(tmp_path / "experiments"),
        logLevel="debug",  # the manager's log then holds what the worker answered to each SSH command
    )
    if "codeDirectory" in config["tuner"]:
        config["tuner"]["codeDirectory"] = str(EXAMPLES)
    machines = config["trainingService"]["machineList"]
    assert len(machines) == 1 and machines[0]["pythonPath"] == f"{HOME_ON_EXAMPLE_WORKERS}/scripts/nni-worker/bin"
    config["trainingService"]["machineList"] = [server.machine(machines[0])]
    path = tmp_path / "digits-remote-test.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Nnictl:
    """nnictl of this environment, with HOME (its experiment manifest, ~/nni-experiments) under ``home``."""

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home), "PYTHONWARNINGS": "ignore",
                    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.started: list[str] = []

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "nnictl"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def create(self, config: Path, port: int) -> str:
        done = self("create", "--config", str(config), "--port", str(port))
        return self._started(done, port)

    def resume(self, experiment_id: str, port: int) -> str:
        done = self("resume", experiment_id, "--port", str(port))
        return self._started(done, port)

    def _started(self, done: subprocess.CompletedProcess, port: int) -> str:
        from nni_bio.launch.experiment import RestClient

        assert done.returncode == 0 and "ERROR" not in done.stdout, done.stdout + done.stderr
        experiment_id = RestClient(port).experiment_id()
        self.started.append(experiment_id)
        return experiment_id

    def stop_all(self) -> None:
        for experiment_id in dict.fromkeys(self.started):
            self("stop", experiment_id)


def rest_text(port: int, endpoint: str) -> str:
    """A text answer of NNI's REST API, e.g. ``trial-file/ID/stderr``: the trial log the web UI shows."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{endpoint}", timeout=60) as response:
        return response.read().decode()


def manager_pid(experiment_dir: Path) -> int:
    """The NNI manager (node) process of a running experiment."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(a.endswith("nni_node/main.js") for a in cmdline) and experiment_dir.name in cmdline:
            return proc.pid
    pytest.fail(f"no NNI manager process for {experiment_dir}")


def trial_processes(trial_id: str) -> list[psutil.Process]:
    """Live processes of one trial (NNI sets NNI_TRIAL_JOB_ID in its environment), parents first."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("NNI_TRIAL_JOB_ID") == trial_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(found, key=lambda p: p.pid)


def training_process(trial_id: str) -> psutil.Process | None:
    """The process that trains: the supervised child (nni_bio.nas._compat.supervise_trial) of the trial's python."""
    procs = trial_processes(trial_id)
    pids = {p.pid for p in procs}
    children = [p for p in procs if p.ppid() in pids and "python" in p.name()]
    return children[0] if children else None


def venv_packages() -> list[tuple[str, str, int]]:
    """Every distribution installed in this environment: name, version, when its metadata was written."""
    from importlib.metadata import distributions

    found = []
    for dist in distributions():
        where = getattr(dist, "_path", None)  # the .dist-info folder of a PathDistribution
        found.append((dist.metadata["Name"] or "?", dist.version, Path(where).stat().st_mtime_ns if where else 0))
    return sorted(found)


def fill_disk(folder: Path, leave: int) -> Path:
    """Fill the disk under ``folder`` until about ``leave`` bytes are free; delete the returned file to free it."""
    import shutil

    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
    return filler
