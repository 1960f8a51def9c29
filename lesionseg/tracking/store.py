"""Where runs go: the tracking URI, experiments, and a reachability check with a one-line error."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.data.dataset import Dataset
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from lesionseg.errors import TrackingError
from lesionseg.layout import Layout
from lesionseg.tracking.refusals import find_refusal, permission_error

EXPERIMENTS = {
    "pretrain": "lesionseg-pretrain",
    "finetune": "lesionseg-finetune",
    "tune": "lesionseg-tune",
    "evaluate": "lesionseg-eval",
    "report": "lesionseg-eval",
}
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def default_tracking_uri(project_root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store (absolute path, four slashes)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Layout.at(project_root).mlflow_db}"


def artifact_root(project_root: str | Path) -> str | None:
    """Artifacts beside the SQLite store (``<repo>/mlartifacts``); a server decides for itself."""
    uri = default_tracking_uri(project_root)
    if uri.startswith("sqlite:"):
        return Layout.at(project_root).mlartifacts.as_uri()
    return None


def artifact_bars_on_terminal_only() -> None:
    """MLflow's artifact progress bars only on a terminal: in a pipe (a `dvc repro` log, CI, a cluster worker)
    each redraw of a bar is another carriage-return line. ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``, when set, wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def connect(project_root: str | Path) -> str:
    """Point MLflow at the project's store and check it answers; returns the tracking URI."""
    artifact_bars_on_terminal_only()
    uri = default_tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry follows the store (and replaces one an earlier connect() set)
    try:
        with _schema_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # MLflow raises several types for network/DB failures
        refused = permission_error(err, uri)
        if refused:
            raise TrackingError(refused) from None
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise TrackingError(
            f"MLflow tracking store {uri} is unreachable ({reason}); start the server or fix MLFLOW_TRACKING_URI"
        ) from None
    return uri


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Hold a lock file beside a SQLite store while touching it first: MLflow creates or migrates the schema on a
    process's first access, and two stages that start together (a parallel study) would both run that migration
    ("table _alembic_tmp_experiments already exists"). MLflow has no such lock of its own; a server store needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(name: str, project_root: str | Path) -> str:
    """Experiment id for ``name``, creating it with the project's artifact location if needed; the experiment
    is tagged as model training (:data:`MODEL_TRAINING_KIND`) unless it already has a kind."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name) or _create_experiment(client, name, project_root)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        _tag_as_model_training(client, experiment.experiment_id)
    return experiment.experiment_id


def _tag_as_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Set the kind tag; a user who may not edit the experiment leaves it untagged (and is refused at run
    creation with the access layer's message)."""
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    except Exception as err:  # MLflow raises several types for a refusal
        refusal = find_refusal(err)
        if refusal is None or refusal.status != 403:
            raise


def _create_experiment(client: MlflowClient, name: str, project_root: str | Path) -> Experiment:
    """Create ``name`` tagged as model training; another process creating it first is not an error."""
    location = artifact_root(project_root)
    location = f"{location}/{name}" if location else None
    try:
        experiment_id = client.create_experiment(name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name)
    return client.get_experiment(experiment_id)


def log_dataset_input(dataset: Dataset, context: str, attempts: int = 3) -> None:
    """``mlflow.log_input``, retried when another run created the same dataset (name, digest) in this
    experiment at the same moment. MLflow's SQL store looks the dataset up and then inserts it in one
    transaction, so two concurrent runs on one training set (tuning workers, parallel stages on a shared
    server) can both miss it and one insert fails with a unique-key violation; the retry finds the row the
    other run wrote and only links it."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as err:
            if attempt == attempts - 1 or not _is_duplicate_key(err):
                raise


def _is_duplicate_key(err: MlflowException) -> bool:
    """A unique-constraint failure as PostgreSQL, MySQL or SQLite report it through MLflow."""
    text = str(err).lower()
    return any(mark in text for mark in ("uniqueviolation", "unique constraint", "duplicate entry",
                                          "duplicate key"))


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the UI's model-training view. MLflow 3.17's UI picks its view from
    the link's ``workflowType``, else the browser's last choice, else GenAI; the experiment tag does not."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def experiment_urls(ui_url: str) -> dict[str, str]:
    """:func:`experiment_url` of each of the project's experiments that exists in the current store."""
    client = MlflowClient()
    found = {name: client.get_experiment_by_name(name) for name in dict.fromkeys(EXPERIMENTS.values())}
    return {name: experiment_url(ui_url, e.experiment_id) for name, e in found.items() if e is not None}
