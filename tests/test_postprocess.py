"""The minimum lesion volume a model keeps: component removal, and its choice on validation cases."""
import nibabel as nib
import numpy as np
import pytest

import torch

from lesionseg.data.io import Volume
from lesionseg.inference import Segmenter
from lesionseg.postprocess import choose_min_lesion_volume, keep_inside_head, remove_small_lesions
from lesionseg.training.engine import selection_dice


def _blob(shape, center, radius):
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2).astype(np.uint8)


def test_removes_only_components_below_the_volume():
    lesion = _blob((20, 20, 20), (10, 10, 10), 4)  # 257 voxels
    speck = np.zeros_like(lesion)
    speck[1, 1, 1] = speck[1, 1, 2] = 1  # two voxels, one component
    mask = lesion | speck
    out = remove_small_lesions(mask, min_volume_mm3=0.5, voxel_mm3=0.1)  # the speck is 0.2 mm3
    assert out.dtype == mask.dtype
    np.testing.assert_array_equal(out, lesion)
    np.testing.assert_array_equal(remove_small_lesions(mask, 0.0, 0.1), mask)
    assert not remove_small_lesions(mask, 30.0, 0.1).any()  # 25.7 mm3 < 30: gone too


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[3, 3, 3] = 1  # 0.3 mm3 along a diagonal
    assert remove_small_lesions(mask, 0.25, 0.1).sum() == 3


def test_choice_empties_shams_without_costing_lesions():
    lesion = _blob((20, 20, 20), (10, 10, 10), 4)
    speck = np.zeros_like(lesion)
    speck[0, 0, 0] = 1
    preds = [lesion | speck, speck.copy(), lesion.copy()]
    labels = [lesion, np.zeros_like(lesion), lesion]
    chosen, means = choose_min_lesion_volume(preds, labels, voxel_mm3=0.1, score=selection_dice,
                                             candidates=(0.0, 0.25, 50.0))
    assert chosen == 0.25  # removes the 0.1 mm3 speck: the sham scores 1; 50 mm3 would erase the lesions
    assert means[0.25] == pytest.approx(1.0)
    assert means[0.0] < means[0.25] and means[50.0] < means[0.25]


def test_ties_keep_the_smallest_volume():
    lesion = _blob((12, 12, 12), (6, 6, 6), 3)
    chosen, _ = choose_min_lesion_volume([lesion], [lesion], voxel_mm3=0.1, score=selection_dice)
    assert chosen == 0.0


def test_mismatched_cases_are_refused():
    with pytest.raises(ValueError, match="one prediction per validation case"):
        choose_min_lesion_volume([np.zeros((2, 2, 2))], [], voxel_mm3=0.1, score=selection_dice)


def _head_scan(shape=(24, 24, 24)):
    """A bright ball (the head) in dark air, with a little noise."""
    rng = np.random.default_rng(0)
    return (_blob(shape, (12, 12, 11), 8) * 100.0 + rng.normal(0, 2, shape)).astype(np.float32)


def test_only_lesion_voxels_inside_the_head_are_kept():
    image = _head_scan()
    inside = _blob(image.shape, (12, 12, 11), 3)
    in_air = _blob(image.shape, (12, 12, 22), 1)  # above the head: air
    straddling = np.zeros_like(inside)
    straddling[12, 1:8, 11] = 1  # one component from the air (y < 4) into the head
    mask = inside | in_air | straddling
    out = keep_inside_head(mask, image)
    assert out.dtype == mask.dtype
    np.testing.assert_array_equal(out, inside | (straddling * (np.arange(24)[None, :, None] >= 4)))
    assert not keep_inside_head(in_air, image).any()
    np.testing.assert_array_equal(keep_inside_head(inside, image), inside)  # a lesion in the head is untouched
    with pytest.raises(ValueError, match="one grid"):
        keep_inside_head(mask, image[:-1])


class _Everywhere(torch.nn.Module):
    """A 'network' that marks lesion everywhere the scan is bright or in one box of air."""

    def forward(self, x):
        lesion = (x > 1.5).float()
        lesion[..., 10:14, 10:14, 21:24] = 1.0  # a block of air above the head
        return torch.cat([1 - lesion, lesion], dim=1) * 10


def test_the_segmenter_applies_head_only_as_the_model_stored_it():
    image = _head_scan()
    image[10:15, 10:15, 9:14] *= 2  # a bright lesion inside the head
    volume = Volume(image, np.diag([0.2, 0.2, 0.2, 1.0]), nib.Nifti1Header())
    prep = {"target_spacing": [0.2, 0.2, 0.2], "shape": list(image.shape), "clip_percentiles": [0.5, 99.5]}
    kept = Segmenter(_Everywhere(), [24, 24, 24], prep, {"head_only": False}).segment(volume)
    dropped = Segmenter(_Everywhere(), [24, 24, 24], prep, {"head_only": True}).segment(volume)
    assert kept[10:14, 10:14, 21:23].all() and not dropped[:, :, 20:].any()
    assert dropped.sum() > 0 and (dropped <= kept).all()  # the lesion in the head stays
