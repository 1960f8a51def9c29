"""Test results back into the training run and onto its registered version; the challenger alias."""
from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import mlflow
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from lesionseg.config import flatten
from lesionseg.data.io import read_json
from lesionseg.evaluation.evaluate import evaluate_folder, score_folder
from lesionseg.inference import Segmenter, predict_cases
from lesionseg.layout import Layout
from lesionseg.tracking import lineage, store
from lesionseg.tracking.registry import CHALLENGER, set_alias

if TYPE_CHECKING:
    import pandas as pd

HEADLINE = ("dice_lesion", "sham_fp_rate", "detection_rate", "hd95_mm", "volume_bias_mm3", "volume_icc",
            "sham_fp_volume_mm3")  # metrics/test.json and registry tags: volume_* per model, lesion scans only


def log_test_results(run: Mapping, summary: Mapping, artifacts: Sequence[Path]) -> dict[str, float]:
    """Log the named test metrics (:mod:`lesionseg.evaluation.summary`) and files into the training run
    ``run`` (its run.json), and tag its registered version with the headline ones."""
    client = MlflowClient()
    metrics = {k: float(v) for k, v in summary.items() if v is not None and math.isfinite(float(v))}
    now = int(time.time() * 1000)
    client.log_batch(run["run_id"], metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag("evaluation_space", "native")])
    for path in artifacts:
        if Path(path).is_dir():
            client.log_artifacts(run["run_id"], str(path), artifact_path=f"evaluation/{Path(path).name}")
        elif Path(path).exists():  # e.g. no overlay folder when none was asked for
            client.log_artifact(run["run_id"], str(path), artifact_path="evaluation")
    if run.get("version"):
        for key in HEADLINE:
            if key in metrics:
                client.set_model_version_tag(run["registered_model"], run["version"], key, f"{metrics[key]:.4g}")
    return metrics


def choose_challenger(runs: Sequence[Mapping]) -> Mapping | None:
    """The run of this pipeline with the best validation Dice (test data never picks a model) gets
    ``@challenger``; ties go to the newer version."""
    registered = [r for r in runs if r.get("version")]
    if not registered:
        return None
    best = max(registered, key=lambda r: (r["best_val_dice"], int(r["version"])))
    set_alias(best["registered_model"], CHALLENGER, str(best["version"]))
    return best


def metric_name(key: str) -> str:
    """``key`` as an MLflow metric name: every character MLflow refuses (it allows alphanumerics, ``_ - . : /``
    and spaces) becomes ``_``, and ``/`` too, so that a report key never opens a folder in the UI."""
    return re.sub(r"[^A-Za-z0-9_.: -]", "_", key)


def log_study_report(report_dir: Path, headline: Mapping, project_root: Path, dvc_exp_name: str = "") -> str:
    """One MLflow "study" run (experiment lesionseg-eval) holding the report's files and headline numbers."""
    experiment_id = store.ensure_experiment(store.EXPERIMENTS["report"], project_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name="study-report") as run:
        mlflow.set_tags({"kind": "study", **lineage.git_tags(project_root), **lineage.dvc_tags("report", dvc_exp_name)})
        numbers = {metric_name(k): v for k, v in flatten(headline).items() if isinstance(v, (int, float))}
        mlflow.log_metrics({k: float(v) for k, v in numbers.items()})
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        return run.info.run_id


def score_scans(segmenter: Segmenter, raw_dir: Path, case_ids: Sequence[str]) -> tuple["pd.DataFrame", dict]:
    """Segment the raw scans ``case_ids`` (into a temporary folder) and score them against their labels: the
    per-case table of :func:`lesionseg.evaluation.evaluate.score_folder`, and ``{case id: (label, prediction)}``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lesionseg-scores-") as scratch:
        predictions = predict_cases(segmenter, raw_dir, case_ids, Path(scratch) / "predictions")
        return score_folder(predictions, raw_dir, case_ids)


def at_precision(segmenter, amp: bool):
    """``segmenter`` predicting with ``amp`` when it is a :class:`Segmenter`; any other object with a
    ``segment`` method (a tool's stand-in) as it is."""
    return dataclasses.replace(segmenter, amp=amp) if isinstance(segmenter, Segmenter) else segmenter


def evaluate_and_log(models: Sequence[tuple[str, Path]], raw_dir: Path, test_ids: Sequence[str], layout: Layout,
                     *, n_overlays: int = 2, amp: bool = False) -> tuple[dict[str, dict], list[dict]]:
    """Each ``(name, model_dir)``: segment the raw test scans on their own grids into ``predictions/<name>/``, score
    that folder against the labels (per-case CSV, summary JSON and overlays under the layout), log them into the
    model's run; returns the headline numbers per name and the runs' run.json. ``amp``: the ``train.amp`` the
    models were trained with, so that test predictions take validation's path (same precision, inference mode)."""
    headline, runs = {}, []
    for name, model_dir in models:
        run_info = read_json(model_dir / "run.json")
        files = {"csv": layout.test_metrics_dir / f"{name}.csv", "json": layout.test_metrics_dir / f"{name}.json",
                 "overlays": layout.overlays_dir / name}
        segmenter = at_precision(Segmenter.from_file(model_dir / "model.pt"), amp)
        predictions = predict_cases(segmenter, raw_dir, test_ids, layout.predictions_dir(name))
        _, summary = evaluate_folder(predictions, raw_dir, case_ids=test_ids, per_case_csv=files["csv"],
                                     summary_json=files["json"], images_dir=raw_dir, overlay_dir=files["overlays"],
                                     n_overlays=n_overlays, title=name)
        log_test_results(run_info, summary, list(files.values()))
        headline[name] = {**{k: summary[k] for k in HEADLINE}, "val_dice": run_info["best_val_dice"]}
        runs.append(run_info)
    return headline, runs
