"""Exceptions whose message is one line a person can act on: what is wrong, where, and the fix."""


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

    A user caused ``err`` when it is a :class:`LesionsegError`, or a ``ValueError``/``TypeError`` raised by
    lesionseg's own argument checks (the MONAI convention its networks, metrics and generator follow: bad
    arguments raise ``ValueError`` naming the argument). The same exception types raised deep inside numpy or
    torch are not ours to explain, so they are left alone.
    """
    if isinstance(err, LesionsegError):
        return str(err)
    if isinstance(err, (ValueError, TypeError)) and _raised_by_lesionseg(err):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def _raised_by_lesionseg(err: BaseException) -> bool:
    import traceback
    from pathlib import Path

    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(Path(__file__).resolve().parent)
