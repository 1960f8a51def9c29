"""The rater layer: where the person drawing the mask puts the lesion's border.

Manual masks of the same rodent lesion differ between raters mostly at the border: the faint oedematous rim is
left out by some and included by others, and the drawn border wanders by about a voxel (docs/synthetic.md).
A rater is one draw per animal: a border offset in mm (positive: outward), applied to the lesion's signed
distance. The image is never touched; only the label moves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RaterModel:
    """How this domain's masks were drawn. The default is a perfect rater (the mask is the lesion)."""

    border_mm: tuple[float, float] = (0.0, 0.0)  # uniform offset of the drawn border (+ outward)
    rim_left_out_fraction: float = 0.0  # raters who leave the faint rim out (border moves in by the rim width)


def draw_rater(rng: np.random.Generator, model: RaterModel, rim_mm: float) -> float:
    """This animal's border offset in mm."""
    offset = float(rng.uniform(*model.border_mm))
    if rng.uniform() < model.rim_left_out_fraction:
        offset -= rim_mm
    return offset


def rater_label(lesion_sd: np.ndarray, offset_mm: float) -> np.ndarray:
    """The drawn mask: inside the lesion's signed distance moved out by ``offset_mm``."""
    return lesion_sd < np.float32(offset_mm)
