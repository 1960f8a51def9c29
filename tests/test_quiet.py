"""Quiet logs: the library warnings that ask nothing of the user are hidden; every other warning still shows."""
import logging
import warnings

import pytest

from lesionseg.tracking import quiet

MLFLOW_FILE = "/venv/lib/python3.11/site-packages/mlflow/pyfunc/utils/data_validation.py"
TYPE_HINT = "\x1b[33mAdd type hints to the `predict` method to enable data validation and ...\x1b[0m"


@pytest.fixture
def shown(monkeypatch):
    """The messages that reach the display (the hook in front of a recorder); restored after the test."""
    seen: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: seen.append(str(message)))
    for name in quiet.CHATTY_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    quiet.quiet_library_warnings()
    quiet.quiet_library_warnings()  # idempotent: one hook, not two
    return seen


def _emit(message: str, category: type[Warning], filename: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit(message, category, filename, 1)


def test_the_known_mlflow_warnings_are_hidden(shown):
    _emit(TYPE_HINT, UserWarning, MLFLOW_FILE)
    _emit("The specified dataset source can be interpreted in multiple ways: A, B.", UserWarning,
          "/venv/site-packages/mlflow/data/dataset_source_registry.py")
    assert shown == []


def test_an_unrelated_warning_still_shows(shown):
    _emit("a new library warning", UserWarning, MLFLOW_FILE)
    _emit("our own deprecation", DeprecationWarning, "/repo/lesionseg/config.py")
    assert shown == ["a new library warning", "our own deprecation"]


def test_the_same_text_from_another_package_still_shows(shown):
    _emit(TYPE_HINT, UserWarning, "/repo/lesionseg/tracking/pyfunc.py")
    assert shown == [TYPE_HINT]


def test_mlflow_info_lines_are_lowered_but_its_warnings_kept(shown):
    store = logging.getLogger("mlflow.store.db.utils")
    assert not store.isEnabledFor(logging.INFO) and store.isEnabledFor(logging.WARNING)


def test_the_cloudpickle_log_line_is_dropped_and_other_pyfunc_lines_kept(shown, caplog):
    logger = logging.getLogger("mlflow.pyfunc")
    with caplog.at_level(logging.WARNING, logger="mlflow.pyfunc"):
        logger.warning("Passing a Python object as `python_model` causes it to be serialized using CloudPickle")
        logger.warning("something else about the model")
    assert [r.getMessage() for r in caplog.records] == ["something else about the model"]


def test_registration_drops_only_mlflows_progress_prints(capsys):
    import sys

    from lesionseg.tracking.registry import _without_progress_lines

    with _without_progress_lines():
        print("Registered model 'm' already exists. Creating a new version of this model...", file=sys.stderr)
        print("Created version '3' of model 'm'.", file=sys.stderr)
        print("a line nobody expected", file=sys.stderr)
    assert capsys.readouterr().err == "a line nobody expected\n"
