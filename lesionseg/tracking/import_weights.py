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
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{arch}/imported/{path.name}") as run:
        mlflow.log_params({"model": arch, "source_file": path.name, "source_md5": md5,
                           **{f"network.{k}": v for k, v in network.items()}})
        mlflow.set_tags({"origin": "imported", **lineage.git_tags(project_root), "model": arch})
        info = log_network(model, [32, 32, 16])
        version = registry.register_version(info.model_uri, name, {"origin": "imported", "source_md5": md5,
                                                                  "run_id": run.info.run_id, "model": arch})
    return {"run_id": run.info.run_id, "registered_model": name, "version": version,
            "load_report": report.summary()}
