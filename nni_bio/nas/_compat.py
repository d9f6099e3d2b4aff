"""Every shim nni-bio needs to run NNI 3.0 (archived upstream) on today's stack, in one place.

Call :func:`apply` before importing ``nni.nas``; it is idempotent. Each shim is covered by
``tests/test_compat.py``. See ``nni-notes.md`` §3-4 for the failures they fix.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import warnings

_applied = False
_lean = False  # set by lean_trial()


def filter_warnings() -> None:
    """Silence NNI's harmless noise on torch 2.14 and setuptools' pkg_resources deprecation."""
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated.*")
    warnings.filterwarnings("ignore", message=".*'nni.nas.execution.training_service' found in sys.modules.*")


def alias_gym_to_gymnasium() -> None:
    """NNI's RL strategy imports the unmaintained ``gym``; tianshou 0.5.1 already brings gymnasium."""
    try:
        import gymnasium
        import gymnasium.spaces
    except ImportError:  # pragma: no cover - tianshou pulls gymnasium in
        return
    sys.modules.setdefault("gym", gymnasium)
    sys.modules.setdefault("gym.spaces", gymnasium.spaces)


def patch_raw_format_freeze() -> None:
    """GridSearch + raw model format: NNI keeps the shared sample dict by reference (nni-notes §3 row 5)."""
    from nni.nas.space.space import RawFormatModelSpace

    if getattr(RawFormatModelSpace.freeze, "_nni_bio_patched", False):
        return
    original = RawFormatModelSpace.freeze

    def freeze(self, sample):
        return original(self, copy.deepcopy(sample))

    freeze._nni_bio_patched = True
    RawFormatModelSpace.freeze = freeze


def patch_enas_concat_loader() -> None:
    """ENAS on pytorch-lightning >= 2.1: re-pack (batch, idx, dataloader_idx) (nni-notes §3 row 3)."""
    from nni.nas.oneshot.pytorch import _dataloader
    from pytorch_lightning.utilities.combined_loader import CombinedLoader

    if getattr(_dataloader.ConcatLoader, "_nni_bio_patched", False):
        return

    def __next__(self):
        batch, batch_idx, dataloader_idx = CombinedLoader.__next__(self)
        return (batch, batch_idx, dataloader_idx), batch_idx, dataloader_idx

    _dataloader.ConcatLoader.__next__ = __next__
    _dataloader.ConcatLoader._nni_bio_patched = True


#: the command NNI 3.0's SSH worker runs on every remote machine before anything else
#: (``nni_node/training_service/remote_v3/worker.js``, ``Worker.start``), through ``pythonPath``'s python
NNI_WORKER_PIP_COMMAND = ("-m", "pip", "install", "nni", "--upgrade")
#: the NNI release nni-bio is built and tested against
NNI_VERSION = "3.0"


def worker_pip_guard() -> int:
    """Stand-in for NNI's ``python -m pip install nni --upgrade`` on a remote worker: install nothing.

    NNI 3.0's remote training service starts every SSH worker with that command. On a machine whose
    environment already has nni (nni-bio needs it there anyway) pip only asks the package index and
    keeps nni 3.0, the last release; without an index it retries 5 times with a 15 s time-out per
    try (``PIP_DEFAULT_TIMEOUT``, ``PIP_RETRIES``) before it gives up, and a worker without nni fails
    to start either way. Online, it may also install or upgrade nni's dependencies in the project's
    environment. ``scripts/nni-worker/bin/python``, the ``pythonPath`` of ``examples/*-remote.yml``,
    runs this instead: it checks that nni and nni-bio import here and says which nni this is, with
    no network and no change to the environment. Exit status 1 (NNI then stops the worker with
    "SSH command failed" and this message in its log) when nni is missing.
    """
    try:
        import nni
    except ImportError as exc:
        print(f"nni-bio worker: nni is not installed in {sys.prefix} ({exc}); install this project's "
              f"environment here (make setup) instead of letting NNI pip-install nni", file=sys.stderr)
        return 1
    version = getattr(nni, "__version__", "?")
    print(f"nni-bio worker: skipped `python {' '.join(NNI_WORKER_PIP_COMMAND)}` (NNI's SSH worker start); "
          f"{sys.prefix} has nni {version}")
    if version != NNI_VERSION:
        print(f"nni-bio worker: nni {version} is not {NNI_VERSION}, the version nni-bio runs on", file=sys.stderr)
    return 0


