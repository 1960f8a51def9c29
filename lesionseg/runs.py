"""One tracked training run (pretraining on the source domain or fine-tuning on the target domain).

This is the glue between the training core (which knows nothing of MLflow) and the tracking layer:
build the network, apply the transfer strategy, train with an MLflow callback, log the model, register it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature

from lesionseg.config import TrainConfig, flatten
from lesionseg.data.io import read_json, write_json, write_text
from lesionseg.data.preprocess import load_manifest
from lesionseg.errors import ConfigError, TrackingError
from lesionseg.networks import build_network, freeze_blocks, load_pretrained, network_blocks
from lesionseg.tracking import lineage, registry, store
from lesionseg.serving import log_pyfunc_model
from lesionseg.tracking.callback import MlflowCallback
from lesionseg.training.data import load_items, train_loader
from lesionseg.training.engine import build_loss, resolve_device
from lesionseg.training.fit import BEST, fit, load_checkpoint, save_checkpoint
from lesionseg.training.transforms import train_transforms

PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "monai", "nibabel", "scipy", "numpy", "mlflow"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (and nothing about where it is logged)."""

    stage: str  # "pretrain" | "finetune"
    model: str
    network: dict[str, Any]
    strategy: str
    freeze_depth: int
    augment: bool
    sample_size: int | None
    prepared_dir: Path
    train_ids: Sequence[str]
    val_ids: Sequence[str]
    train: TrainConfig
    pretrained: Path | None = None
    domain: str = "mouse"
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        """What the MLflow runs table shows, e.g. ``ratlesnetv2/partial-d5/n8/aug``."""
        if self.stage == "pretrain":
            return f"{self.model}/pretrain/{self.domain}"
        aug = "aug" if self.augment else "noaug"
        return f"{self.model}/{self.strategy}-d{self.freeze_depth}/n{self.sample_size}/{aug}"

    def fingerprint(self) -> str:
        """Hash of the spec (and of the pretrained weights' bytes): a checkpoint resumes only a run with
        the same fingerprint, so a stale checkpoint from other params is never picked up."""
        payload = dataclasses.asdict(self)
        payload["prepared_dir"] = str(self.prepared_dir)
        payload["pretrained"] = _file_md5(self.pretrained) if self.pretrained else None
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def build_model(spec: RunSpec, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network with the strategy applied; returns it and a dict of what loading/freezing did."""
    model = build_network(spec.model, **spec.network)
    n_blocks = len(network_blocks(model))
    if spec.strategy == "partial" and not 0 < spec.freeze_depth < n_blocks:
        raise ConfigError(f"freeze_depth={spec.freeze_depth} is out of range for partial fine-tuning of "
                          f"{spec.model} (1..{n_blocks - 1}); fix finetune.partial_freeze_depth in params.yaml")
    info: dict[str, Any] = {"n_blocks": n_blocks}
    if spec.strategy != "scratch":
        if spec.pretrained is None or not Path(spec.pretrained).exists():
            raise ConfigError(
                f"strategy={spec.strategy} needs pretrained weights for {spec.model}, but {spec.pretrained} is missing; "
                "run the pretrain stage or set finetune.source in params.yaml"
            )
        report = load_pretrained(model, spec.pretrained)
        if not report.matched:
            raise ConfigError(f"{spec.pretrained}: no weights match {spec.model}; {report.summary()}")
        info["pretrained_load"] = report.summary()
    info["frozen_blocks"] = freeze_blocks(model, spec.freeze_depth)
    return model.to(device), info


def train_tracked(
    spec: RunSpec,
    project_root: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    *,
    resume: bool = True,
    register_as: str | None = None,
    tags: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``spec`` inside an MLflow run, log and (optionally) register the best model.

    ``checkpoint_dir`` keeps ``last.pt`` and ``run.json`` (run id + fingerprint) across crashes: with
    ``resume=True`` a matching unfinished run continues from its last epoch, in the same MLflow run.
    Writes ``out_dir/model.pt`` (best weights), ``out_dir/history.tsv`` and ``out_dir/run.json``.
    """
    project_root, out_dir, checkpoint_dir = Path(project_root), Path(out_dir), Path(checkpoint_dir)
    store.connect(project_root)
    setup = setup_training(spec)
    run_id = _resumable_run(checkpoint_dir, spec.fingerprint()) if resume else None
    launched = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into the run it opened
    if launched and run_id not in (None, launched):
        run_id = None
    if run_id is None:
        _clear_checkpoints(checkpoint_dir)
    experiment_id = store.ensure_experiment(store.EXPERIMENTS[spec.stage], project_root)
    try:
        with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=spec.run_name,
                              log_system_metrics=True) as run:
            result = _train_in_run(spec, setup, run.info.run_id, resumed=run_id is not None,
                                   project_root=project_root, out_dir=out_dir, checkpoint_dir=checkpoint_dir,
                                   register_as=register_as, tags=tags or {}, progress=progress)
    except Exception as err:
        # When the store itself is gone, closing the run fails too; surface our one-line error, not that one.
        if isinstance(err.__context__, TrackingError) and not isinstance(err, TrackingError):
            raise err.__context__ from None
        raise
    return result


