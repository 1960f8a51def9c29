"""Native-space evaluation: predictions are written on each scan's own grid (whatever its orientation, spacing and
dtype), and a folder of predictions is scored against a folder of labels, as nnU-Net does, for any tool's masks."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lesionseg.cli import main
from lesionseg.errors import DataError
from lesionseg.evaluation.evaluate import evaluate_folder, score_folder
from lesionseg.inference import predict_cases


def score_scans(segmenter, raw_dir, case_ids):
    """What the evaluate stage does per model: predictions on disk, then folder against folder."""
    predictions = predict_cases(segmenter, raw_dir, case_ids, Path(raw_dir).parent / "predictions")
    return score_folder(predictions, raw_dir, case_ids)


def evaluate_model(segmenter, raw_dir, case_ids, **kw):
    predictions = predict_cases(segmenter, raw_dir, case_ids, Path(raw_dir).parent / "predictions")
    return evaluate_folder(predictions, raw_dir, case_ids=case_ids, **kw)

SHAPE = (12, 10, 6)
SPACING = (0.2, 0.3, 0.7)  # anisotropic, mm


class FixedSegmenter:
    """Stands in for a trained model: predicts a known mask on the scan's own grid (as Segmenter.segment does)."""

    def __init__(self, masks):
        self.masks = masks

    def segment(self, volume):
        assert volume.data.shape == SHAPE, "evaluation must hand over the scan on its own grid"
        return self.masks[volume.data.flat[0]]


def _dataset(root, labels):
    """An nnU-Net raw dataset whose scans are LAS-oriented (x flipped), int16 with scl_slope."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    affine[0, 3] = SPACING[0] * (SHAPE[0] - 1)
    for i, label in enumerate(labels):
        image = np.full(SHAPE, i, dtype=np.int16)  # the first voxel tells the stub which case it is
        img = nib.Nifti1Image(image, affine)
        img.header.set_slope_inter(1.0, 0.0)
        nib.save(img, str(root / "imagesTr" / f"m_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(root / "labelsTr" / f"m_{i:03d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2w"}, "labels": {"background": 0,
                                       "lesion": 1}, "numTraining": len(labels), "file_ending": ".nii.gz"}))


def test_native_space_dice_equals_a_hand_computation_on_an_las_anisotropic_int16_scan(tmp_path):
    truth = np.zeros(SHAPE, bool)
    truth[2:6, 3:7, 1:4] = True                      # 4 x 4 x 3 = 48 voxels
    pred = np.zeros(SHAPE, bool)
    pred[3:7, 3:7, 1:4] = True                       # 48 voxels, 36 shared
    sham, alarm = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    alarm[0, 0, 0] = True
    _dataset(tmp_path / "raw", [truth, sham])
    table, _ = score_scans(FixedSegmenter({0: pred, 1: alarm}), tmp_path / "raw", ["m_000", "m_001"])
    lesion, false_alarm = table.iloc[0], table.iloc[1]
    assert lesion["dice"] == pytest.approx(2 * 36 / (48 + 48))
    voxel = np.prod(SPACING)
    assert lesion["true_volume_mm3"] == pytest.approx(48 * voxel) and lesion["volume_error_mm3"] == pytest.approx(0.0)
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING))))
    assert bool(false_alarm["false_alarm"]) and false_alarm["hd95_mm_penalised"] == pytest.approx(diagonal)


def test_a_miss_raises_mean_hd95_and_lowers_detection_rate(tmp_path):
    truth = np.zeros(SHAPE, bool)
    truth[2:6, 3:7, 1:4] = True
    _dataset(tmp_path / "raw", [truth, truth])
    kw = dict(per_case_csv=tmp_path / "c.csv", summary_json=tmp_path / "s.json")
    _, found = evaluate_model(FixedSegmenter({0: truth, 1: truth}), tmp_path / "raw", ["m_000", "m_001"], **kw)
    _, missed = evaluate_model(FixedSegmenter({0: truth, 1: np.zeros(SHAPE, bool)}), tmp_path / "raw",
                               ["m_000", "m_001"], **kw)
    assert (found["detection_rate"], missed["detection_rate"]) == (1.0, 0.5)
    assert missed["hd95_mm"] > found["hd95_mm"] == 0.0
    assert json.loads((tmp_path / "s.json").read_text())["space"] == "native"


def test_predictions_are_on_each_scans_grid_and_open_over_it(tmp_path):
    truth = np.zeros(SHAPE, bool)
    truth[2:6, 3:7, 1:4] = True
    _dataset(tmp_path / "raw", [truth, truth])
    out = predict_cases(FixedSegmenter({0: truth, 1: truth}), tmp_path / "raw", ["m_001"], tmp_path / "pred")
    written = nib.load(str(out / "m_001.nii.gz"))
    scan = nib.load(str(tmp_path / "raw" / "imagesTr" / "m_001_0000.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == ["m_001.nii.gz"]
    assert written.shape == scan.shape and np.allclose(written.affine, scan.affine)
    assert written.get_data_dtype() == np.uint8 and np.array_equal(np.asanyarray(written.dataobj), truth)


def test_cli_evaluate_scores_any_tools_folder_against_a_labels_folder(tmp_path, capsys):
    """Another tool's masks (a plain folder, float32 0/1) against labels in a plain folder: the per-case table."""
    truth = np.zeros(SHAPE, bool)
    truth[2:6, 3:7, 1:4] = True
    pred = np.zeros(SHAPE, np.float32)
    pred[3:7, 3:7, 1:4] = 1.0
    affine = np.diag([*SPACING, 1.0])
    for folder, name, data in (("ref", "a", truth.astype(np.uint8)), ("ref", "b", truth.astype(np.uint8)),
                               ("pred", "a", pred), ("pred", "b", truth.astype(np.float32))):
        (tmp_path / folder).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / folder / f"{name}.nii.gz"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "-o", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "per_case.csv")
    assert list(table["case_id"]) == ["a", "b"]
    assert table["dice"].tolist() == pytest.approx([0.75, 1.0])
    assert "2 cases (2 with a lesion): dice_lesion 0.8750" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mean"]["dice_lesion"] == pytest.approx(0.875)


@pytest.mark.parametrize("problem, says", [
    ("no label", "no label b.nii.gz in"),
    ("other grid", "differ from its label"),
    ("empty", "no CASE.nii.gz predictions to score"),
])
def test_folder_evaluation_refuses_in_one_line(tmp_path, problem, says):
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    affine = np.diag([*SPACING, 1.0])
    label = nib.Nifti1Image(np.zeros(SHAPE, np.uint8), affine)
    nib.save(label, str(tmp_path / "ref" / "a.nii.gz"))
    if problem == "no label":
        nib.save(label, str(tmp_path / "pred" / "b.nii.gz"))
    if problem == "other grid":
        nib.save(nib.Nifti1Image(np.zeros(SHAPE[::-1], np.uint8), affine), str(tmp_path / "pred" / "a.nii.gz"))
    with pytest.raises(DataError) as err:
        score_folder(tmp_path / "pred", tmp_path / "ref")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_evaluation_does_not_import_inference():
    """Scoring is pure: a fresh interpreter imports the evaluation package without the network code."""
    code = ("import sys, lesionseg.evaluation.evaluate; "
            "print(sorted(m for m in sys.modules if m in ('lesionseg.inference', 'torch', 'lesionseg.networks')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
