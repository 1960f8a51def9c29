"""Keep a stage's log to the lines a person reads: hide the library warnings that carry no action for the user.

Each entry of :data:`NO_ACTION_WARNINGS` names one message, its category and the package whose files emit it;
anything else (another message, the same text from our own code, a new library warning) still shows. MLflow
emits some of these inside its own ``catch_warnings()`` + ``simplefilter("once")``, which overrides any
``warnings.filterwarnings`` made by the caller, so the display hook (``warnings.showwarning``) is where they
are dropped; MLflow's INFO chatter (database set-up, system-metrics monitor) is lowered to WARNING.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NoActionWarning:
    """A library warning the user can do nothing about, and why."""

    text: str  # a fragment of the message
    category: type[Warning]
    package: str  # the emitting file lies under this package
    why: str


NO_ACTION_WARNINGS = (
    NoActionWarning("Add type hints to the `predict` method", UserWarning, "mlflow",
                    "our pyfunc validates its own input (tracking/pyfunc.py)"),
    NoActionWarning("dataset source can be interpreted in multiple ways", UserWarning, "mlflow",
                    "a local manifest is a local artifact source; MLflow picks it right"),
)
CHATTY_LOGGERS = ("mlflow.store.db.utils", "mlflow.system_metrics", "alembic.runtime.migration")
# logged (not warned) by MLflow on every pyfunc it saves: our PythonModel is a small class in this package, and
# the registered model is loaded by the project's own code
NO_ACTION_LOG_LINES = {"mlflow.pyfunc": "Passing a Python object as `python_model` causes it to be serialized"}


class _DropLine(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def is_no_action(message: Warning | str, category: type[Warning], filename: str) -> bool:
    """Whether a warning is one of :data:`NO_ACTION_WARNINGS`."""
    parts = Path(filename).parts
    return any(issubclass(category, w.category) and w.text in str(message) and w.package in parts
               for w in NO_ACTION_WARNINGS)


def quiet_library_warnings() -> None:
    """Hide :data:`NO_ACTION_WARNINGS`, :data:`NO_ACTION_LOG_LINES` and MLflow's INFO lines in this process;
    every other warning and log line still shows. Idempotent; call it where a stage or command starts."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, text in NO_ACTION_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLine) and f.text == text for f in logger.filters):
            logger.addFilter(_DropLine(text))
    show = warnings.showwarning
    if getattr(show, "lesionseg_quiet", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not is_no_action(message, category, filename):
            show(message, category, filename, lineno, file, line)

    showwarning.lesionseg_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


# --- a stage's last line and its exit ----------------------------------------------------------------------------

_STAGE_SUCCEEDED: list[bool] = []
_LOADED = time.time()


def process_seconds() -> float:
    """Seconds since the kernel created this process (``/proc``; elsewhere, since this module was loaded)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _LOADED


def timing() -> str:
    """``"; 41.2 s (fit 36.9 s, outside 4.3 s)"``: the wall time since process creation and the part of it outside
    training steps and validation (the fixed cost: imports, store, logging, registration), for a stage's last
    line. Fit time is :func:`lesionseg.training.fit.steps_and_validation_seconds` when this process trained."""
    fit_module = sys.modules.get("lesionseg.training.fit")  # not imported here: data stages never load training
    wall, fit = process_seconds(), fit_module.steps_and_validation_seconds() if fit_module else 0.0
    return f"; {wall:.1f} s (fit {fit:.1f} s, outside {wall - fit:.1f} s)"


def exit_without_teardown() -> None:
    """Once a stage has succeeded (:func:`run_stage`), end the process after every atexit handler (MLflow's,
    temporary directories) but without the interpreter's teardown of the torch/MONAI/MLflow heap (3.3-3.7 s of a
    tiny cell at load 5). Call it before torch and MLflow load, so that its handler runs after theirs."""
    def handler() -> None:
        if _STAGE_SUCCEEDED:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    atexit.register(handler)


def run_stage(main) -> None:
    """Call a stage's ``main``; when it returns and it is the process's own (``__main__``), the process exits
    without its teardown (:func:`exit_without_teardown`). An error, or a ``main`` some other program (a test)
    calls in-process, leaves the exit and its code as they are."""
    main()
    if getattr(main, "__module__", None) == "__main__":
        _STAGE_SUCCEEDED.append(True)
