"""Post-processing a trained model carries: lesions only inside the head, and the smallest lesion component it
keeps, chosen on validation data.

A lesion predicted in the air around the head is noise the network read as lesion (a sham of the demo's
thickest-slice, lowest-SNR cohort once carried 133 mm3 of "lesion" above the skull). No MCAo lesion can lie
there, so models trained now keep only the predicted voxels inside the head, before anything else
(``head_only``, stored with the model; models trained before it lack the key and keep their old output). The
head is :func:`lesionseg.data.preprocess.head_mask`, the mask preprocessing normalises over. The rule is per
voxel, not per component, so that it can never clear a predicted voxel inside the head (on the demo's 22 models
both gave the same test scores: 13 of 880 test predictions lost voxels in the air, three shams 25-136 mm3 each).

nnU-Net decides its post-processing (whether to keep only the largest component) on validation data after
training, and stores the decision with the model. Here the decision is a minimum lesion-component volume in mm3:
stray specks of a few voxels are what leave a sham scan non-empty, while real MCAo lesions are tens of mm3.
The candidate that maximises the mean validation selection score (Dice; a sham 1 when left empty, 0 otherwise:
:func:`lesionseg.training.engine.selection_dice`) is kept; ties go to the smaller volume (the least change).
Components are counted with scipy's labelling: MONAI's ``RemoveSmallObjects`` does the same but needs
scikit-image, which nothing else here uses.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from lesionseg.data.preprocess import head_mask

CANDIDATES_MM3 = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # below the smallest published mouse MCAo lesions (about 5 mm3)
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: a lesion touching at a corner is one lesion


def keep_inside_head(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``mask`` with every voxel outside the head of ``image`` (the scan on ``mask``'s grid) cleared; same dtype
    and shape."""
    if mask.shape != image.shape:
        raise ValueError(f"mask {mask.shape} and image {image.shape}: need one grid")
    if not mask.any():
        return mask
    return (mask * head_mask(image)).astype(mask.dtype)


def remove_small_lesions(mask: np.ndarray, min_volume_mm3: float, voxel_mm3: float) -> np.ndarray:
    """``mask`` without its connected components smaller than ``min_volume_mm3`` (same dtype and shape)."""
    if min_volume_mm3 <= 0 or not mask.any():
        return mask
    labels, _ = ndimage.label(mask > 0, structure=_NEIGHBOURS)
    keep = np.bincount(labels.ravel()) * voxel_mm3 >= min_volume_mm3
    keep[0] = False
    return (mask * keep[labels]).astype(mask.dtype)


def choose_min_lesion_volume(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    voxel_mm3: float,
    score: Callable[[np.ndarray, np.ndarray], float],
    candidates: Sequence[float] = CANDIDATES_MM3,
) -> tuple[float, dict[float, float]]:
    """The candidate minimum lesion volume (mm3) with the best mean ``score`` over the validation cases
    (binary ``predictions`` against ``labels``), and every candidate's mean score. Ties: the smallest."""
    if not predictions or len(predictions) != len(labels):
        raise ValueError(f"predictions/labels: need one prediction per validation case, got "
                         f"{len(predictions)} and {len(labels)}")
    means = {}
    for volume in sorted(candidates):
        means[float(volume)] = float(np.mean([score(remove_small_lesions(p, volume, voxel_mm3) > 0, np.asarray(g) > 0)
                                              for p, g in zip(predictions, labels)]))
    best = max(means.values())
    return min(v for v, m in means.items() if m >= best - 1e-12), means
