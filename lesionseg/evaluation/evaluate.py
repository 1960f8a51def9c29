"""Score a folder of segmentations against a folder of labels, as nnU-Net's ``compute_metrics_on_folder`` does:
any tool's masks (``CASE.nii.gz``, on each scan's own grid) against the manual labels (a plain folder of
``CASE.nii.gz`` or an nnU-Net raw dataset's ``labelsTr/``). Writes an nnU-Net-style per-case CSV and
``summary.json`` with the named metrics of :mod:`lesionseg.evaluation.summary`, and overlay figures when the
scans are at hand. Pure: nothing here runs a network (predictions come from :mod:`lesionseg.inference`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes

from lesionseg.data.dataset import AFFINE_TOLERANCE_MM, FILE_ENDINGS
from lesionseg.data.io import Volume, read_volume, write_json, write_text
from lesionseg.errors import DataError
from lesionseg.evaluation.metrics import case_metrics
from lesionseg.evaluation.overlays import render_slices
from lesionseg.evaluation.summary import case_metrics as named_case_metrics
from lesionseg.evaluation.summary import image_diagonal_mm, summarize

PER_CASE_COLUMNS = ["case_id", "group", "dice", "hd95_mm", "hd95_mm_penalised", "outcome", "detected",
                    "false_alarm", "true_volume_mm3", "pred_volume_mm3", "volume_error_mm3", "diagonal_mm"]


def trained_model_dirs(finetune_root: str | Path, tuned_root: str | Path) -> list[tuple[str, Path]]:
    """(name, directory) of every trained target model: ``finetune_root/*`` under their own names and
    ``tuned_root/nN-rR`` as ``tuned-nN-rR``; the names key predictions/, metrics/test/ and the report."""
    found = [(d.name, d) for d in sorted(Path(finetune_root).glob("*/"))]
    return found + [(f"tuned-{d.name}", d) for d in sorted(Path(tuned_root).glob("*/"))]


def segmentation_files(folder: str | Path) -> dict[str, Path]:
    """``{case id: file}`` of the masks in ``folder`` (``CASE.nii.gz`` / ``CASE.nii``; an nnU-Net raw dataset's
    ``labelsTr/`` when ``folder`` is one)."""
    folder = Path(folder)
    if (folder / "labelsTr").is_dir():
        folder = folder / "labelsTr"
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass a folder of CASE.nii.gz masks")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        ending = next((e for e in FILE_ENDINGS if path.name.endswith(e)), None)
        if ending and path.is_file():
            found[path.name[: -len(ending)]] = path
    return found


def score_folder(pred_dir: str | Path, ref_dir: str | Path,
                 case_ids: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, tuple[Volume, Volume]]]:
    """Score each prediction in ``pred_dir`` (or those of ``case_ids``) against its label in ``ref_dir`` on the
    label's own grid. Returns the per-case table (:data:`PER_CASE_COLUMNS`, ``group`` MCAo when the label has a
    lesion) and ``{case id: (label, prediction)}``. A prediction without a label, a requested case without a
    prediction, or a prediction on another grid is a :class:`DataError` naming the file."""
    preds, refs = segmentation_files(pred_dir), segmentation_files(ref_dir)
    wanted = list(case_ids) if case_ids is not None else list(preds)
    if not wanted:
        raise DataError(f"{pred_dir}: no CASE.nii.gz predictions to score")
    rows, volumes = [], {}
    for case_id in wanted:
        if case_id not in preds:
            raise DataError(f"{pred_dir}: no prediction {case_id}.nii.gz; predict every case, or score fewer")
        if case_id not in refs:
            raise DataError(f"{preds[case_id]}: no label {case_id}.nii.gz in {ref_dir}; pass the labels folder")
        label, pred = read_volume(refs[case_id]), read_volume(preds[case_id])
        _check_same_grid(pred, label, preds[case_id], refs[case_id])
        spacing = tuple(float(s) for s in voxel_sizes(label.affine))
        scores = case_metrics(pred.data > 0.5, label.data > 0.5, spacing)
        rows.append({"case_id": case_id, "group": "MCAo" if (label.data > 0.5).any() else "sham",
                     "true_volume_mm3": scores["gt_volume_mm3"],
                     "diagonal_mm": image_diagonal_mm(label.data.shape, spacing),
                     **{k: v for k, v in scores.items() if k != "gt_volume_mm3"}})
        volumes[case_id] = (label, pred)
    return named_case_metrics(pd.DataFrame(rows))[PER_CASE_COLUMNS], volumes


def _check_same_grid(pred: Volume, label: Volume, pred_path: Path, label_path: Path) -> None:
    if pred.data.shape != label.data.shape or np.abs(pred.affine - label.affine).max() > AFFINE_TOLERANCE_MM:
        raise DataError(f"{pred_path}: shape {pred.data.shape} / affine differ from its label {label_path} "
                        f"{label.data.shape}; write predictions on each scan's own grid (lesionseg predict does)")


def evaluate_folder(pred_dir: str | Path, ref_dir: str | Path, *, per_case_csv: str | Path,
                    summary_json: str | Path, case_ids: Sequence[str] | None = None,
                    images_dir: str | Path | None = None, overlay_dir: str | Path | None = None,
                    n_overlays: int = 2, title: str = "") -> tuple[pd.DataFrame, dict]:
    """:func:`score_folder`, then the per-case CSV, the summary (nnU-Net style: ``metric_per_case`` and the named
    means) and, given the scans (``images_dir``: an nnU-Net raw dataset), overlays of the ``n_overlays`` largest
    lesions. Returns the table and the named summary."""
    table, volumes = score_folder(pred_dir, ref_dir, case_ids)
    write_text(per_case_csv, table.to_csv(index=False, float_format="%.6g"))
    summary = summarize(table)
    write_json(summary_json, {"space": "native", "metric_per_case": table.to_dict(orient="records"),
                              "mean": summary})
    if overlay_dir is not None and images_dir is not None:
        for case_id in table.sort_values("true_volume_mm3", ascending=False)["case_id"][:n_overlays]:
            image = read_volume(Path(images_dir) / "imagesTr" / f"{case_id}_0000.nii.gz")
            label, pred = volumes[case_id]
            render_slices(image.data, image.affine, Path(overlay_dir) / f"{case_id}.png",
                          label=(label.data > 0.5).astype("uint8"), prediction=(pred.data > 0.5).astype("uint8"),
                          title=f"{title} | {case_id}")
    return table, summary
