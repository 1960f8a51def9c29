"""Subarachnoid blood: a filament that perforates the artery it was pushed along leaves blood in the basal cisterns.

Intraluminal filament MCAo can perforate the vessel wall. In mice the filament perforates mostly the proximal
intracranial internal carotid artery, less often the MCA/ACA branching (an ex vivo study of filament perforation:
8 of 9 C57BL/6N mice at the proximal ICA; PLoS One, abstract read). The blood collects in the basal cisterns on the
operated side and runs laterally along the MCA towards the rhinal fissure. On T2w images at these fields acute and
subacute blood is dark (deoxy- and intracellular methaemoglobin shorten T2). How often, its size and signal are
declared in docs/synthetic.md. It lies outside the brain, so no rater includes it in a lesion mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionseg.data.synthetic.shapes import ellipsoid_sd, scaled, smooth_union

SUBARACHNOID_BLOOD_SIGNAL = 0.3  # / grey matter
# Where the blood lies, in brain semi-axes (x toward the operated side, y anterior, z superior): a pool in the
# basal cisterns beside the circle of Willis and a streak up the lateral surface along the MCA. Approximate
# readings of rodent atlas anatomy (Paxinos and Franklin; Paxinos and Watson), not measured on images.
_POOL = ((0.22, 0.1, -1.02), (0.38, 0.4, 0.2))
_STREAK = ((0.78, 0.05, -0.55), (0.22, 0.3, 0.32))


@dataclass(frozen=True)
class SubarachnoidBlood:
    """One animal's subarachnoid blood: how large (x the reference pool and streak) and how far up the side."""

    size: float
    streak: float  # 0: the basal pool only, 1: the full streak along the MCA


def draw_subarachnoid_blood(rng: np.random.Generator, fraction: float) -> SubarachnoidBlood | None:
    """None for most animals; for ``fraction`` of them a size and extent (uniform 0.5-1.0 and 0-1)."""
    if rng.uniform() >= fraction:
        return None
    return SubarachnoidBlood(size=float(rng.uniform(0.5, 1.0)), streak=float(rng.uniform(0.0, 1.0)))


def subarachnoid_blood_sd(x, y, z, blood: SubarachnoidBlood, side: float, brain_sd: np.ndarray, semi,
                          shell_mm: float) -> np.ndarray:
    """Signed distance (mm) of the blood: pool and streak, outside the brain and within ``shell_mm`` of it."""
    (pc, ps), (sc, ss) = _POOL, _STREAK
    pool_c, pool_r = scaled(pc, semi), scaled(np.multiply(ps, blood.size), semi)
    streak_c, streak_r = scaled(sc, semi), scaled(np.multiply(ss, blood.size * max(blood.streak, 0.05)), semi)
    lateral = side * x
    pool = ellipsoid_sd(lateral - pool_c[0], y - pool_c[1], z - pool_c[2], pool_r)
    streak = ellipsoid_sd(lateral - streak_c[0], y - streak_c[1], z - streak_c[2], streak_r)
    blob = smooth_union(pool, streak, 0.1 * semi[0])
    return np.maximum(np.maximum(blob, -brain_sd), brain_sd - np.float32(shell_mm))
