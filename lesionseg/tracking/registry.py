"""Registered models: versions with tags, aliases (``@challenger``, ``@champion``). No registry stages."""
from __future__ import annotations

import contextlib
import io
import sys
from typing import Mapping

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

TARGET_MODEL = "lesionseg-mouse"
CHALLENGER = "challenger"
CHAMPION = "champion"


def register_version(model_uri: str, name: str, tags: Mapping[str, object], description: str = "") -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags``; returns the version number."""
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    with _without_progress_lines():
        version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        client.update_model_version(name, version.version, description=description)
    return str(version.version)


# what mlflow.register_model prints (with print, not warnings or logging) on every call; the caller's own line
# names the version. Anything else it prints still reaches stderr.
PROGRESS_LINES = ("already exists. Creating a new version of this model", "Created version '",
                  "Successfully registered model '")


@contextlib.contextmanager
def _without_progress_lines():
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        try:
            yield
        finally:
            kept = [line for line in captured.getvalue().splitlines(keepends=True)
                    if not any(mark in line for mark in PROGRESS_LINES)]
    sys.stderr.write("".join(kept))


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``."""
    MlflowClient().set_registered_model_alias(name, alias, version)
