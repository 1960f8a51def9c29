"""The artefacts layer: receive-coil profile, smooth bias field, point-spread blur and Rician noise."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lesionseg.data.synthetic.scene import world_offsets

if TYPE_CHECKING:
    from lesionseg.data.synthetic.domains import DomainSpec
    from lesionseg.data.synthetic.scene import Pose


# Positions and sizes below are in brain semi-axes (ax, ay, az) unless they say mm.

PSF_SIGMA_PIXELS = (0.5, 0.7, 0.0)  # read, phase (RARE echo-train blur), slice


def coil_and_bias(affine: np.ndarray, shape, spec: DomainSpec, pose: Pose) -> np.ndarray:
    """Receive sensitivity, 1 at the brain centre: a surface loop over the head times a smooth random field.

    By reciprocity (Hoult and Richards, J Magn Reson 24:71, 1976) a receive loop's sensitivity is the field it
    would make per unit current. Biot-Savart on a circular loop of radius ``a`` gives ``a^2 / (a^2 + d^2)^1.5`` on
    its axis at depth ``d``; off the axis the squared distance ``r^2`` from the axis is added to ``d^2`` (a
    first-order approximation of the elliptic-integral solution, good within about a radius of the axis).
    """
    x, y, z = world_offsets(affine, shape, pose.center)
    a = spec.coil_radius_mm
    plane = spec.anatomy.brain_semi_axes_mm[2] + spec.coil_gap_mm  # loop height above the brain centre
    depth = np.maximum(plane - z, 0.5 * spec.coil_gap_mm)  # nothing reaches above the loop
    d2 = depth[None, :, None] ** 2 + x[:, None, None] ** 2 + y[None, None, :] ** 2
    coil = ((a * a + plane * plane) / (a * a + d2)) ** 1.5
    rel = (x[:, None, None], y[None, None, :], z[None, :, None])
    return coil.astype(np.float32) * np.exp(np.float32(spec.bias_strength) * pose.bias(rel))


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag)


# Petechial haemorrhage in the infarct (haemorrhagic transformation): small hypointense spots, from deoxy- and
# methaemoglobin's short T2 and susceptibility, in a minority of animals after transient MCAo (the fraction and
# sizes are declared in docs/synthetic.md). Raters keep them inside the lesion mask.
PETECHIA_SIGNAL = 0.35  # / grey matter


def draw_petechiae(rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Rows of (x, y, z, radius) in lesion semi-axes (x toward the lesion's side); none for most animals."""
    if rng.uniform() >= fraction:
        return np.zeros((0, 4))
    count = int(rng.integers(1, 5))
    where = rng.uniform(-0.6, 0.6, (count, 3))
    radius = rng.uniform(0.04, 0.09, (count, 1))
    return np.hstack([where, radius])


def petechiae_sd(x, y, z, spots: np.ndarray, center_mm, semi_mm, side: float) -> np.ndarray | None:
    """Signed distance (mm) of the union of the petechiae, or None when there are none."""
    if not len(spots):
        return None
    scale = float(min(semi_mm))
    out = None
    for px, py, pz, r in spots:
        cx, cy, cz = side * (center_mm[0] + px * semi_mm[0]), center_mm[1] + py * semi_mm[1], center_mm[2] + pz * semi_mm[2]
        sd = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - r * scale
        out = sd if out is None else np.minimum(out, sd)
    return out