#: signals NNI (or a scheduler) sends to stop a trial; the supervisor passes them on and dies of them too
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def supervise_trial(what: str = "trial") -> None:
    """Under NNI, run the rest of this trial in a forked child, so that a trial killed by a signal is FAILED.

    NNI 3.0's trial keeper (``nni_node/common/trial_keeper``) reports a trial process that died of a
    signal with exit code ``null``, which the manager turns into ``USER_CANCELED``: a training process
    killed with SIGKILL (the kernel's out-of-memory killer, a node's watchdog) looked like a user's
    cancel, with nothing in its log. Here the process NNI started stays a thin parent: it waits for
    the child that trains, exits with the child's status, and when the child dies of a signal it did
    not forward, prints which signal on stderr (the trial log the web UI shows) and exits with
    128 + the signal number, which NNI marks FAILED. SIGINT/SIGTERM (NNI's cancel and early stop) are
    passed on to the child, and the parent then dies of the same signal, so NNI still sees a cancel.
    The child dies with the parent, and the parent with the NNI process that started it (Linux
    ``PR_SET_PDEATHSIG``): a killed NNI manager or trial keeper leaves no training behind, and a
    resumed experiment runs the trial again. Returns at once, without forking, outside NNI (no
    ``NNI_TRIAL_JOB_ID``) or where ``os.fork`` is missing; returns in the child under NNI.
    """
    if not os.environ.get("NNI_TRIAL_JOB_ID") or not hasattr(os, "fork"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    launcher, parent = os.getppid(), os.getpid()
    if launcher == 1:  # NNI died while this process was starting: init adopted it
        print(f"nni-bio {what}: the NNI process that started this trial is gone; not training", file=sys.stderr)
        os._exit(1)
    forwarded: list[int] = []
    children: list[int] = []

    def forward(signum: int, _frame) -> None:
        forwarded.append(signum)
        for pid in children:  # none yet when NNI cancels before the fork: passed on right after it
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in _FORWARDED:  # before the fork: no gap in which a cancel is lost
        signal.signal(signum, forward)
    child = os.fork()
    if child == 0:  # the training obeys a forwarded cancel, even where the trial inherited it ignored (a background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(parent)
        return
    children.append(child)
    for signum in list(forwarded):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass
    _die_with_parent(launcher)
    _, status = os.waitpid(child, 0)  # retried after the handler (PEP 475)
    if forwarded:  # cancelled: die of the same signal, as NNI expects of a cancelled trial
        signal.signal(forwarded[0], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[0])
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:  # pragma: no cover - a real-time signal
            name = f"signal {signum}"
        hint = " (from the kernel's out-of-memory killer, a scheduler or a user)" if signum == signal.SIGKILL else ""
        print(f"nni-bio {what} FAILED: the training process {child} was killed by {name}{hint}", file=sys.stderr,
              flush=True)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


#: NNI 3.0's v3 training services (``local``, ``remote``) seen through the v1 interface
_V3_COMPAT_JS = ("training_service", "v3", "compat.js")
#: the first version of the patch (bound, not marked): upgraded in place
_V3_PATCH_V1_MARK = "nni-bio: parameters bound to their trial"
_V3_PATCH_MARK = "nni-bio: parameters bound to their trial and marked"
#: the key the patched manager adds to every parameter record it sends; a trial without it refuses to run
BOUND_KEY = "nni_bio_bound"
#: (NNI's text, the patched text) in ``compat.js``; every piece must match exactly once. The first version's text,
#: exactly as it wrote it (its comment names this module's old place), so that it can be undone
_V3_PATCH_V1 = (
    ("""        if (trialId === null) {
            this.parameters.push(form.hyperParameters.value);
        }
        else {
            this.allocatedParameters.set(trialId, form.hyperParameters.value);
        }
        while (trialId === null) {""",
     """        // nni-bio: parameters bound to their trial (nni_bio/_compat.py, patch_v3_parameter_binding)
        while (trialId === null) {"""),
    ("""        let trial;
        if (this.trialJobs[trialId] === undefined) {""",
     """        if (this.nniBioWaiting.delete(trialId)) {
            await this.v3.sendParameter(trialId, form.hyperParameters.value);
        }
        else {
            this.allocatedParameters.set(trialId, form.hyperParameters.value);
        }
        let trial;
        if (this.trialJobs[trialId] === undefined) {"""),
    ("""            else if (this.parameters.length > 0) {
                await this.v3.sendParameter(trialId, this.parameters.shift());
            }
            else {
                logger.error('No parameters available');
            }""",
     """            else {
                this.nniBioWaiting.add(trialId);
            }"""),
    ("""    allocatedParameters = new Map();
""",
     """    allocatedParameters = new Map();
    nniBioWaiting = new Set();
"""),
)
_V3_PATCH = tuple((old, new.replace("sendParameter(trialId, form.hyperParameters.value)",
                                     "sendParameter(trialId, nniBioBound(form.hyperParameters.value))")
                   .replace("(nni_bio/_compat.py,", "(nni_bio/nas/_compat.py,"))
                  for old, new in _V3_PATCH_V1) + (
    ("""                await this.v3.sendParameter(trialId, this.allocatedParameters.get(trialId));""",
     """                await this.v3.sendParameter(trialId, nniBioBound(this.allocatedParameters.get(trialId)));"""),
)
_V3_PATCH_APPENDED = f"""
// {_V3_PATCH_MARK}: every parameter record sent carries "{BOUND_KEY}": true, so a trial can tell
function nniBioBound(value) {{
    try {{
        const record = JSON.parse(value);
        record.{BOUND_KEY} = true;
        return JSON.stringify(record);
    }}
    catch (error) {{
        return value;
    }}
}}
"""


def nni_node_dir() -> str:
    """The folder of NNI's manager (Node.js) that ``nnictl`` runs: ``nni_node`` next to ``nni``."""
    import importlib.util

    spec = importlib.util.find_spec("nni_node")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nni_node (NNI's manager) is not installed")
    return list(spec.submodule_search_locations)[0]


def patch_v3_parameter_binding(node_dir: str | None = None) -> bool:
    """NNI 3.0's remote training service gives each trial the parameters of the trial NNI recorded for it.

    ``V3asV1`` (``nni_node/training_service/v3/compat.js``, the ``remote`` platform) queues every
    submitted trial's parameters in one list and hands the head of that list to whichever trial asks
    first (``request_parameter``). Trials started at about the same time (``trialConcurrency`` > 1, on
    one worker or several) race: when the later one finishes starting up first, it trains the earlier
    one's architecture, and the manager's records (REST API, web UI, ``nni-bio``'s results) pair each
    trial with the other's parameters (the tuner, which gets the parameter id with the metric, is
    not misled). Patched, the manager binds the parameters to the trial id ``createTrial`` returns,
    and answers a trial that asks before that as soon as it is known. This edits NNI's installed
    manager (a Node.js file no Python hook reaches); ``scripts/setup.sh`` runs it
    (``python -m nni_bio.nas._compat patch-nni-manager``). Idempotent: returns True when it changed the
    file, False when it was patched already; raises RuntimeError when the file is not NNI 3.0's.
    """
    path = os.path.join(node_dir or nni_node_dir(), *_V3_COMPAT_JS)
    return _patch_text(path, _V3_PATCH, _V3_PATCH_APPENDED, _V3_PATCH_MARK, "bind trial parameters",
                       previous=(_V3_PATCH_V1, _V3_PATCH_V1_MARK))


def check_parameters_bound() -> None:
    """Refuse to train parameters that an NNI manager without nni-bio's patch handed out.

    Call after ``nni.get_next_parameter()``. NNI 3.0's manager (``V3asV1``, the ``local`` and ``remote``
    platforms) gives queued parameters to whichever trial asks first, so with ``trialConcurrency`` > 1 a
    trial can train another trial's architecture while the web UI and the results pair them wrongly.
    The patched manager marks each record it binds (``BOUND_KEY``); a trial on that channel without the
    mark was started by an unpatched manager (plain ``nnictl create`` after ``pip install``), and stops
    here, naming the command that fixes it. Other channels (NNI's standalone mode, tests) are not checked.
    """
    from nni_bio.core.errors import NniBioError

    channel = os.environ.get("NNI_TRIAL_COMMAND_CHANNEL", "")
    if not channel or channel.startswith("import://"):
        return
    import nni.trial

    record = getattr(nni.trial, "_params", None)  # the whole record NNI received; get_next_parameter returns a part
    if isinstance(record, dict) and not record.get(BOUND_KEY):
        raise NniBioError("this trial's parameters came from an NNI manager without nni-bio's patch, which with "
                          "trialConcurrency > 1 can hand a trial another trial's architecture: run `nni-bio setup-nni` "
                          "on the machine that runs nnictl, then start the experiment again")


#: the environment variable the patched manager reads: the addresses its REST server binds, comma separated
MANAGER_HOSTS_ENV = "NNI_BIO_MANAGER_HOSTS"
#: what a user sets to open the manager to another address (``nni-bio search --listen``, a study's ``search.listen``)
LISTEN_ENV = "NNI_BIO_LISTEN"
_LISTEN_MARK = "nni-bio: the manager listens where it must"
_LAUNCHER_HOSTS = '''

def _nni_bio_manager_hosts(config, mode):
    # nni-bio: the manager listens where it must (nni_bio/nas/_compat.py, patch_manager_listen_address).
    # Loopback always (nnictl and nni-bio reach the manager there); the workers' address for remote-style
    # platforms; anything else only when asked for with NNI_BIO_LISTEN.
    asked = [h.strip() for h in os.environ.get('NNI_BIO_LISTEN', '').split(',') if h.strip()]
    if '0.0.0.0' in asked or '::' in asked:
        return '0.0.0.0' if '0.0.0.0' in asked else '::'
    hosts = ['127.0.0.1'] + asked
    remote = ('hybrid', 'remote', 'openpai', 'kubeflow', 'frameworkcontroller', 'adl')
    if mode in remote and getattr(config, 'nni_manager_ip', None):
        hosts.append(str(config.nni_manager_ip))
    return ','.join(dict.fromkeys(h for h in hosts if h != 'localhost'))
'''
#: (file under nni_node, [(NNI's text, the patched text)], text appended at the end); each piece must match once
_LISTEN_PATCHES = (
    (("rest_server", "index.js"), (
        ("""        this.server = app.listen(this.port);
""",
         """        // nni-bio: the manager listens where it must (nni_bio/nas/_compat.py, patch_manager_listen_address)
        const nniBioHosts = (process.env.NNI_BIO_MANAGER_HOSTS || '127.0.0.1').split(',').filter(host => host);
        this.server = app.listen(this.port, nniBioHosts[0]);
        // the other addresses relay their connections (HTTP and the workers' WebSockets) to the first one
        this.nniBioServers = nniBioHosts.slice(1).map(host => {
            const net = require('net');
            const sockets = new Set();
            const relay = net.createServer(socket => {
                const upstream = net.connect(this.port, nniBioHosts[0]);
                sockets.add(socket);
                sockets.add(upstream);
                socket.on('close', () => { sockets.delete(socket); upstream.destroy(); });
                upstream.on('close', () => { sockets.delete(upstream); socket.destroy(); });
                socket.on('error', () => upstream.destroy());
                upstream.on('error', () => socket.destroy());
                socket.pipe(upstream).pipe(socket);
            });
            relay.nniBioSockets = sockets;
            relay.on('error', (error) => { globals_1.default.shutdown.criticalError('RestServer', error); });
            return relay.listen(this.port, host);
        });
"""),
        ("""        const deferred = new deferred_1.Deferred();
        this.server.close(() => {""",
         """        const deferred = new deferred_1.Deferred();
        for (const relay of this.nniBioServers || []) {
            relay.close();
            for (const socket of relay.nniBioSockets) {
                socket.destroy();
            }
        }
        this.server.close(() => {"""),
    ), ""),
    (("common", "restServer.js"), (
        ("""    hostName = '0.0.0.0';
""",
         """    // nni-bio: the manager listens where it must (nni_bio/nas/_compat.py, patch_manager_listen_address)
    hostName = (process.env.NNI_BIO_MANAGER_HOSTS || '127.0.0.1').split(',').filter(host => host).pop();
"""),
    ), ""),
    (("..", "nni", "experiment", "launcher.py"), (
        ("""        proc = _start_rest_server(nni_manager_args, run_mode)
""",
         """        # nni-bio: the manager listens where it must (nni_bio/nas/_compat.py, patch_manager_listen_address)
        os.environ['NNI_BIO_MANAGER_HOSTS'] = _nni_bio_manager_hosts(config, nni_manager_args.mode)
        proc = _start_rest_server(nni_manager_args, run_mode)
"""),
    ), _LAUNCHER_HOSTS),
    (("..", "nni", "experiment", "experiment.py"), (
        ("""        ips = [f'http://{ip}:{port}' for ip in ips if ip]
""",
         """        # nni-bio: the manager listens where it must (nni_bio/nas/_compat.py, patch_manager_listen_address)
        import os
        bound = os.environ.get('NNI_BIO_MANAGER_HOSTS', '127.0.0.1').split(',')
        ips = [ip for ip in ips if ip in bound] or ([] if bound[0] in ('0.0.0.0', '::') else bound) or ips
        ips = [f'http://{ip}:{port}' for ip in ips if ip]
"""),
    ), ""),
)


def _patch_text(path: str, pieces: tuple[tuple[str, str], ...], appended: str, mark: str, what: str,
                previous: tuple[tuple[tuple[str, str], ...], str] | None = None) -> bool:
    """Replace each piece (each must occur exactly once) and append ``appended``; atomic, idempotent.

    ``previous``: (pieces, mark) of an earlier version of the patch; a file carrying it is reverted first.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if mark in text:
        return False
    if previous is not None and previous[1] in text:
        for old, new in previous[0]:
            if text.count(new) != 1:
                raise RuntimeError(f"{path} carries an earlier nni-bio patch that cannot be undone ({new.strip()[:60]!r})"
                                   f"; reinstall nni=={NNI_VERSION} and run `nni-bio setup-nni`")
            text = text.replace(new, old)
    for old, new in pieces:
        if text.count(old) != 1:
            raise RuntimeError(f"{path} is not NNI {NNI_VERSION}'s: cannot {what} ({old.strip()[:60]!r})")
        text = text.replace(old, new)
    text += appended
    tmp = path + ".nni-bio-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def _listen_paths(node_dir: str | None) -> list[str]:
    root = node_dir or nni_node_dir()
    return [os.path.normpath(os.path.join(root, *parts)) for parts, _, _ in _LISTEN_PATCHES]


def patch_manager_listen_address(node_dir: str | None = None) -> bool:
    """NNI's manager listens on loopback, plus the address remote workers use, and nowhere else.

    NNI 3.0's REST server, which serves the web UI and the whole API (stop the experiment, add trials
    with any parameters, change the search space, read every log) without authentication, calls
    ``app.listen(port)`` and so listens on every interface; the command channel of NNI's older
    remote path (``port + 1``, ``reuseMode: true``) binds ``0.0.0.0``. Patched:

    - ``nni/experiment/launcher.py`` (what ``nnictl create``, ``resume`` and ``view`` and NNI's
      Python API run) hands the manager the addresses to bind in ``NNI_BIO_MANAGER_HOSTS``:
      ``127.0.0.1``; for remote-style platforms also ``nniManagerIp``; and whatever
      ``NNI_BIO_LISTEN`` names (``0.0.0.0`` opens it everywhere, as NNI did);
    - ``nni_node/rest_server/index.js`` binds the first address (default ``127.0.0.1``) and relays
      connections to each other address (HTTP and the workers' WebSockets) to it;
    - ``nni_node/common/restServer.js`` binds the last of them (the workers' address) for ``port + 1``;
    - ``nni/experiment/experiment.py`` prints only the URLs the manager answers at.

    Idempotent: True when it changed any file; RuntimeError when a file is not NNI 3.0's.
    """
    changed = False
    for path, (_, pieces, appended) in zip(_listen_paths(node_dir), _LISTEN_PATCHES):
        changed |= _patch_text(path, pieces, appended, _LISTEN_MARK, "bind the manager to chosen addresses")
    return changed


def manager_patches_missing(node_dir: str | None = None) -> list[str]:
    """What NNI's installed manager lacks of nni-bio's patches (empty when it has them all)."""
    checks = [(os.path.join(node_dir or nni_node_dir(), *_V3_COMPAT_JS), _V3_PATCH_MARK,
               "remote trials get their own parameters")]
    checks += [(path, _LISTEN_MARK, "the manager listens on loopback only") for path in _listen_paths(node_dir)]
    missing: list[str] = []
    for path, mark, what in checks:
        try:
            with open(path, encoding="utf-8") as f:
                patched = mark in f.read()
        except OSError:
            patched = False
        if not patched and what not in missing:
            missing.append(what)
    return missing


def ensure_manager_patched() -> None:
    """Apply the manager patches where they are missing; refuse, naming the command, where that fails.

    ``nni-bio search`` and ``nni-bio study`` call this before they start an experiment, so nni-bio never
    runs NNI's manager unpatched; plain ``nnictl create`` relies on ``scripts/setup.sh``, which applies them.
    """
    from nni_bio.core.errors import NniBioError

    if not manager_patches_missing():
        return
    try:
        patch_v3_parameter_binding()
        patch_manager_listen_address()
    except (OSError, RuntimeError) as exc:
        raise NniBioError(f"NNI's manager lacks nni-bio's patches ({', '.join(manager_patches_missing())}) and they "
                          f"cannot be applied here ({exc}); run `nni-bio setup-nni` as the user who installed nni, "
                          "then try again") from exc


def lean_trial() -> None:
    """Make this process load only the part of NNI a multi-trial trial uses (call before anything
    imports ``nni.nas``; ``python -m nni_bio.trial`` does).

    A trial builds one architecture (``nni.nas.nn.pytorch``, ``nni.mutable``) and reports to NNI
    (``nni.trial``). ``nni.nas`` would also import NNI's training framework, pytorch-lightning, and
    with it torchmetrics, torchvision and ``torch._dynamo`` (seconds of start-up per trial); here NNI's
    default framework becomes ``none`` (unless ``NNI_FRAMEWORK`` says otherwise), so
    ``nni.nas.evaluator`` does not import it, and :func:`apply` leaves out the shim of NNI's ENAS
    loader, whose module imports it too (only NNI's own ENAS strategy uses that loader, never in a
    trial; :func:`patch_enas_concat_loader` still applies it on demand).
    """
    global _lean
    _lean = True
    import_nni_without_scipy_stats_or_pandas()
    if "NNI_FRAMEWORK" not in os.environ:
        from nni.common.framework import set_default_framework

        set_default_framework("none")


class _ScipyStatsOnFirstUse:
    """Stands for ``scipy.stats.<name>`` in ``nni.mutable.mutable``, which imports four distributions at
    its top and calls them only to build a ``Numerical`` mutable: the real one is imported then."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _real(self):  # noqa: ANN202 (a scipy distribution)
        import scipy.stats

        return getattr(scipy.stats, self._name)

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        return self._real()(*args, **kwargs)

    def __getattr__(self, attribute: str):  # noqa: ANN204
        return getattr(self._real(), attribute)

    def __repr__(self) -> str:
        return f"<scipy.stats.{self._name}, imported on first use>"


_NNI_SCIPY_STATS = ("norm", "lognorm", "uniform", "loguniform")  # what nni/mutable/mutable.py imports


def import_nni_without_scipy_stats_or_pandas() -> None:
    """Import ``nni`` without ``scipy.stats`` (about 0.3 s) and ``pandas`` (0.1 s), which a trial never uses.

    ``nni/__init__.py`` imports ``nni.mutable``, whose module imports ``scipy.stats`` distributions for
    ``Numerical`` mutables, and ``json_tricks``, which imports ``pandas`` only to see whether it is there.
    While ``nni`` is imported here, ``scipy.stats`` is a stand-in whose four distributions import the real
    module when first called, and ``pandas`` reads as absent (json_tricks then leaves out its DataFrame
    encoders; NNI sends no DataFrame to or from a trial). Both entries leave ``sys.modules`` afterwards,
    so any later ``import scipy.stats`` or ``import pandas`` gets the real package. Nothing happens when
    ``nni``, ``scipy.stats`` or ``pandas`` is already imported.
    """
    if any(name in sys.modules for name in ("nni", "scipy.stats", "pandas", "json_tricks")):
        return
    import types

    stand_in = types.ModuleType("scipy.stats", "nni-bio: scipy.stats imported on first use (nni_bio.nas._compat)")
    for name in _NNI_SCIPY_STATS:
        setattr(stand_in, name, _ScipyStatsOnFirstUse(name))
    sys.modules["scipy.stats"], sys.modules["pandas"] = stand_in, None  # type: ignore[assignment]
    try:
        import nni  # noqa: F401
    finally:
        if sys.modules.get("scipy.stats") is stand_in:
            del sys.modules["scipy.stats"]
        if "pandas" in sys.modules and sys.modules["pandas"] is None:
            del sys.modules["pandas"]


def apply() -> None:
    """Apply every shim (idempotent). Import ``nni.nas`` only after this."""
    global _applied
    if _applied:
        return
    filter_warnings()
    alias_gym_to_gymnasium()
    patch_raw_format_freeze()
    if not _lean:
        patch_enas_concat_loader()
    _applied = True


if __name__ == "__main__":  # python -m nni_bio.nas._compat worker-pip-guard|patch-nni-manager
    if sys.argv[1:] == ["worker-pip-guard"]:  # scripts/nni-worker/bin/python
        sys.exit(worker_pip_guard())
    if sys.argv[1:] == ["patch-nni-manager"]:  # scripts/setup.sh
        changed = patch_v3_parameter_binding()
        print(f"nni-bio: NNI manager {'patched' if changed else 'already patched'}: trials get their own "
              f"parameters ({os.path.join(nni_node_dir(), *_V3_COMPAT_JS)})")
        changed = patch_manager_listen_address()
        print(f"nni-bio: NNI manager {'patched' if changed else 'already patched'}: it listens on 127.0.0.1 (plus "
              f"nniManagerIp for remote workers, or ${LISTEN_ENV} when set), not on every interface")
        sys.exit(0)
    sys.exit("usage: python -m nni_bio.nas._compat worker-pip-guard|patch-nni-manager")
