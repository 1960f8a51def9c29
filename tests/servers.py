"""Servers the tests start as subprocesses on 127.0.0.1 (`mlflow models serve`, `mlflow ui`, optuna-dashboard):
a free port, waiting until one answers, and stopping it with its pipes closed."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _output(server: subprocess.Popen) -> str:
    """The end of what the server printed (the pipe it writes to), or how it ended."""
    pipe = server.stderr or server.stdout
    return pipe.read().decode(errors="replace")[-2000:] if pipe else f"exit code {server.returncode}"


def get_when_up(url: str, server: subprocess.Popen, timeout_s: float = 120) -> bytes:
    """GET ``url`` once the server answers and return the body; fail with its output if it exits first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.read()
        except OSError:
            assert server.poll() is None, _output(server)
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s")


def stop(server: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate the server, wait for it, and close the pipes it wrote to."""
    server.terminate()
    server.wait(timeout=timeout_s)
    for pipe in (server.stdout, server.stderr):
        if pipe:
            pipe.close()
