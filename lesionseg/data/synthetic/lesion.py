"""The lesion layer: an MCAo lesion's territory, size, position and signal, and the swelling it causes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lesionseg.data.synthetic.shapes import Field, ellipsoid_sd, scaled

if TYPE_CHECKING:
    from lesionseg.data.synthetic.domains import DomainSpec


# Lesion size. A lesion is an ellipsoid of semi-axes ``scale * (0.62, 0.72, 0.85)`` brain semi-axes, cut at its
# medial border and by the brain surface. Most MCAo lesions (30-60 min transient MCAo, 24 h) take the lateral
# cortex and the striatum: ``scale`` uniform in LESION_SCALE. A minority stay in the striatum: with probability
# STRIATAL_FRACTION, ``scale`` log-uniform in STRIATAL_SCALE. The geometry is in brain semi-axes, so the lesion
# fraction of the cerebral hemisphere is the same in both species: about 3-60%, median about 30% (of half the
# whole brain: median about 25%). With this generator's brains (mouse: whole brain about 360 mm3, cerebrum about
# 290; rat: about 1370 and 1250, both smaller than real) that is, over 180 lesions at matrix 96, mouse 4-100 mm3
# (median 43, IQR 26-63) and rat 15-380 mm3 (median 204, IQR 116-282). Shams are drawn separately.
LESION_SCALE = (0.65, 1.15)


STRIATAL_SCALE = (0.38, 0.58)


STRIATAL_FRACTION = 0.15


@dataclass(frozen=True)
class Lesion:
    """An MCAo lesion's draw; positions and sizes in brain semi-axes."""

    side: float  # +1 right hemisphere, -1 left
    scale: float  # size factor: STRIATAL_SCALE (striatal) or LESION_SCALE (cortex and striatum)
    center: np.ndarray
    semi: np.ndarray
    medial_limit: float  # medial border, in brain half-widths from the midline
    contrast: float  # lesion / grey matter
    shape: Field
    texture: Field


def draw_lesion(rng: np.random.Generator, spec: DomainSpec) -> Lesion:
    striatal = rng.uniform() < STRIATAL_FRACTION
    if striatal:
        scale = float(np.exp(rng.uniform(np.log(STRIATAL_SCALE[0]), np.log(STRIATAL_SCALE[1]))))
    else:
        scale = float(rng.uniform(*LESION_SCALE))
    # small lesions sit in the striatum, larger ones reach out into the lateral cortex
    grow = float(np.clip((scale - STRIATAL_SCALE[0]) / (0.9 - STRIATAL_SCALE[0]), 0, 1))
    striatum, territory = np.array([0.4, 0.15, 0.05]), np.array([0.55, 0.05, -0.05])
    center = striatum + grow * (territory - striatum) + rng.uniform(-0.03, 0.03, 3)
    semi = scale * np.array([0.62, 0.72, 0.85]) * rng.uniform(0.9, 1.1, 3)
    width = spec.anatomy.brain_semi_axes_mm[0]
    return Lesion(
        side=float(rng.choice([-1.0, 1.0])), scale=scale, center=center, semi=semi,
        medial_limit=float(rng.uniform(0.18, 0.24)), contrast=float(rng.uniform(*spec.contrast.lesion)),
        shape=Field(rng, 1.5 * width), texture=Field(rng, 0.4 * width, n_modes=6),
    )


def midline_shift(x, y, semi, lesion: Lesion, shift_mm: float) -> np.ndarray:
    """Push the midline away from the lesion: the swollen hemisphere widens, the other one narrows."""
    bulge = np.clip(1 - (x / semi[0]) ** 2, 0, 1) * np.exp(-(((y / semi[1]) - float(lesion.center[1])) / 0.8) ** 2)
    return x + np.float32(lesion.side * shift_mm) * bulge


def lesion_sd(t, rel, lesion: Lesion, cerebrum_sd, csf_sd, semi) -> np.ndarray:
    """A deformed ellipsoid in lateral striatum and cortex, cut at a wavy medial border, inside the brain."""
    x, y, z = t
    center, radii = scaled(lesion.center, semi), scaled(lesion.semi, semi)
    shape = lesion.shape(rel)
    blob = ellipsoid_sd(x - lesion.side * center[0], y - center[1], z - center[2], radii)
    blob = blob - np.float32(0.2 * min(radii)) * shape
    dorsal = np.clip(z / semi[2] + 0.1, 0, 1)
    medial_x = semi[0] * (lesion.medial_limit + 0.6 * dorsal**1.5 + 0.05 * shape)  # oblique: spares dorsomedial cortex
    medial = medial_x - lesion.side * x
    return np.maximum(np.maximum(blob, medial), np.maximum(cerebrum_sd, -csf_sd))


RIM_FRACTION = 0.04  # rim width in brain half-widths


def lesion_signal(sd: np.ndarray, drawn: Lesion, spec: DomainSpec, rel, speckle: np.ndarray) -> np.ndarray:
    """A hyperintense core inside a milder oedematous rim (T2 rises less at the border zone), patchy in both.

    At 24 h the T2 of the core is up most, the peri-infarct rim less (Hoehn-Berlage et al. 1995), and the
    core is heterogeneous (spared vessels, oedema gradients): a coarse and a fine random field, about +-8 %.
    """
    rim_mm = RIM_FRACTION * spec.anatomy.brain_semi_axes_mm[0]  # 0.3 mm in the rat, 0.2 mm in the mouse
    depth = np.clip(-sd / rim_mm, 0, 1)
    value = spec.contrast.lesion_rim + (drawn.contrast - spec.contrast.lesion_rim) * depth
    return value * (1 + 0.07 * drawn.texture(rel) + 0.03 * speckle)
