"""One tracked training run: the MLflow run lifecycle around the training core, with crash resume.

Builds nothing itself: :func:`lesionseg.training.setup.setup_training` makes the network and loaders,
:func:`lesionseg.training.fit.fit` trains; this module opens (or resumes) the MLflow run, logs params,
lineage and curves, logs the best model and registers it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from lesionseg.config import flatten
from lesionseg.data.io import read_json, write_json, write_text
from lesionseg.data.preprocess import image_digest, load_manifest, load_prepared_case
from lesionseg.errors import TrackingError
from lesionseg.layout import Layout
from lesionseg.postprocess import choose_min_lesion_volume, keep_inside_head
from lesionseg.tracking import lineage, registry, store
from lesionseg.tracking.callback import MlflowCallback
from lesionseg.tracking.context import RunContext
from lesionseg.tracking.pyfunc import log_pyfunc_model
from lesionseg.training.engine import build_loss, predict_items, selection_dice
from lesionseg.training.fit import BEST, FitState, fit, load_checkpoint, save_checkpoint
from lesionseg.training.setup import TrainingSetup, setup_training
from lesionseg.training.spec import RunSpec

CASES_ARTIFACT = "lineage/cases.json"


def train_tracked(spec: RunSpec, context: RunContext, out_dir: str | Path, checkpoint_dir: str | Path, *,
                  resume: bool = True, register_as: str | None = None, tags: dict[str, str] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train ``spec`` inside an MLflow run, log and (optionally) register the best model.

    ``checkpoint_dir`` keeps ``last.pt`` and ``run.json`` (run id + fingerprint) across crashes: with
    ``resume=True`` a matching unfinished run continues from its last epoch, in the same MLflow run.
    Writes ``out_dir/model.pt`` (best weights), ``out_dir/history.tsv`` and ``out_dir/run.json``.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    root = context.layout.root
    store.connect(root)
    setup = setup_training(spec)
    run_id = _resumable_run(checkpoint_dir, spec.fingerprint()) if resume else None
    if context.launched_run_id and run_id not in (None, context.launched_run_id):
        run_id = None
    if run_id is None:
        _clear_checkpoints(checkpoint_dir)
    experiment_id = store.ensure_experiment(store.EXPERIMENTS[spec.stage], root)
    try:
        with mlflow.start_run(run_id=run_id or context.launched_run_id, experiment_id=experiment_id,
                              run_name=spec.run_name, log_system_metrics=True) as run:
            return _train_in_run(spec, setup, run.info.run_id, resumed=run_id is not None, context=context,
                                 out_dir=out_dir, checkpoint_dir=checkpoint_dir, register_as=register_as,
                                 tags=tags or {}, progress=progress)
    except Exception as err:
        # When the store itself is gone, closing the run fails too; surface our one-line error, not that one.
        if isinstance(err.__context__, TrackingError) and not isinstance(err, TrackingError):
            raise err.__context__ from None
        raise


def _train_in_run(spec: RunSpec, setup: TrainingSetup, run_id: str, *, resumed: bool, context: RunContext,
                  out_dir: Path, checkpoint_dir: Path, register_as: str | None, tags: dict[str, str],
                  progress: bool) -> dict[str, Any]:
    """Inside the active run: log the start (new runs only), fit, then log/register the best model."""
    marker = {"run_id": run_id, "fingerprint": spec.fingerprint()}
    write_json(checkpoint_dir / "run.json", marker)
    run_lineage = lineage_tags(spec, context)
    if not resumed:
        log_run_start(spec, setup.model_info, run_lineage, context.layout, context.dvc_exp_name)
        mlflow.set_tags({**tags, "dvc_out": context.layout.relative(out_dir)})
    state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, checkpoint_dir,
                roi_size=setup.roi_size, callbacks=[MlflowCallback(run_id)], resume=resumed, progress=progress)
    setup.model.load_state_dict(load_checkpoint(checkpoint_dir / BEST)["model"])
    postprocessing = choose_postprocessing(spec, setup)
    result = _finish_run(spec, setup.model, setup.roi_size, state, out_dir, register_as, run_id,
                         {**tags, **run_lineage}, postprocessing)
    write_json(checkpoint_dir / "run.json", {**marker, "finished": True})
    return result


def choose_postprocessing(spec: RunSpec, setup: TrainingSetup) -> dict[str, Any]:
    """The model's post-processing (:mod:`lesionseg.postprocess`): predicted voxels outside the head cleared, then the
    smallest lesion component it keeps, chosen on its validation cases with the best weights; logged as params
    ``head_only`` and ``min_lesion_mm3`` and metric ``val_dice_postprocessed``."""
    device = next(setup.model.parameters()).device
    cases = predict_items(setup.model, setup.val_items, setup.roi_size, device, overlap=spec.train.sw_overlap,
                          amp=spec.train.amp)
    predictions = [keep_inside_head(pred.astype(np.uint8), np.asarray(item["image"][0]))
                   for (pred, _), item in zip(cases, setup.val_items)]
    labels = [label for _, label in cases]
    voxel_mm3 = float(np.prod(load_manifest(spec.prepared_dir)["target_spacing"]))
    chosen, means = choose_min_lesion_volume(predictions, labels, voxel_mm3, selection_dice)
    mlflow.log_params({"head_only": True, "min_lesion_mm3": chosen})
    mlflow.log_metric("val_dice_postprocessed", means[chosen])
    mlflow.log_dict({"chosen_on": "validation", "head_only": True, "min_lesion_mm3": chosen,
                     "mean_val_score_by_min_lesion_mm3": means}, "postprocessing.json")
    return {"head_only": True, "min_lesion_mm3": chosen, "chosen_on": "validation"}


def lineage_tags(spec: RunSpec, context: RunContext) -> dict[str, str]:
    """git commit/dirty and the dvc.lock hash of every DVC-tracked input of ``spec``."""
    layout = context.layout
    paths = lineage.data_paths(layout, spec.domain, spec.pretrained, subsets=spec.stage != "pretrain")
    return {**lineage.git_tags(layout.root), **lineage.lock_hashes(lineage.read_lock(layout.dvc_lock), paths)}


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


def log_run_start(spec: RunSpec, model_info: dict, lineage_tags: dict[str, str], layout: Layout,
                  dvc_exp_name: str = "") -> None:
    """Params, lineage tags and the training-set manifest (as an MLflow dataset input) of a new run; paths are
    logged relative to the project root, so runs from different clones compare."""
    params = {
        **spec.arm.fields(), "augment": "aug" if spec.augment else "noaug",  # as MLproject's parameter says it
        "sample_size": spec.sample_size, "domain": spec.domain,
        "pretrained": layout.relative(spec.pretrained) if spec.pretrained else "",
        "n_train": len(spec.train_ids), "n_val": len(spec.val_ids), "repeat": spec.repeat,
        "precision": model_info.get("precision", ""),  # what train.amp gave on this machine (bf16, fp16, fp32)
        **flatten({"network": spec.network}), **flatten({"train": spec.train}),
    }
    mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
    tags = {
        **lineage_tags, **lineage.dvc_tags(spec.stage, dvc_exp_name),
        **spec.arm.tags(), "sample_size": str(spec.sample_size or ""), "repeat": str(spec.repeat),
        "budget_steps": str(spec.train.budget_steps),
        "frozen_blocks": ",".join(model_info["frozen_blocks"]),
        "fingerprint": spec.fingerprint(),  # what resume matches (checkpoints/run.json): spec, data, precision
    }
    if "pretrained_load" in model_info:
        tags["pretrained_load"] = model_info["pretrained_load"]
    mlflow.set_tags(tags)
    train_ids = set(spec.train_ids)
    manifest = pd.DataFrame([c for c in load_manifest(spec.prepared_dir)["cases"] if c["case_id"] in train_ids])
    dataset = mlflow.data.from_pandas(manifest, source=layout.relative(spec.prepared_dir),
                                      name=f"{spec.domain}-train-n{len(spec.train_ids)}")
    store.log_dataset_input(dataset, context="training")
    mlflow.log_dict(case_digests(spec), CASES_ARTIFACT)


def case_digests(spec: RunSpec) -> dict[str, dict[str, str]]:
    """Case id -> content hash of the prepared image, for the training and validation cases of ``spec``
    (``promote`` refuses data that shares either with a model's run)."""
    return {split: {cid: image_digest(load_prepared_case(spec.prepared_dir, cid).image) for cid in ids}
            for split, ids in (("train", spec.train_ids), ("val", spec.val_ids))}


def _finish_run(spec: RunSpec, model: torch.nn.Module, roi_size, state: FitState, out_dir: Path,
                register_as: str | None, run_id: str, tags: dict[str, str],
                postprocessing: dict[str, Any]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv = pd.DataFrame(state.history).to_csv(sep="\t", index=False, float_format="%.6g")
    write_text(out_dir / "history.tsv", tsv)
    mlflow.log_text(tsv, "curves/history.tsv")
    manifest = load_manifest(spec.prepared_dir)
    preprocessing = {k: manifest[k] for k in ("target_spacing", "shape", "clip_percentiles", "crop") if k in manifest}
    save_checkpoint(out_dir / "model.pt", {"model": model.state_dict(), "network": spec.network, "arch": spec.model,
                                           "roi_size": list(roi_size), "preprocessing": preprocessing,
                                           "postprocessing": postprocessing})
    model_info = log_pyfunc_model(str(out_dir / "model.pt"))  # one logged model: the pyfunc wraps the network
    result: dict[str, Any] = {
        "run_id": run_id, "run_name": spec.run_name, "model_uri": model_info.model_uri,
        "best_val_dice": state.best_val_dice, "best_epoch": state.best_epoch, "best_step": state.best_step,
        "steps_run": state.step, "budget_steps": spec.train.budget_steps, "converged": state.converged,
        "epochs_run": state.epoch, **spec.arm.fields(), "sample_size": spec.sample_size, "repeat": spec.repeat,
        "lr": spec.train.lr, "min_lesion_mm3": postprocessing["min_lesion_mm3"],
        "roi_size": list(roi_size),
    }
    if register_as:
        version_tags = {**tags, **spec.arm.tags(), **{k: result[k] for k in ("sample_size", "repeat", "run_id",
                                                                          "budget_steps")},
                        "val_dice": f"{result['best_val_dice']:.4f}",
                        "converged": str(state.converged).lower()}
        result["registered_model"] = register_as
        result["version"] = registry.register_version(model_info.model_uri, register_as, version_tags,
                                                      description=spec.run_name)
        mlflow.set_tag("registered_version", f"{register_as}/{result['version']}")
    write_json(out_dir / "run.json", result)
    return result
