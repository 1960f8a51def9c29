"""MONAI transform chains for training and validation (dictionary transforms on "image"/"label")."""
from __future__ import annotations

import math
from typing import Sequence

from monai import transforms as mt

from lesionseg.config import AugmentConfig

KEYS = ("image", "label")


def train_transforms(augment: AugmentConfig | None, patch_size: Sequence[int] | None = None) -> mt.Compose:
    """Random crop (when ``patch_size`` is set) and, when ``augment`` is given, flips, a small affine,
    intensity scale/shift, Gaussian noise and a smooth bias field."""
    steps: list[mt.Transform] = [mt.EnsureTyped(keys=KEYS, track_meta=False)]
    if patch_size is not None:
        steps.append(
            mt.RandCropByPosNegLabeld(
                keys=KEYS, label_key="label", spatial_size=list(patch_size), pos=1, neg=1, num_samples=1,
                allow_smaller=True,
            )
        )
        steps.append(mt.SpatialPadd(keys=KEYS, spatial_size=list(patch_size)))
    if augment is not None:
        steps += _augmentations(augment)
    return mt.Compose(steps)


def _augmentations(aug: AugmentConfig) -> list[mt.Transform]:
    angle = math.radians(aug.rotate_deg)
    return [
        mt.RandFlipd(keys=KEYS, prob=aug.flip_prob, spatial_axis=0),  # left-right: lesions occur in either hemisphere
        mt.RandAffined(
            keys=KEYS, prob=aug.affine_prob, rotate_range=(angle, angle, angle),
            scale_range=(aug.scale,) * 3, mode=("bilinear", "nearest"), padding_mode="zeros",
        ),
        mt.RandScaleIntensityd(keys="image", factors=0.1, prob=aug.intensity_prob),
        mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=aug.intensity_prob),
        mt.RandGaussianNoised(keys="image", prob=aug.noise_prob, std=aug.noise_std),
        mt.RandBiasFieldd(keys="image", prob=aug.bias_field_prob, coeff_range=(0.0, 0.1)),
    ]
