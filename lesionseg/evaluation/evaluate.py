"""Evaluate a trained model on test scans in native space: each raw scan goes through the same path as
``lesionseg predict`` (prepare -> network -> back to the scan's own grid) and is scored against its manual
label on that grid. Writes an nnU-Net-style per-case CSV and ``summary.json`` with the named metrics of
:mod:`lesionseg.evaluation.summary`, and overlay figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from nibabel.affines import voxel_sizes

from lesionseg.data.dataset import read_cases
from lesionseg.data.io import read_volume, write_json, write_text
from lesionseg.evaluation.metrics import case_metrics
from lesionseg.evaluation.overlays import render_slices
from lesionseg.evaluation.summary import case_metrics as named_case_metrics
from lesionseg.evaluation.summary import image_diagonal_mm, summarize
from lesionseg.inference import Segmenter

PER_CASE_COLUMNS = ["case_id", "group", "dice", "hd95_mm", "hd95_mm_penalised", "outcome", "detected",
                    "false_alarm", "true_volume_mm3", "pred_volume_mm3", "volume_error_mm3", "diagonal_mm"]


def trained_model_dirs(finetune_root: str | Path, tuned_root: str | Path) -> list[tuple[str, Path]]:
    """(name, directory) of every trained target model: ``finetune_root/*`` under their own names and
    ``tuned_root/nN-rR`` as ``tuned-nN-rR``; the names key metrics/test/ and the report."""
    found = [(d.name, d) for d in sorted(Path(finetune_root).glob("*/"))]
    return found + [(f"tuned-{d.name}", d) for d in sorted(Path(tuned_root).glob("*/"))]


def score_scans(segmenter: Segmenter, raw_dir: str | Path, case_ids: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Segment each raw scan of ``case_ids`` on its own grid and score it; returns the per-case table (named
    columns of :data:`PER_CASE_COLUMNS`) and the predicted masks by case id."""
    records = {r.case_id: r for r in read_cases(raw_dir)}
    rows, masks = [], {}
    for case_id in case_ids:
        record = records[case_id]
        image, label = read_volume(record.image), read_volume(record.label)
        pred = segmenter.segment(image)
        spacing = tuple(float(s) for s in voxel_sizes(image.affine))
        scores = case_metrics(pred, label.data > 0, spacing)
        rows.append({"case_id": case_id, "group": "MCAo" if label.data.any() else "sham",
                     "true_volume_mm3": scores["gt_volume_mm3"], "diagonal_mm": image_diagonal_mm(pred.shape, spacing),
                     **{k: v for k, v in scores.items() if k != "gt_volume_mm3"}})
        masks[case_id] = (image, label, pred)
    table = named_case_metrics(pd.DataFrame(rows))
    return table[PER_CASE_COLUMNS], masks


def evaluate_model(segmenter: Segmenter, raw_dir: str | Path, test_ids: Sequence[str], *, per_case_csv: str | Path,
                   summary_json: str | Path, overlay_dir: str | Path | None = None, n_overlays: int = 2,
                   title: str = "") -> tuple[pd.DataFrame, dict]:
    """Score ``segmenter`` on the raw test scans in native space; write the per-case CSV, the summary
    (nnU-Net style: ``metric_per_case`` and the named means) and overlays of the ``n_overlays`` largest
    lesions. Returns the table and the named summary."""
    table, masks = score_scans(segmenter, raw_dir, test_ids)
    write_text(per_case_csv, table.to_csv(index=False, float_format="%.6g"))
    summary = summarize(table)
    write_json(summary_json, {"space": "native", "metric_per_case": table.to_dict(orient="records"),
                              "mean": summary})
    if overlay_dir is not None:
        for case_id in table.sort_values("true_volume_mm3", ascending=False)["case_id"][:n_overlays]:
            image, label, pred = masks[case_id]
            render_slices(image.data, image.affine, Path(overlay_dir) / f"{case_id}.png",
                          label=(label.data > 0).astype("uint8"), prediction=pred, title=f"{title} | {case_id}")
    return table, summary
