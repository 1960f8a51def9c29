"""The direct child of a ``lesionseg study run`` task: runs one command (``dvc repro ...``) and dies with its parent.

It dies with its parent (Linux ``PR_SET_PDEATHSIG``), and when it dies it takes the command and everything that
command started (its own session: ``dvc`` and the stage's process) down with it, so a killed Dask worker leaves no
orphan training process that still holds DVC's lock on the stage's outputs while the retry runs elsewhere.

Run as a script (``python .../supervisor.py PARENT_PID CMD...``) so that it needs nothing but the standard library
(the worker's interpreter may not have lesionseg importable); :mod:`lesionseg.cluster` starts it.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

GRACE_S = 10.0  # after SIGTERM/SIGINT, the command's group gets this long before SIGKILL
PR_SET_PDEATHSIG = 1


class Supervisor:
    """One command in its own session; a stop request terminates its group, then kills it after the grace time."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.deadline: float | None = None

    def stop(self, signum: int, frame: object) -> None:
        """Signal handler: only asks (``Popen.wait``/``poll`` inside a handler can deadlock); :meth:`run` waits."""
        if self.child is None:
            sys.exit(128 + signum)
        if self.deadline is None:
            self.deadline = time.monotonic() + GRACE_S
            _signal_group(self.child.pid, signal.SIGTERM)

    def run(self, command: Sequence[str]) -> int:
        """The command's exit status, or 143 when it was stopped (nothing it started outlives it then)."""
        self.child = subprocess.Popen(list(command), start_new_session=True)
        while self.child.poll() is None:
            time.sleep(0.1)
            if self.deadline is not None and time.monotonic() > self.deadline:
                _signal_group(self.child.pid, signal.SIGKILL)
        if self.deadline is not None:
            _signal_group(self.child.pid, signal.SIGKILL)
            return 143
        return self.child.returncode


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker's own cleanup has to do
        pass


def main(argv: Sequence[str]) -> int:
    """``argv``: the parent's pid, then the command."""
    parent, command = int(argv[0]), argv[1:]
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    _die_with_parent()
    if os.getppid() != parent:  # the worker died before prctl took effect
        return 143
    return supervisor.run(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
