"""Warm start (lesionseg.warmstart): a stage run in a worker of the warm server behaves as the same stage run cold.

These tests preload a tiny module of their own instead of torch, so that the server starts in well under a second;
tests/test_pipeline.py runs a real training stage warm.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lesionseg.warmstart import server_key, socket_path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = "warmlib"
LIBRARY = '''import atexit
atexit.register(lambda: print("library exit handler ran", flush=True))
'''
SCRIPT = '''import os, sys, time
from pathlib import Path
from lesionseg.config import RuntimeConfig
from lesionseg.warmstart import delegate
delegate(Path(__file__).resolve().parent, RuntimeConfig(idle_seconds=3), Path(__file__).resolve().parent, ("warmlib",))
from lesionseg.process import FastExit
from lesionseg import warmstart
EXIT = FastExit.register()
import warmlib


def child():
    print("spawned child ran", flush=True)


def main():
    import atexit; atexit.register(lambda: print("stage exit handler ran", flush=True))
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("WARM_TEST"), "worker", warmstart.IN_WORKER)
    print("on stderr", file=sys.stderr)
    if sys.argv[1] == "spawn":  # as tune --workers N does
        import multiprocessing
        process = multiprocessing.get_context("spawn").Process(target=child)
        process.start()
        process.join()
        sys.exit(process.exitcode)
    if sys.argv[1] == "sleep":
        print("pid", os.getpid(), flush=True)
        time.sleep(60)
    if sys.argv[1].startswith("nap"):
        time.sleep(1)
        sys.exit(int(sys.argv[1][3:]))
    if sys.argv[1] == "ok":
        EXIT.arm()
    sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else 0)


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def project(tmp_path):
    """A folder with a script that delegates to a warm server preloading ``warmlib``; waits for the server to
    exit (3 s idle) at the end, so that no test leaves one behind."""
    (tmp_path / "warmlib.py").write_text(LIBRARY)
    (tmp_path / "stage.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    env.pop("PYTHONUNBUFFERED", None)
    yield tmp_path, env
    path = _socket(tmp_path, env)
    for _ in range(100):
        if not path.exists():
            break
        time.sleep(0.1)
    assert not path.exists(), "the warm server did not exit after its idle time"
    log = path.with_suffix(".log")
    assert not log.exists() or log.read_text(), "an empty server log is removed when the server exits"


def _socket(root: Path, env: dict) -> Path:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return socket_path(root, (PRELOAD,))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _stage(project, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    root, env = project
    return subprocess.run([sys.executable, str(root / "stage.py"), *args], cwd=root, capture_output=True, text=True,
                          env={**env, **(env_extra or {})}, timeout=60)


def _warm_up(project) -> None:
    """Run the stage (cold, it starts the server), then wait until the server listens."""
    _stage(project, "ok")
    path = _socket(*project)
    for _ in range(200):
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"no warm server listens at {path}: {path.with_suffix('.log').read_text()}")


def test_a_warm_stage_gets_the_argv_folder_environment_streams_and_exit_code_of_its_own_process(project):
    _warm_up(project)
    warm = _stage(project, "3", "x", env_extra={"WARM_TEST": "b"})
    assert "worker True" in warm.stdout, warm.stdout + warm.stderr
    assert warm.returncode == 3
    assert f"argv ['3', 'x'] cwd {project[0]} env b worker True" in warm.stdout
    assert "on stderr" in warm.stderr
    cold_like = _stage(project, "ok")
    assert cold_like.returncode == 0 and "worker True" in cold_like.stdout


def test_exit_handlers_run_in_a_cold_process_order_before_the_fast_exit(project):
    order = ["stage exit handler ran", "library exit handler ran"]  # last registered, first run
    first = _stage(project, "ok")
    assert "worker False" in first.stdout and first.stdout.splitlines()[-2:] == order, first.stdout
    _warm_up(project)
    warm = _stage(project, "ok")
    assert "worker True" in warm.stdout and warm.stdout.splitlines()[-2:] == order, warm.stdout + warm.stderr


def test_a_signal_to_the_stage_reaches_its_worker_and_a_dead_stage_takes_its_worker_along(project):
    root, env = project
    _warm_up(project)
    for kill in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, str(root / "stage.py"), "sleep"], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "worker True" in lines[0], lines
        worker = int(lines[1].split()[1])
        proc.send_signal(kill)
        assert proc.wait(timeout=10) == (128 + signal.SIGTERM if kill == signal.SIGTERM else -signal.SIGKILL)
        for _ in range(50):
            if not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker {worker} outlived its stage after {kill.name}")


def test_a_different_thread_setting_or_project_gets_its_own_server(project, tmp_path_factory):
    root, env = project
    threads = str(int(env.get("OMP_NUM_THREADS") or 1) + 1)  # a value other than the one the tests run with
    assert _socket(root, env) != _socket(root, {**env, "OMP_NUM_THREADS": threads})
    assert _socket(root, env) != _socket(tmp_path_factory.mktemp("other"), env)
    assert _socket(root, env) == _socket(root, {**env, "WARM_TEST": "anything"})  # read at run time, not import
    assert len(server_key(root)) == 20


def test_two_stages_at_once_each_get_their_own_worker_and_status(project):
    root, env = project
    _warm_up(project)
    procs = [subprocess.Popen([sys.executable, str(root / "stage.py"), f"nap{code}"], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for code in (5, 6)]
    outs = [proc.communicate(timeout=30)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [5, 6]
    assert all("worker True" in out for out in outs) and "'nap5'" in outs[0] and "'nap6'" in outs[1], outs


def test_a_spawned_multiprocessing_child_of_a_warm_stage_runs_its_target_here(project):
    """tune --workers N spawns processes that re-import the stage's script as __mp_main__, _stage's delegate()
    call included: they must run their target, not hand the script to another worker."""
    _warm_up(project)
    warm = _stage(project, "spawn")
    assert "worker True" in warm.stdout and "spawned child ran" in warm.stdout, warm.stdout + warm.stderr
    assert warm.returncode == 0
