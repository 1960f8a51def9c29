"""Native-space evaluation: scans are scored on their own grid, whatever their orientation, spacing and dtype."""
import json

import nibabel as nib
import numpy as np
import pytest

from lesionseg.evaluation.evaluate import evaluate_model, score_scans

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
