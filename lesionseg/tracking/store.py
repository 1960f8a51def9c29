"""Where runs go: the tracking URI, experiments, and a reachability check with a one-line error."""
from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from lesionseg.errors import TrackingError

EXPERIMENTS = {
    "pretrain": "lesionseg-pretrain",
    "finetune": "lesionseg-finetune",
    "tune": "lesionseg-tune",
    "evaluate": "lesionseg-eval",
    "report": "lesionseg-eval",
}


def default_tracking_uri(project_root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store (absolute path, four slashes)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def artifact_root(project_root: str | Path) -> str | None:
    """Artifacts beside the SQLite store (``<repo>/mlartifacts``); a server decides for itself."""
    uri = default_tracking_uri(project_root)
    if uri.startswith("sqlite:"):
        return (Path(project_root).resolve() / "mlartifacts").as_uri()
    return None


def connect(project_root: str | Path) -> str:
    """Point MLflow at the project's store and check it answers; returns the tracking URI."""
    uri = default_tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry follows the store (and replaces one an earlier connect() set)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # MLflow raises several types for network/DB failures
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise TrackingError(
            f"MLflow tracking store {uri} is unreachable ({reason}); start the server or fix MLFLOW_TRACKING_URI"
        ) from None
    return uri


def ensure_experiment(name: str, project_root: str | Path) -> str:
    """Experiment id for ``name``, creating it with the project's artifact location if needed."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_root(project_root)
    location = f"{location}/{name}" if location else None
    return client.create_experiment(name, artifact_location=location)
