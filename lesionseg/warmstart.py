"""Warm start: a stage's process hands its work to a worker forked from a server that imported torch, MONAI and
MLflow once, instead of importing them again (about 7 s of every stage; benchmarks/results_speed.md).

A stage entry point calls :func:`delegate` before it imports anything heavy. If this project's server listens,
the stage's command line, working folder, environment, ``sys.path`` and standard streams go to it; the server
forks a worker that runs the same script with them, and the stage's own process forwards signals to the worker
and exits with its status. If none listens, one is started in the background for the next stage and this stage
runs cold, as it always did. The server imports third-party libraries only; every lesionseg module except this
one and the package's ``__init__`` (both part of the server's key) is read fresh from disk by each worker. A
server serves one project root, one Python, one set of library versions and thread/locale settings (its socket
is named after them) and exits after ``idle_seconds`` without a stage.

Written by hand because Python's fork server (``multiprocessing`` with ``set_forkserver_preload``) lives inside
one parent process, and DVC starts a new process for every stage; this one outlives them, as Spring does for Rails.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lesionseg.config import RuntimeConfig

PRELOAD = ("numpy", "scipy.ndimage", "nibabel", "torch", "torch._dynamo", "monai", "mlflow", "mlflow.pytorch",
           "mlflow.store.tracking.sqlalchemy_store", "optuna")
_VERSIONED = ("numpy", "scipy", "nibabel", "torch", "monai", "mlflow", "optuna", "sqlalchemy")
_ENV_READ_AT_IMPORT = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "ONEDNN_", "DNNL_", "TORCH", "PYTORCH_",
                       "CUDA_", "LD_", "PYTHON", "LANG", "LC_", "MALLOC_")
_HEADER = struct.Struct("!I")

IN_WORKER = False  # True in a worker: delegate() then does nothing, so the stage runs here
client_started_at: float | None = None  # in a worker: when (epoch seconds) the stage's own process started
_recording = False
_exit_handlers: list[tuple] = []  # atexit handlers the server's imports registered, for replay_exit_handlers()


def server_key(root: Path, preload: tuple[str, ...] = PRELOAD) -> str:
    """What a server must share with a stage to run it: project root, Python, library versions, the
    environment libraries read when imported, this module's code; 20 hex digits of their sha256."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    parts = [sys.executable, sys.version, str(Path(root).resolve()), *preload]
    parts += [f"{name}={installed(name)}" for name in _VERSIONED]
    parts += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(_ENV_READ_AT_IMPORT)]
    parts += [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in (__file__, Path(__file__).with_name("__init__.py"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def socket_path(root: Path, preload: tuple[str, ...] = PRELOAD) -> Path | None:
    """The server's socket in this user's private folder under the temp dir; None if that folder is not private."""
    folder = Path(tempfile.gettempdir()) / f"lesionseg-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's or a shared folder: never hand a stage's environment to it
    return folder / f"{server_key(root, preload)}.sock"


# --- the stage's side ---------------------------------------------------------------------------------------


def delegate(root: Path, runtime: RuntimeConfig | None, scripts: Path | None = None,
             preload: tuple[str, ...] = PRELOAD) -> None:
    """Run this process's script in the project's warm server and exit with its status; return (to run it here,
    cold) when no server listens, after starting one for the next stage, or when ``runtime`` (params.yaml
    ``runtime``) is missing or turns warm starts off. With ``scripts``, only a process whose main script is in
    that folder delegates (not a test or tool that imported the caller, nor a child that multiprocessing spawned
    for the stage, as ``tune --workers N`` does: its main module is multiprocessing's ``-c``)."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if IN_WORKER or runtime is None or not runtime.warm_start:
        return
    if scripts is not None and (not main_file or Path(main_file).resolve().parent != scripts):
        return
    path = socket_path(root, preload)
    if path is None:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        start_server(root, path, runtime.idle_seconds, preload)
        return
    with conn:
        status = _run_in_worker(conn)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _run_in_worker(conn: socket.socket) -> int | None:
    """Send the stage, forward signals to its worker, return its exit status (None: it never started)."""
    from lesionseg.process import process_seconds

    request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
               "started_at": time.time() - process_seconds()}
    sys.stdout.flush()
    sys.stderr.flush()
    replies = conn.makefile("r")
    try:
        _send_request(conn, request)
        worker = json.loads(replies.readline())["pid"]
    except (OSError, ValueError, KeyError):
        return None  # the server went away before it forked a worker: nothing ran
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: os.kill(worker, signum))
    line = replies.readline()
    if not line:
        sys.exit(f"error: the warm-start worker {worker} of this stage ended without an exit status; run the stage "
                 "again, or set runtime.warm_start: false in params.yaml")
    return int(json.loads(line)["status"])


def _send_request(conn: socket.socket, request: dict) -> None:
    body = json.dumps(request).encode()
    socket.send_fds(conn, [_HEADER.pack(len(body))], [0, 1, 2])
    conn.sendall(body)


def start_server(root: Path, path: Path, idle_seconds: float, preload: tuple[str, ...] = PRELOAD) -> None:
    """Start the server for ``path`` in the background, unless another stage started one a minute ago."""
    import subprocess

    starting = path.with_suffix(".starting")
    try:
        if time.time() - starting.stat().st_mtime < 60:
            return
        starting.unlink()
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(starting, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    package_parent = str(Path(__file__).resolve().parents[1])  # where this stage found lesionseg
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    with open(path.with_suffix(".log"), "ab") as log:
        subprocess.Popen([sys.executable, "-m", "lesionseg.warmstart", str(path), str(idle_seconds), *preload],
                         cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


# --- the server's side --------------------------------------------------------------------------------------


def serve(path: Path, idle_seconds: float, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, listen on ``path``, fork a worker per stage; return after ``idle_seconds`` idle or
    when another server took the path over."""
    try:
        _preload(preload)
        listener = _listen(path)
    finally:
        path.with_suffix(".starting").unlink(missing_ok=True)
    inode = path.stat().st_ino
    try:
        _accept_stages(listener, path, inode, idle_seconds)
    finally:
        listener.close()
        log = path.with_suffix(".log")
        if log.exists() and log.stat().st_size == 0:  # nothing went wrong: leave no file behind
            log.unlink(missing_ok=True)
        if _owns(path, inode):
            path.unlink(missing_ok=True)


def _preload(modules: tuple[str, ...]) -> None:
    """Import ``modules``, keeping aside the atexit handlers they register (see :func:`replay_exit_handlers`)."""
    import importlib
    global _recording

    register = atexit.register

    def record(func, *args, **kwargs):
        if not _recording:
            return register(func, *args, **kwargs)
        _exit_handlers.append((func, args, kwargs))
        return func

    atexit.register, _recording = record, True
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # optional in this environment; a stage that needs it imports it itself
    finally:
        atexit.register, _recording = register, False
    stale = [m for m in sys.modules if m.startswith("lesionseg.") and m != __name__]
    if stale:  # a worker must read every other lesionseg module from disk
        raise RuntimeError(f"warm start: preloading imported {stale}")


def replay_exit_handlers() -> None:
    """In a worker: register the atexit handlers the server's imports had registered, now, so that they run
    before every handler registered earlier (as in a cold process, where the libraries load after them)."""
    while _exit_handlers:
        func, args, kwargs = _exit_handlers.pop(0)
        atexit.register(func, *args, **kwargs)


def _listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fresh = path.with_suffix(f".{os.getpid()}")
    listener.bind(str(fresh))
    listener.listen(16)
    os.replace(fresh, path)  # a stale socket file (a server that died) is replaced, never connected to
    return listener


def _owns(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _accept_stages(listener: socket.socket, path: Path, inode: int, idle_seconds: float) -> None:
    listener.settimeout(1.0)
    sessions: set[int] = set()
    idle_since = time.monotonic()
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            sessions = {pid for pid in sessions if os.waitpid(pid, os.WNOHANG) == (0, 0)}
            if sessions:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_seconds or not _owns(path, inode):
                return
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            _session(conn)
        conn.close()
        sessions.add(pid)
        idle_since = time.monotonic()


def _session(conn: socket.socket) -> None:
    """In a child of the server: fork the stage's worker, tell the stage its pid, then its exit status."""
    try:
        request, fds = _receive_request(conn)
        worker = os.fork()
        if worker == 0:
            conn.close()
            try:
                _work(request, fds)
            finally:  # _work ends in os._exit; only a failure to take on the stage gets here
                import traceback
                traceback.print_exc()
                os._exit(70)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": worker}).encode() + b"\n")
        code = _wait_for(worker, conn)
        conn.sendall(json.dumps({"status": code if code >= 0 else 128 - code}).encode() + b"\n")
    finally:
        os._exit(0)


def _wait_for(worker: int, conn: socket.socket) -> int:
    """The worker's exit code (-N: killed by signal N); if the stage's process dies first (it can send nothing,
    so its socket turning readable means it hung up), the worker is terminated: no stage outlives its process."""
    import select

    while True:
        pid, wait_status = os.waitpid(worker, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(wait_status)
        if select.select([conn], [], [], 0.2)[0]:
            os.kill(worker, signal.SIGTERM)
            return os.waitstatus_to_exitcode(os.waitpid(worker, 0)[1])


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the stage hung up before its request was complete")
        body += chunk
    return json.loads(body), fds


def _work(request: dict, fds: list[int]) -> None:
    """In the stage's worker: take on the stage's streams, folder, environment and argv, run its script, exit."""
    global IN_WORKER, client_started_at
    IN_WORKER, client_started_at = True, float(request["started_at"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    sys.argv[:] = request["argv"]
    _reopen_standard_streams()
    os._exit(_run_script(request["argv"][0]))


def _reopen_standard_streams() -> None:
    """Text streams on fds 0-2 buffered as a cold interpreter would buffer them there (line-buffered on a tty)."""
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)


def _run_script(script: str) -> int:
    """Run ``script`` as ``__main__`` as the interpreter would: its exit code, after the atexit handlers."""
    import runpy
    import traceback

    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException:  # noqa: BLE001 - an uncaught error ends a script with its traceback and 1
        traceback.print_exc()
        code = 1
    replay_exit_handlers()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":  # python -m lesionseg.warmstart SOCKET IDLE_SECONDS [MODULE ...], run by start_server
    # run through the package's name, so that workers see IN_WORKER on the module their stages import
    from lesionseg.warmstart import serve as _serve

    _serve(Path(sys.argv[1]), float(sys.argv[2]), tuple(sys.argv[3:]))
    os._exit(0)