def _train_in_run(spec: RunSpec, setup: "TrainingSetup", run_id: str, *, resumed: bool, project_root: Path,
                  out_dir: Path, checkpoint_dir: Path, register_as: str | None, tags: dict[str, str],
                  progress: bool) -> dict[str, Any]:
    """Inside the active run: log the start (new runs only), fit, then log/register the best model."""
    marker = {"run_id": run_id, "fingerprint": spec.fingerprint()}
    write_json(checkpoint_dir / "run.json", marker)
    if not resumed:
        log_run_start(spec, project_root, setup.model_info)
        mlflow.set_tags({**tags, "dvc_out": _relative(out_dir, project_root)})
    state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, checkpoint_dir,
                roi_size=setup.roi_size, callbacks=[MlflowCallback(run_id)], resume=resumed, progress=progress)
    setup.model.load_state_dict(load_checkpoint(checkpoint_dir / BEST)["model"])
    result = _finish_run(spec, setup.model, setup.roi_size, pd.DataFrame(state.history), out_dir, register_as,
                         run_id, project_root, tags)
    write_json(checkpoint_dir / "run.json", {**marker, "finished": True})
    return result


@dataclass
class TrainingSetup:
    """A network with its strategy applied, and the data to train and validate it on."""

    model: torch.nn.Module
    model_info: dict[str, Any]
    loader: Any
    val_items: list[dict]
    roi_size: list[int]


def setup_training(spec: RunSpec) -> TrainingSetup:
    """Seeded network (strategy applied) and loaders for ``spec``; no tracking involved."""
    torch.set_num_threads(spec.train.num_threads)
    torch.manual_seed(spec.train.seed)
    model, model_info = build_model(spec, resolve_device(spec.train.device))
    train_items = load_items(spec.prepared_dir, spec.train_ids)
    val_items = load_items(spec.prepared_dir, spec.val_ids)
    roi_size = list(spec.train.patch_size or train_items[0]["image"].shape[1:])
    augment = spec.train.augment if spec.augment else None
    loader = train_loader(train_items, train_transforms(augment, spec.train.patch_size), spec.train.batch_size,
                          spec.train.seed)
    return TrainingSetup(model, model_info, loader, val_items, roi_size)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _resumable_run(checkpoint_dir: Path, fingerprint: str) -> str | None:
    marker = checkpoint_dir / "run.json"
    if not (marker.exists() and (checkpoint_dir / "last.pt").exists()):
        return None
    saved = read_json(marker)
    if saved.get("finished") or saved.get("fingerprint") != fingerprint:
        return None
    return saved["run_id"]


def _clear_checkpoints(checkpoint_dir: Path) -> None:
    for name in ("last.pt", BEST, "run.json"):
        (checkpoint_dir / name).unlink(missing_ok=True)


