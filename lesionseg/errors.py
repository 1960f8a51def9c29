"""Exceptions whose message is one line a person can act on: what is wrong, where, and the fix; and the line
that tells everything else apart as a bug."""
from __future__ import annotations

import traceback
from pathlib import Path

ISSUES_HINT = "this is a bug in lesionseg, not a problem with your input: please report it with the traceback above"


class LesionsegError(Exception):
    """Base class; the CLI prints ``str(err)`` and exits non-zero instead of a traceback."""


class DataError(LesionsegError):
    """A data file or dataset is unusable (corrupt, inconsistent, out of range)."""


class ConfigError(LesionsegError):
    """A params.yaml section or a command-line value is wrong."""


class TrackingError(LesionsegError):
    """The MLflow tracking server or registry cannot be used."""


def user_error_line(err: BaseException) -> str | None:
    """The one line to show for an error a user caused, or None for a bug (which keeps its traceback).

    A user caused ``err`` when it is a :class:`LesionsegError`, or an argument check: a ``ValueError`` or
    ``TypeError`` that a ``raise`` statement in lesionseg's own code raised (the MONAI convention its networks,
    metrics and generator follow: bad arguments raise ``ValueError`` naming the argument). The same types raised
    by the interpreter in our code (``None + 1``, a wrong keyword) or deep inside numpy or torch are bugs.
    """
    if isinstance(err, LesionsegError):
        return str(err)
    if isinstance(err, (ValueError, TypeError)) and _raised_by_lesionseg_check(err):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def bug_report(err: BaseException) -> str:
    """Print ``err``'s traceback to stderr (an exception that is not a user's error is a bug, and the traceback
    is what a maintainer needs); return the line that follows it."""
    import sys

    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    return f"{type(err).__name__}: {ISSUES_HINT}"


def _raised_by_lesionseg_check(err: BaseException) -> bool:
    """The innermost frame is in the lesionseg package and its statement is an explicit ``raise``."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    ours = Path(last.filename).resolve().is_relative_to(Path(__file__).resolve().parent)
    return ours and (last.line or "").lstrip().startswith("raise ")
