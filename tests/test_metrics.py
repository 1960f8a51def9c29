"""Tests for lesionseg.metrics: hand-computed answers, MedPy equality, empty-mask conventions, summary.json."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from lesionseg.evaluation import metrics
from lesionseg.evaluation.metrics import case_metrics, dice, hd95


@pytest.fixture
def medpy_binary():
    """MedPy's reference metrics; only the tests that compare with MedPy skip when it is missing."""
    return pytest.importorskip("medpy.metric.binary")


def box_mask(shape, *slices) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slices)] = True
    return mask


def smooth_blob(shape, seed: int, sigma, level: float = 0.3) -> np.ndarray:
    """Random smooth blob(s): thresholded Gaussian-filtered noise; large ones reach the image border."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return noise > level * noise.std()


def strict_json(text: str):
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


# ---------------------------------------------------------------------------------------------- dice
def test_dice_identical_masks_is_one():
    mask = box_mask((6, 7, 5), slice(1, 4), slice(2, 6), slice(0, 3))
    assert dice(mask, mask) == 1.0


def test_dice_of_partly_overlapping_boxes_by_hand():
    a = box_mask((10, 6, 6), slice(0, 4), slice(0, 4), slice(0, 4))  # 4*4*4 = 64 voxels
    b = box_mask((10, 6, 6), slice(2, 8), slice(0, 4), slice(0, 2))  # 6*4*2 = 48 voxels
    # overlap: x 2..3, y 0..3, z 0..1 -> 2*4*2 = 16 voxels; Dice = 2*16 / (64 + 48) = 2/7
    assert dice(a, b) == pytest.approx(2 / 7, rel=1e-12)
    half = box_mask((10, 6, 6), slice(2, 6), slice(0, 4), slice(0, 4))  # a shifted by half its width
    assert dice(a, half) == 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_dice_accepts_zero_one_arrays_of_any_dtype(dtype):
    a = box_mask((5, 5, 5), slice(0, 2), slice(0, 5), slice(0, 5))
    b = box_mask((5, 5, 5), slice(1, 3), slice(0, 5), slice(0, 5))
    assert dice(a.astype(dtype), b.astype(dtype)) == dice(a, b) == 0.5


def test_dice_empty_mask_conventions():
    empty = np.zeros((4, 4, 4), dtype=bool)
    lesion = box_mask((4, 4, 4), slice(1, 3), slice(1, 3), slice(1, 3))
    assert math.isnan(dice(empty, empty))
    assert dice(empty, lesion) == 0.0
    assert dice(lesion, empty) == 0.0


# ---------------------------------------------------------------------------------------------- input errors
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        hd95(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1))


@pytest.mark.parametrize("bad", [0.5, 2, -1, np.nan])
def test_non_binary_values_are_rejected(bad):
    pred = np.zeros((3, 3, 3))
    pred[1, 1, 1] = bad
    with pytest.raises(ValueError, match="pred must be binary"):
        case_metrics(pred, np.zeros((3, 3, 3)), (1, 1, 1))


@pytest.mark.parametrize(
    "spacing", [(1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, math.inf, 1.0), 1.0]
)
def test_bad_spacing_is_rejected(spacing):
    mask = box_mask((4, 4, 4), slice(1, 3), slice(1, 3), slice(1, 3))
    with pytest.raises(ValueError, match="spacing"):
        hd95(mask, mask, spacing)


# ---------------------------------------------------------------------------------------------- hd95 by hand
def test_hd95_identical_masks_is_zero():
    mask = box_mask((8, 9, 6), slice(2, 6), slice(1, 7), slice(1, 5))
    assert hd95(mask, mask, (0.1, 0.1, 0.5)) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hd95_of_cube_shifted_along_fine_axis(k):
    """A 10-voxel cube and the same cube shifted by k voxels along axis 0 (spacing 0.1 mm; others 0.4, 0.5 mm).

    Per direction (A -> B; B -> A is the mirror image), with n = 10 and 4n - 4 = 36 lateral voxels
    per x-layer and (n-2)^2 = 64 voxels inside each x-face:
      lateral voxels in the overlapping layers have a B surface voxel at the same place: 0 mm, (n-k)*36;
      lateral voxels in layer x < k reach B's lateral surface at layer k: (k-x)*0.1 mm, 36 each;
      x-face voxels reach B's x-face k layers away: k*0.1 mm, 2*64 of them -- nothing closer, since
      any other surface voxel of B is at least one voxel (>= 0.4 mm >= k*0.1 mm) off in y or z.
    So k*0.1 mm holds (36 + 128) / 488 = 34% of the pooled distances, the top 5% lies inside that
    block, and the 95th percentile is exactly k * 0.1 mm (and so is the maximum).
    """
    spacing = (0.1, 0.4, 0.5)
    a = box_mask((16, 14, 14), slice(2, 12), slice(2, 12), slice(2, 12))
    b = np.roll(a, k, axis=0)
    assert hd95(a, b, spacing) == pytest.approx(k * 0.1, rel=1e-12)
    assert hd95(b, a, spacing) == pytest.approx(k * 0.1, rel=1e-12)


def test_hd95_single_voxels_at_known_distance():
    a = box_mask((6, 6, 6), slice(1, 2), slice(2, 3), slice(1, 2))
    b = box_mask((6, 6, 6), slice(4, 5), slice(2, 3), slice(3, 4))
    # offset (3, 0, 2) voxels at spacing (0.1, 0.5, 0.2) mm: sqrt(0.3^2 + 0.4^2) = 0.5 mm
    assert hd95(a, b, (0.1, 0.5, 0.2)) == pytest.approx(0.5, rel=1e-12)


def test_hd95_is_the_percentile_of_the_pooled_distances():
    """A = voxels at z = 0 and z = 10, B = one voxel at z = 2, spacing 0.5 mm along z.

    A -> B gives 1.0 and 4.0 mm, B -> A gives 1.0 mm; pooled and sorted [1, 1, 4], the 95th
    percentile (linear) sits at rank 0.95 * 2 = 1.9: 1 + 0.9 * (4 - 1) = 3.7 mm. (The larger of the
    two directed percentiles, MONAI's choice, would be 3.85 mm.)
    """
    a = np.zeros((3, 3, 12), dtype=bool)
    a[1, 1, 0] = a[1, 1, 10] = True
    b = box_mask((3, 3, 12), slice(1, 2), slice(1, 2), slice(2, 3))
    assert hd95(a, b, (1.0, 1.0, 0.5)) == pytest.approx(3.7, rel=1e-12)
    assert hd95(b, a, (1.0, 1.0, 0.5)) == pytest.approx(3.7, rel=1e-12)


def test_hd95_empty_mask_conventions():
    empty = np.zeros((5, 5, 5), dtype=np.uint8)
    lesion = box_mask((5, 5, 5), slice(1, 3), slice(1, 3), slice(1, 3))
    assert math.isnan(hd95(empty, empty, (1, 1, 1)))
    assert hd95(empty, lesion, (1, 1, 1)) == math.inf
    assert hd95(lesion, empty, (1, 1, 1)) == math.inf


# ---------------------------------------------------------------------------------------------- hd95 vs MedPy
BLOB_CASES = [
    # shape, spacing, sigma, seeds: blobs of thresholded smooth noise fill much of the volume and touch its border
    ((40, 36, 12), (0.1, 0.1, 0.5), (3, 3, 1), (1, 2)),
    ((33, 27, 9), (0.15, 0.12, 0.7), (2, 2, 1), (3, 4)),
    ((31, 17, 23), (0.25, 1.0, 0.5), (2, 1, 2), (5, 6)),
    ((48, 40), (0.1, 0.3), (3, 3), (7, 8)),
]


@pytest.mark.parametrize("shape,spacing,sigma,seeds", BLOB_CASES)
@pytest.mark.parametrize("method", [None, "edt", "kdtree"])
def test_hd95_matches_medpy_on_random_blobs(shape, spacing, sigma, seeds, method, medpy_binary):
    pred, gt = smooth_blob(shape, seeds[0], sigma), smooth_blob(shape, seeds[1], sigma)
    assert pred.any() and gt.any()
    touches = [pred.take(0, axis=ax).any() or pred.take(-1, axis=ax).any() for ax in range(pred.ndim)]
    assert any(touches)  # the border case is exercised
    expected = medpy_binary.hd95(pred, gt, voxelspacing=spacing)
    got = float(np.percentile(metrics._surface_distances(pred, gt, spacing, method), 95))
    assert abs(got - expected) < 1e-6
    assert abs(hd95(pred, gt, spacing) - expected) < 1e-6


@pytest.mark.parametrize("method", ["edt", "kdtree"])
def test_hd95_matches_medpy_for_masks_touching_the_image_corner_and_filling_it(method, medpy_binary):
    spacing = (0.2, 0.3, 0.9)
    corner = box_mask((12, 10, 7), slice(0, 6), slice(0, 5), slice(0, 4))
    shifted = box_mask((12, 10, 7), slice(0, 8), slice(2, 10), slice(3, 7))
    full = np.ones((12, 10, 7), dtype=bool)
    for a, b in [(corner, shifted), (full, shifted), (full, corner)]:
        expected = medpy_binary.hd95(a, b, voxelspacing=spacing)
        got = float(np.percentile(metrics._surface_distances(a, b, spacing, method), 95))
        assert abs(got - expected) < 1e-6
    assert hd95(full, full, spacing) == 0.0


def test_hd95_matches_medpy_with_a_far_stray_blob(medpy_binary):
    """A small false-positive island far from the lesion makes the union box large (the KD-tree path)."""
    spacing = (0.1, 0.1, 0.5)
    gt = box_mask((64, 64, 16), slice(5, 20), slice(8, 22), slice(2, 9))
    pred = np.roll(gt, (2, -1, 1), axis=(0, 1, 2))
    pred[60:62, 60:63, 14:16] = True
    expected = medpy_binary.hd95(pred, gt, voxelspacing=spacing)
    assert abs(hd95(pred, gt, spacing) - expected) < 1e-6


# ---------------------------------------------------------------------------------------------- case_metrics
def test_case_metrics_detected_with_volumes():
    spacing = (0.1, 0.2, 0.5)  # 0.01 mm^3 per voxel
    gt = box_mask((10, 10, 10), slice(2, 6), slice(2, 6), slice(2, 6))  # 64 voxels
    pred = box_mask((10, 10, 10), slice(3, 7), slice(2, 6), slice(2, 6))  # 64 voxels, 48 shared
    row = case_metrics(pred, gt, spacing)
    assert set(row) == {"dice", "hd95_mm", "pred_volume_mm3", "gt_volume_mm3", "outcome"}
    assert row["outcome"] == "detected"
    assert row["dice"] == pytest.approx(2 * 48 / 128)
    assert row["hd95_mm"] == pytest.approx(0.1, rel=1e-12)  # shift by one voxel along the 0.1 mm axis
    assert row["pred_volume_mm3"] == pytest.approx(0.64)
    assert row["gt_volume_mm3"] == pytest.approx(0.64)


@pytest.mark.parametrize(
    "has_pred,has_gt,outcome,expected_dice,expected_hd",
    [
        (False, False, "true_empty", math.nan, math.nan),
        (False, True, "missed", 0.0, math.inf),
        (True, False, "false_alarm", 0.0, math.inf),
    ],
)
def test_case_metrics_empty_mask_outcomes(has_pred, has_gt, outcome, expected_dice, expected_hd):
    lesion = box_mask((6, 6, 4), slice(1, 4), slice(1, 4), slice(1, 3))  # 18 voxels
    empty = np.zeros_like(lesion)
    row = case_metrics(lesion if has_pred else empty, lesion if has_gt else empty, (0.5, 0.5, 2.0))
    assert row["outcome"] == outcome
    assert row["dice"] == expected_dice or (math.isnan(row["dice"]) and math.isnan(expected_dice))
    assert row["hd95_mm"] == expected_hd or (math.isnan(row["hd95_mm"]) and math.isnan(expected_hd))
    assert row["pred_volume_mm3"] == (9.0 if has_pred else 0.0)  # 18 voxels * 0.5 mm^3
    assert row["gt_volume_mm3"] == (9.0 if has_gt else 0.0)
