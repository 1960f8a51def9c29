"""Where the head lies: the animal's pose and shape draws, the acquisition affine and the voxel grid in the head frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from lesionseg.data.synthetic.anatomy import head_box
from lesionseg.data.synthetic.shapes import Field

if TYPE_CHECKING:
    from lesionseg.data.synthetic.domains import DomainSpec


@dataclass(frozen=True)
class Pose:
    """Where this animal's head lies in the scanner and how it differs from the template."""

    center: np.ndarray  # brain centre, world mm
    origin: np.ndarray  # FOV centre, world mm
    rotation: np.ndarray  # head frame -> world
    size: np.ndarray  # size factor per head-frame axis
    deform: tuple[Field, Field, Field]  # low-frequency shape variation
    texture: Field  # patchy fat and muscle
    speckle: Field  # fibre bundles in the striatum
    bias: Field  # smooth receive-field variation
    fascicles: Field | None = None  # muscle fascicles and the fascial planes between them
    ventricles: tuple[float, float] = (1.0, 1.0)  # ventricle volume factor, right and left
    oedema: float = 0.0  # temporal-muscle signal rise on the operated side (0: none)


@dataclass(frozen=True)
class AnimalRanges:
    """Per-animal variation of pose and anatomy (docs/synthetic.md gives each range's source)."""

    pose_deg: tuple[float, float, float] = (2.5, 2.5, 2.5)  # roll (A-P axis), pitch (L-R axis), yaw: uniform +-
    size: tuple[float, float] = (0.94, 1.06)  # per-axis brain size factor
    ventricle_volume: tuple[float, float] = (1.0, 1.0)  # log-uniform factor on both lateral ventricles
    ventricle_asymmetry: float = 0.0  # one side's volume x uniform(1 - a, 1 + a)
    muscle_oedema_fraction: float = 0.0  # animals with oedema of the temporal muscle on the operated side
    muscle_oedema: tuple[float, float] = (1.3, 1.8)  # its signal / normal muscle


def draw_pose(rng: np.random.Generator, spec: DomainSpec) -> Pose:
    """Where the head lies and how this animal differs from the template (``spec.animal`` ranges)."""
    ranges = spec.animal
    semi = np.array(spec.anatomy.brain_semi_axes_mm)
    origin = rng.uniform(-1.0, 1.0, 3)
    center = origin + np.array(spec.brain_center_mm) + rng.uniform(-0.04, 0.04, 3) * semi
    # head frame axes: x L-R (pitch), y A-P (roll), z S-I (yaw)
    pitch, roll, yaw = (rng.uniform(-d, d) for d in (ranges.pose_deg[1], ranges.pose_deg[0], ranges.pose_deg[2]))
    rotation = Rotation.from_euler("xyz", [pitch, roll, yaw], degrees=True).as_matrix()
    size = rng.uniform(*ranges.size, 3)
    fields = dict(
        deform=tuple(Field(rng, 1.6 * semi[0]) for _ in range(3)), texture=Field(rng, 0.6 * semi[0]),
        speckle=Field(rng, 0.08 * semi[0], n_modes=6), bias=Field(rng, 3.0 * semi[0], n_modes=3),
        fascicles=Field(rng, 0.12 * semi[0], n_modes=8),
    )
    low, high = ranges.ventricle_volume
    volume = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    tilt = float(rng.uniform(-ranges.ventricle_asymmetry, ranges.ventricle_asymmetry))
    oedema = rng.uniform() < ranges.muscle_oedema_fraction
    rise = float(rng.uniform(*ranges.muscle_oedema)) - 1 if oedema else 0.0
    return Pose(center=center, origin=origin, rotation=rotation, size=size, **fields,
                ventricles=(volume * (1 + tilt), volume * (1 - tilt)), oedema=rise)


