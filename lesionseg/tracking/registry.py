"""Registered models: versions with tags, aliases (``@challenger``, ``@champion``). No registry stages."""
from __future__ import annotations

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
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        client.update_model_version(name, version.version, description=description)
    return str(version.version)


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``."""
    MlflowClient().set_registered_model_alias(name, alias, version)