def log_run_start(spec: RunSpec, project_root: Path, model_info: dict) -> None:
    """Params, lineage tags and the training-set manifest (as an MLflow dataset input) of a new run."""
    params = {
        "model": spec.model, "strategy": spec.strategy, "freeze_depth": spec.freeze_depth,
        "sample_size": spec.sample_size, "augment": "aug" if spec.augment else "noaug", "domain": spec.domain,
        "pretrained": str(spec.pretrained) if spec.pretrained else "",
        "n_train": len(spec.train_ids), "n_val": len(spec.val_ids),
        **flatten({"network": spec.network}), **flatten({"train": spec.train}), **flatten(spec.extra_params),
    }
    mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
    tags = {
        **lineage.git_tags(project_root),
        **lineage.dvc_tags(spec.stage),
        **lineage.dvc_lock_hashes(project_root, _data_paths(spec)),
        "model": spec.model, "strategy": spec.strategy, "freeze_depth": str(spec.freeze_depth),
        "sample_size": str(spec.sample_size or ""), "augment": str(spec.augment).lower(),
        "frozen_blocks": ",".join(model_info["frozen_blocks"]),
    }
    if "pretrained_load" in model_info:
        tags["pretrained_load"] = model_info["pretrained_load"]
    mlflow.set_tags(tags)
    manifest = pd.DataFrame([c for c in load_manifest(spec.prepared_dir)["cases"] if c["case_id"] in set(spec.train_ids)])
    dataset = mlflow.data.from_pandas(manifest, source=str(spec.prepared_dir), name=f"{spec.domain}-train-n{len(spec.train_ids)}")
    mlflow.log_input(dataset, context="training")


def _data_paths(spec: RunSpec) -> list[str]:
    paths = [f"data/processed/{spec.domain}", f"data/splits/{spec.domain}.json", "data/splits/subsets.json"]
    if spec.pretrained:
        paths.append(str(Path(spec.pretrained).parent.as_posix()))
    return paths


def _finish_run(spec: RunSpec, model: torch.nn.Module, roi_size, history: pd.DataFrame, out_dir: Path,
                register_as: str | None, run_id: str, project_root: Path, tags: dict[str, str]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv = history.to_csv(sep="\t", index=False, float_format="%.6g")
    write_text(out_dir / "history.tsv", tsv)
    mlflow.log_text(tsv, "curves/history.tsv")
    manifest = load_manifest(spec.prepared_dir)
    preprocessing = {k: manifest[k] for k in ("target_spacing", "shape", "clip_percentiles", "crop") if k in manifest}
    save_checkpoint(out_dir / "model.pt", {"model": model.state_dict(), "network": spec.network, "arch": spec.model,
                                           "roi_size": list(roi_size), "preprocessing": preprocessing})
    network_info = log_model(model.cpu(), roi_size)
    model_info = log_pyfunc_model(str(out_dir / "model.pt"), PIP_REQUIREMENTS)
    best = history.loc[history["val_dice"].idxmax()]
    result: dict[str, Any] = {
        "run_id": run_id, "run_name": spec.run_name, "model_uri": model_info.model_uri,
        "network_uri": network_info.model_uri,
        "best_val_dice": float(best["val_dice"]), "best_epoch": int(best["epoch"]), "epochs_run": int(len(history)),
        "model": spec.model, "strategy": spec.strategy, "freeze_depth": spec.freeze_depth,
        "sample_size": spec.sample_size, "augment": spec.augment, "roi_size": list(roi_size),
    }
    if register_as:
        tags = {**tags, **{k: result[k] for k in ("model", "strategy", "freeze_depth", "sample_size", "augment",
                                                  "run_id")}}
        tags.update({"augment": str(spec.augment).lower(), "val_dice": f"{result['best_val_dice']:.4f}", **lineage.git_tags(project_root),
                     **lineage.dvc_lock_hashes(project_root, _data_paths(spec))})
        result["registered_model"] = register_as
        result["version"] = registry.register_version(model_info.model_uri, register_as, tags,
                                                      description=spec.run_name)
        mlflow.set_tag("registered_version", f"{register_as}/{result['version']}")
    write_json(out_dir / "run.json", result)
    return result


def log_model(model: torch.nn.Module, roi_size: Sequence[int]):
    """Log the bare network (tensor in, logits out) as ``network``, with the pickle format: MLflow 3's
    default ``pt2`` export specialises on the example's shape, and a segmentation network must take any
    volume size and batch. The registered model is the pyfunc (volume in, mask out) beside it."""
    example = np.zeros((1, 1, *roi_size), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    return mlflow.pytorch.log_model(
        model, name="network", serialization_format="pickle", input_example=example,
        signature=infer_signature(example, output), pip_requirements=PIP_REQUIREMENTS,
    )
