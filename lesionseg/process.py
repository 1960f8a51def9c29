"""This process: its seconds since the kernel started it, and an exit that skips the interpreter's teardown.

A stage's process imports torch, MONAI and MLflow; tearing their modules down at exit took about 3 s of a tiny
cell (benchmarks/results_speed.md). After a stage succeeds, every atexit handler (MLflow's run end and
async-logging flush, temporary-folder cleanup) still runs; only the module teardown after them is skipped.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from pathlib import Path

from lesionseg import warmstart

_IMPORTED = time.time()  # the fallback start where /proc is missing


def process_seconds() -> float:
    """Seconds since the kernel created this process (/proc), else since this module was imported; in a
    warm-start worker, since the stage's own process was created."""
    if warmstart.client_started_at is not None:
        return time.time() - warmstart.client_started_at
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED


def timing(fit_seconds: float) -> str:
    """'; 41.2 s (fit 36.9 s, outside 4.3 s)': this process's wall time, and how much of it was not training steps
    and validation (``fit_seconds``): the stage's fixed cost."""
    wall = process_seconds()
    warm = ", warm start" if warmstart.IN_WORKER else ""
    return f"; {wall:.1f} s (fit {fit_seconds:.1f} s, outside {wall - fit_seconds:.1f} s{warm})"


class FastExit:
    """An atexit handler registered before any library registers its own, so it runs after all of them; once
    :meth:`arm` was called (the stage succeeded) it flushes the logs and streams and ends the process with 0."""

    def __init__(self) -> None:
        self.armed = False

    @classmethod
    def register(cls) -> "FastExit":
        handler = cls()
        atexit.register(handler._exit)
        warmstart.replay_exit_handlers()  # a warm-start worker's libraries came in before it: their handlers go after
        return handler

    def arm(self) -> None:
        self.armed = True

    def _exit(self) -> None:
        if self.armed:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
