"""Exceptions whose message is one line a person can act on: what is wrong, where, and the fix."""


class LesionsegError(Exception):
    """Base class; the CLI prints ``str(err)`` and exits non-zero instead of a traceback."""


class DataError(LesionsegError):
    """A data file or dataset is unusable (corrupt, inconsistent, out of range)."""


class ConfigError(LesionsegError):
    """A params.yaml section or a command-line value is wrong."""


class TrackingError(LesionsegError):
    """The MLflow tracking server or registry cannot be used."""
