"""Evaluate a trained model on a test split: per-case table, nnU-Net-style summary, overlay figures."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lesionseg.data.io import write_text
from lesionseg.data.preprocess import load_manifest, load_prepared_case
from lesionseg.inference import load_model_file, predict_mask
from lesionseg.metrics import case_metrics, summarize, write_summary_json
from lesionseg.visualize import render_slices

PER_CASE_COLUMNS = ["case_id", "group", "lesion_volume_mm3", "dice", "hd95_mm", "pred_volume_mm3", "outcome"]


def trained_model_dirs(project_root: str | Path) -> list[tuple[str, Path]]:
    """(name, directory) of every trained target model: ``models/finetune/*`` under their own names and
    ``models/tuned/nN`` as ``tuned-nN``; the names key metrics/test/ and the report."""
    root = Path(project_root)
    found = [(d.name, d) for d in sorted((root / "models" / "finetune").glob("*/"))]
    return found + [(f"tuned-{d.name}", d) for d in sorted((root / "models" / "tuned").glob("*/"))]


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the array axes of ``affine``."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def evaluate_model(
    model_file: str | Path,
    prepared_dir: str | Path,
    test_ids: Sequence[str],
    *,
    per_case_csv: str | Path,
    summary_json: str | Path,
    overlay_dir: str | Path | None = None,
    n_overlays: int = 2,
) -> tuple[pd.DataFrame, dict]:
    """Predict every test case, score it (Dice, HD95 in mm) and write the table, summary and overlays.

    Overlays are drawn for the ``n_overlays`` test cases with the largest lesions, on the slices with the
    most lesion (image, ground-truth outline, prediction outline).
    """
    model, roi_size = load_model_file(model_file)
    groups = {c["case_id"]: c for c in load_manifest(prepared_dir)["cases"]}
    rows, predictions = [], {}
    for case_id in test_ids:
        case = load_prepared_case(prepared_dir, case_id)
        pred = predict_mask(model, case.image, roi_size)
        metrics = case_metrics(pred, case.label, spacing_of(case.affine))
        rows.append({"case_id": case_id, "group": groups[case_id]["group"],
                     "lesion_volume_mm3": metrics["gt_volume_mm3"], **metrics})
        predictions[case_id] = (case, pred)
    table = pd.DataFrame(rows)[PER_CASE_COLUMNS]
    write_text(per_case_csv, table.to_csv(index=False, float_format="%.6g"))
    summary = summarize(table)
    write_summary_json(summary_json, table, extra={"model_file": str(model_file), "n_test": len(test_ids)})
    if overlay_dir is not None:
        largest = table.sort_values("lesion_volume_mm3", ascending=False)["case_id"][:n_overlays]
        for case_id in largest:
            case, pred = predictions[case_id]
            render_slices(case.image, case.affine, Path(overlay_dir) / f"{case_id}.png", label=case.label,
                          prediction=pred, title=f"{Path(model_file).parent.name} | {case_id}")
    return table, summary