def acquisition_affine(spec: DomainSpec, origin_mm: np.ndarray) -> np.ndarray:
    """Voxel -> RAS mm for coronal slices stored as (column -> L, row -> I, slice -> P), centred on ``origin_mm``."""
    pixel, _, thickness = spec.spacing
    affine = np.zeros((4, 4))
    affine[0, 0] = -pixel  # columns run to the subject's left
    affine[2, 1] = -pixel  # rows run down (inferior)
    affine[1, 2] = -thickness  # slices run front to back (posterior)
    affine[3, 3] = 1.0
    middle = np.array([spec.matrix - 1, spec.matrix - 1, spec.n_slices - 1]) / 2
    affine[:3, 3] = origin_mm - affine[:3, :3] @ middle
    return affine


def world_offsets(affine: np.ndarray, shape, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm from ``origin``) of voxel centres along array axes 0, 2, 1 (a permuted-diagonal affine)."""
    x = affine[0, 3] + affine[0, 0] * np.arange(shape[0]) - origin[0]
    y = affine[1, 3] + affine[1, 2] * np.arange(shape[2]) - origin[1]
    z = affine[2, 3] + affine[2, 1] * np.arange(shape[1]) - origin[2]
    return x, y, z


class Scene:
    """The voxel grid in the head frame (mm; x right, y anterior, z superior; brain centre at 0).

    Only a box around the head is computed (the rest is air); smaller structures work in sub-boxes of it.
    """

    def __init__(self, spec: DomainSpec, pose: Pose, affine: np.ndarray):
        self.semi = tuple(float(s) for s in spec.anatomy.brain_semi_axes_mm)
        self.pose = pose
        self.shape = (spec.matrix, spec.matrix, spec.n_slices)
        self._world = x, y, z = world_offsets(affine, self.shape, pose.center)
        self._margin = 5 * spec.anatomy.deform_mm + 2 * max(spec.spacing)
        self.window = self._grid_box(*head_box(spec.anatomy))
        self.rel = (
            x[self.window[0], None, None].astype(np.float32),
            y[None, None, self.window[2]].astype(np.float32),
            z[None, self.window[1], None].astype(np.float32),
        )
        rot, size = pose.rotation.tolist(), pose.size.tolist()
        amplitude = spec.anatomy.deform_mm
        self.coords = tuple(
            ((rot[0][k] * self.rel[0] + rot[1][k] * self.rel[1] + rot[2][k] * self.rel[2])
             + amplitude * pose.deform[k](self.rel)) / size[k]
            for k in range(3)
        )

    def _grid_box(self, center, half) -> tuple[slice, slice, slice]:
        """Index slices (whole grid) holding a head-frame box, with room for rotation and deformation."""
        world_center = self.pose.rotation @ (np.asarray(center) * self.pose.size)
        world_half = np.abs(self.pose.rotation) @ (np.asarray(half) * self.pose.size) + self._margin
        box = []
        for axis in (0, 2, 1):  # array axes hold world x, z, y
            inside = np.flatnonzero(np.abs(self._world[axis] - world_center[axis]) <= world_half[axis])
            box.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
        return tuple(box)

    def box(self, center, half) -> tuple[slice, slice, slice]:
        """Index slices, relative to the scene window, holding a head-frame box (``center`` +- ``half`` mm)."""
        out = []
        for inner, outer in zip(self._grid_box(center, half), self.window):
            start = min(max(inner.start, outer.start), outer.stop)
            out.append(slice(start - outer.start, max(start, min(inner.stop, outer.stop)) - outer.start))
        return tuple(out)

    def at(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[box] for c in self.coords)

    def rel_at(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.rel[0][box[0]], self.rel[1][:, :, box[2]], self.rel[2][:, box[1]]

    def full(self, box, values: np.ndarray, fill: float = 1e3) -> np.ndarray:
        """A scene-sized array holding ``values`` in ``box`` and ``fill`` elsewhere."""
        out = np.full(self.coords[0].shape, fill, np.float32)
        out[box] = values
        return out
