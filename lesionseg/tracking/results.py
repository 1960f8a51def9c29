"""Test results back into the training run and onto its registered version; the challenger alias."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from mlflow.tracking import MlflowClient

from lesionseg.tracking.registry import CHALLENGER, set_alias


def headline(summary: Mapping) -> dict[str, float]:
    """Final metrics named as DESIGN.md says (``test_dice_mean``, ``test_hd95_mm_mean``, counts...)."""
    out = {f"test_{k}_mean": v for k, v in summary["mean"].items()}
    out.update({f"test_{k}_median": v for k, v in summary.get("median", {}).items()})
    out.update({f"test_n_{k}": v for k, v in summary["counts"].items()})
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def log_test_results(run: Mapping, summary: Mapping, artifacts: Sequence[Path]) -> dict[str, float]:
    """Log test metrics and files into the training run ``run`` (its run.json) and tag its model version."""
    client = MlflowClient()
    metrics = headline(summary)
    for key, value in metrics.items():
        client.log_metric(run["run_id"], key, value)
    for path in artifacts:
        if Path(path).is_dir():
            client.log_artifacts(run["run_id"], str(path), artifact_path=f"evaluation/{Path(path).name}")
        else:
            client.log_artifact(run["run_id"], str(path), artifact_path="evaluation")
    if run.get("version"):
        for tag, key in (("test_dice", "test_dice_mean"), ("test_hd95_mm", "test_hd95_mm_mean")):
            if key in metrics:
                client.set_model_version_tag(run["registered_model"], run["version"], tag, f"{metrics[key]:.4f}")
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


def log_study_report(report_dir: Path, headline: Mapping, project_root: Path) -> str:
    """One MLflow "study" run (experiment lesionseg-eval) holding the report's files and headline numbers."""
    import mlflow

    from lesionseg.config import flatten
    from lesionseg.tracking import lineage, store

    experiment_id = store.ensure_experiment(store.EXPERIMENTS["report"], project_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name="study-report") as run:
        mlflow.set_tags({"kind": "study", **lineage.git_tags(project_root), **lineage.dvc_tags("report")})
        numbers = {k.replace("/", "_"): v for k, v in flatten(headline).items() if isinstance(v, (int, float))}
        mlflow.log_metrics({k: float(v) for k, v in numbers.items()})
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        return run.info.run_id
