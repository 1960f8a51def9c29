"""Register published pretrained weights (e.g. the RatLesNetV2 authors' rat model) like a pretrain run."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import mlflow

from lesionseg.errors import ConfigError
from lesionseg.networks import build_network, load_pretrained
from lesionseg.tracking import lineage, registry, store
from lesionseg.tracking.pyfunc import log_network


SHA256_KEY = "pretrained_sha256"  # one name in params, run tags and registry tags


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a weights file: what names published weights exactly, wherever the file lies."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_tags(pretrained: str | Path | None) -> dict[str, str]:
    """``{pretrained_sha256: ...}`` of the weights a transfer run starts from; empty for a run from scratch."""
    return {SHA256_KEY: weights_sha256(pretrained)} if pretrained and Path(pretrained).is_file() else {}


def log_source_param(run_id: str, tags: dict[str, str]) -> None:
    """Add :func:`source_tags` to the params of a training run (finished or not) as well; logging the same value
    again is a no-op, as MLflow allows."""
    if SHA256_KEY in tags and run_id:
        mlflow.MlflowClient().log_param(run_id, SHA256_KEY, tags[SHA256_KEY])


def import_weights(path: str | Path, arch: str, network: Mapping[str, Any], name: str,
                   project_root: str | Path) -> dict[str, Any]:
    """Load ``path`` strictly (``weights_only=True``) into ``arch``, log it as a model in a
    ``lesionseg-pretrain`` run and register it as a new version of ``name``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such weights file; give the path to a PyTorch state_dict")
    model = build_network(arch, **network)
    try:
        report = load_pretrained(model, path, strict=True)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    store.connect(project_root)
    experiment_id = store.ensure_experiment(store.EXPERIMENTS["pretrain"], project_root)
    sha256 = weights_sha256(path)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{arch}/imported/{path.name}") as run:
        mlflow.log_params({"model": arch, "source_file": path.name, SHA256_KEY: sha256,
                           **{f"network.{k}": v for k, v in network.items()}})
        mlflow.set_tags({"origin": "imported", **lineage.git_tags(project_root), "model": arch, SHA256_KEY: sha256})
        info = log_network(model, [32, 32, 16])
        version = registry.register_version(info.model_uri, name, {"origin": "imported", SHA256_KEY: sha256,
                                                                  "run_id": run.info.run_id, "model": arch})
    return {"run_id": run.info.run_id, "registered_model": name, "version": version,
            "load_report": report.summary()}
