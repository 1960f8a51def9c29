"""Building blocks of the generator: smooth random fields, signed-distance shapes and the painting canvas."""
from __future__ import annotations

import numpy as np


class Field:
    """A smooth random field: a sum of plane waves in random directions, about unit standard deviation.

    Each wave is a product of 1D complex exponentials along the (axis-aligned) world axes, so a volume costs
    a few multiplications per voxel and no trigonometry.
    """

    def __init__(self, rng: np.random.Generator, wavelength_mm: float, n_modes: int = 4):
        directions = rng.standard_normal((n_modes, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        self.waves = 2 * np.pi / wavelength_mm * rng.uniform(0.6, 1.0, (n_modes, 1)) * directions
        self.phases = rng.uniform(0, 2 * np.pi, n_modes)

    def __call__(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Evaluate at world offsets ``axes`` = (x, y, z), broadcastable 1D arrays in mm."""
        total = np.float32(0.0)
        for wave, phase in zip(self.waves, self.phases):
            x, y, z = (np.exp(1j * (k * a)).astype(np.complex64) for k, a in zip(wave, axes))
            total = total + (np.complex64(np.exp(1j * phase)) * (x * y) * z).real
        return total * np.float32(np.sqrt(2.0 / len(self.phases)))


def ellipsoid_sd(x, y, z, semi) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an origin-centred ellipsoid."""
    a, b, c = (float(s) for s in semi)
    u, v, w = x / a, y / b, z / c
    r = np.sqrt(u * u + v * v + w * w)
    grad = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    return (r - 1) * r / np.maximum(grad, np.float32(1e-6))


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two signed distances with a rounded seam of width ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def band(sd: np.ndarray, outer, inner) -> np.ndarray:
    """Signed distance of the shell from ``outer`` to ``inner`` mm below the surface ``sd = 0``."""
    return np.maximum(sd + outer, -(sd + inner))


class Canvas:
    """The scene's image, painted tissue by tissue; each shape gets a one-voxel partial-volume edge."""

    def __init__(self, shape: tuple[int, int, int], edge_mm: float):
        self.image = np.zeros(shape, np.float32)
        self.edge = np.float32(edge_mm)

    def paint(self, sd: np.ndarray, value, box=(slice(None),) * 3) -> None:
        region = self.image[box]
        region += np.clip(0.5 - sd / self.edge, 0, 1) * (value - region)


def scaled(values, semi) -> tuple[float, float, float]:
    return tuple(float(v) * s for v, s in zip(values, semi))
