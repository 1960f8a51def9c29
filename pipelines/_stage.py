"""What every stage entry point shares: the project root, params.yaml, and turning our errors into one line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
# Stage scripts run as `python pipelines/<stage>.py` from dvc.yaml and MLproject; putting the project root
# on the path lets them import the library even in an environment (e.g. MLflow's conda env) without `pip -e`.
sys.path.insert(0, str(ROOT))

from lesionseg.config import load_params  # noqa: E402
from lesionseg.errors import LesionsegError  # noqa: E402


def params(path: str | None = None) -> dict[str, Any]:
    """params.yaml of the project (or ``path``)."""
    return load_params(Path(path) if path else ROOT / "params.yaml")


def run(main: Callable[[], Any]) -> None:
    """Call ``main``; a :class:`LesionsegError` becomes one line on stderr and exit code 1."""
    try:
        main()
    except LesionsegError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
