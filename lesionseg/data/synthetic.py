"""Synthetic rat and mouse T2-weighted MCAo MRI, written the way a scanner writes it.

Every case is a head, not a skull-stripped brain: scalp, fat, textured jaw muscles, glands, eyes and a dark skull
around a brain with layered cortex, a white-matter band, striatum crossed by fibre bundles, thalamus,
hippocampus, ventricles, flow voids of the large vessels, olfactory bulbs and cerebellum. The anatomy is made
of smooth analytic shapes in millimetres (ellipsoids deformed by low-frequency random fields), so a case looks
the same whatever the matrix size. Tissue signals come from the T2w RARE signal equation with published
relaxation times at 9.4 T (rat) and 7 T (mouse) (:data:`RELAXATION`, :func:`t2w_contrast`). An MCAo lesion is
one hyperintense region (core and oedematous rim) in one hemisphere's lateral cortex and striatum; its swelling
pushes the midline. Each thick slice averages sub-slice samples (partial volume), then a receive-coil profile
(Biot-Savart loop), a smooth bias field and Rician noise finish the image. Arrays are stored as acquired
(coronal slices, thick-slice axis last) with an affine that maps them to RAS+ millimetres. Sources and what
the published RatLesNetV2 makes of the result: ``docs/synthetic.md`` and ``benchmarks/results_realism.md``.
"""
from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lesionseg.data.io import atomic_dir, write_json, write_text, write_volume


@dataclass(frozen=True)
class Anatomy:
    """A species' head geometry in mm."""

    brain_semi_axes_mm: tuple[float, float, float]  # cerebrum half-width (L-R), half-length (A-P), half-height (S-I)
    cortex_mm: float  # dorsal cortical thickness (lateral cortex is thicker)
    white_matter_mm: float  # corpus callosum / external capsule band
    ventricle_mm: float  # half-width of the lateral and third ventricles
    csf_mm: float  # subarachnoid CSF between brain and skull
    skull_mm: float  # vault thickness (the skull base is thicker)
    scalp_mm: float  # skin + subcutaneous fat over the vault
    head_scale: float  # jaw and neck size relative to the brain
    deform_mm: float  # amplitude of case-to-case shape variation
    midline_shift_mm: float  # midline shift of the largest lesions


@dataclass(frozen=True)
class Contrast:
    """T2w signal of each tissue relative to cortical grey matter (see :func:`t2w_contrast`)."""

    white_matter: float
    deep_grey: float  # striatum
    csf: float
    fat: float
    muscle: float
    skin: float
    bone: float
    eye: float
    lesion: tuple[float, float]  # range of the lesion core / grey matter
    thalamus: float = 0.9
    lesion_rim: float = 1.1  # the edematous rim around the core
    lens: float = 0.15
    vessel: float = 0.12  # flow void of arteries and large veins in a spin-echo train
    gland: float = 1.1  # salivary and Harderian glands


@dataclass(frozen=True)
class Relaxation:
    """Proton density (relative to pure water), T1 (s) and T2 (ms) of one tissue at the scanner's field."""

    pd: float
    t1_s: float
    t2_ms: float


def rare_signal(tissue: Relaxation, tr_s: float, te_ms: float) -> float:
    """Spin-echo (RARE) magnitude at repetition time ``tr_s`` and effective echo time ``te_ms``:
    ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2)`` (e.g. Haacke et al., *Magnetic Resonance Imaging: Physical
    Principles and Sequence Design*, 1999, ch. 8 and 16; full refocusing, TR >> echo train assumed)."""
    return tissue.pd * (1 - float(np.exp(-tr_s / tissue.t1_s))) * float(np.exp(-te_ms / tissue.t2_ms))


def t2w_contrast(tissues: dict[str, Relaxation], tr_s: float, te_ms: float) -> Contrast:
    """Tissue signals relative to cortical grey matter (``tissues["grey"]``) for a T2w RARE protocol."""
    grey = rare_signal(tissues["grey"], tr_s, te_ms)

    def rel(name: str) -> float:
        return round(rare_signal(tissues[name], tr_s, te_ms) / grey, 3)

    return Contrast(
        white_matter=rel("white"), deep_grey=rel("striatum"), csf=rel("csf"), fat=rel("fat"), muscle=rel("muscle"),
        skin=rel("skin"), bone=rel("bone"), eye=rel("vitreous"), lesion=(rel("lesion_low"), rel("lesion_high")),
        thalamus=rel("thalamus"), lesion_rim=rel("lesion_rim"), lens=rel("lens"), vessel=0.12, gland=rel("gland"),
    )


# Relaxation at the two fields. Brain water T1/T2: rat 9.4 T, de Graaf et al., MRM 56:386 (2006) (cortex T1 about
# 1.9 s, T2 about 40 ms; white matter shorter); mouse 7 T, Guilfoyle et al., MRM 49:576 (2003) (T1 about 1.7 s,
# T2 about 45-50 ms). T1 grows and T2 shrinks with field. Striatum and thalamus hold more myelinated fibres than
# cortex: a little shorter T2. CSF and vitreous humour are nearly free water (T1 3.5-4 s; T2 well over 100 ms,
# shortened at high field by diffusion and exchange). Ischaemic lesion at 24 h (vasogenic + cytotoxic oedema):
# T2 up 40-120 % in the core (most at 1-3 days, when vasogenic oedema peaks), less in the rim, water content
# up some 5-10 % (Knight et al., Stroke 22:802, 1991;
# Hoehn-Berlage et al., NMR Biomed 8:345, 1995). Skeletal muscle T2 about 25-35 ms at 7-9.4 T; the upper end is
# used: the head is a third of the volume, and a darker head lifts the brain's whole-volume z-score until the
# published RatLesNetV2 marks normal cortex (docs/synthetic.md). Fat: short T1, and in a RARE
# train its J-coupled lines decouple, so it stays bright (Henkelman et al., JMRI 2:533, 1992). Cortical bone and
# the lens: T2 of a few ms, no signal at these echo times. Salivary and Harderian glands: watery, lipid-rich
# secretory tissue, about as bright as grey matter in T2w.
RELAXATION = {
    "rat": {
        "grey": Relaxation(0.80, 1.90, 42), "striatum": Relaxation(0.79, 1.85, 40),
        "thalamus": Relaxation(0.77, 1.75, 38), "white": Relaxation(0.70, 1.60, 34),
        "csf": Relaxation(1.00, 3.80, 170), "vitreous": Relaxation(1.00, 3.50, 200),
        "lesion_low": Relaxation(0.87, 2.30, 62), "lesion_high": Relaxation(0.89, 2.60, 95),
        "lesion_rim": Relaxation(0.82, 2.00, 47), "muscle": Relaxation(0.75, 1.90, 35),
        "fat": Relaxation(0.90, 0.55, 60), "skin": Relaxation(0.70, 1.50, 30),
        "bone": Relaxation(0.15, 1.00, 2), "lens": Relaxation(0.60, 1.20, 15),
        "gland": Relaxation(0.85, 1.80, 45),
    },
    "mouse": {
        "grey": Relaxation(0.80, 1.75, 46), "striatum": Relaxation(0.79, 1.70, 44),
        "thalamus": Relaxation(0.77, 1.60, 41), "white": Relaxation(0.70, 1.45, 37),
        "csf": Relaxation(1.00, 3.60, 220), "vitreous": Relaxation(1.00, 3.30, 220),
        "lesion_low": Relaxation(0.87, 2.10, 66), "lesion_high": Relaxation(0.89, 2.40, 100),
        "lesion_rim": Relaxation(0.82, 1.85, 52), "muscle": Relaxation(0.75, 1.70, 35),
        "fat": Relaxation(0.90, 0.50, 65), "skin": Relaxation(0.70, 1.40, 33),
        "bone": Relaxation(0.15, 0.90, 2), "lens": Relaxation(0.60, 1.10, 17),
        "gland": Relaxation(0.85, 1.65, 50),
    },
}
# Protocols: rat, 2D RARE at 9.4 T (RatLesNetV2's data: 256x256x18); mouse, 2D RARE at 7 T (the seed study).
# TR 2.5-3 s and an effective TE of 30-80 ms are the usual rodent stroke T2w settings; the longer the TE, the
# brighter the oedema against grey matter. The rat's TE (not published with RatLesNetV2's weights) is 70 ms: at
# 40 ms the published model left lesions of lesion / grey matter below about 1.5 unmarked (benchmarks/realism.py;
# docs/synthetic.md). The mouse keeps the seed study's 33 ms.
PROTOCOL = {"rat": (2.5, 70.0), "mouse": (3.0, 33.0)}  # (TR s, effective TE ms)


@dataclass(frozen=True)
class DomainSpec:
    """One imaging domain: species, acquisition geometry, contrast, coil and noise."""

    name: str
    matrix: int  # in-plane matrix (square)
    n_slices: int  # coronal slices, front to back
    fov_mm: float  # in-plane field of view
    slice_thickness_mm: float
    anatomy: Anatomy
    contrast: Contrast
    brain_center_mm: tuple[float, float, float]  # brain centre relative to the FOV centre (x, y, z), RAS
    noise_sigma: float  # Rician noise sigma relative to grey matter at the brain centre
    # Receive coil (see _coil_and_bias). Mouse: a surface loop over the head (the seed study's images are brighter
    # on top). Rat: a loop so wide that the brain sees a volume coil's flat profile (+-5 %); the published
    # RatLesNetV2 marked the dorsal cortex of synthetic rats as lesion under any surface-loop gradient tried
    # (radius 15-25 mm: top of the brain 1.15-1.8x the centre), so its training scans were evidently near-uniform.
    coil_radius_mm: float
    coil_gap_mm: float  # from the top of the brain up to the loop's plane (scalp, skull, coil housing)
    bias_strength: float  # amplitude of the smooth random log-bias field
    signal_scale: float  # stored int16 value of grey matter at the brain centre

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (column, row, slice)."""
        pixel = self.fov_mm / self.matrix
        return (pixel, pixel, self.slice_thickness_mm)


DOMAINS: dict[str, DomainSpec] = {
    "mouse": DomainSpec(
        name="mouse", matrix=256, n_slices=32, fov_mm=25.5345, slice_thickness_mm=0.5,  # 0.0997441 mm pixels
        anatomy=Anatomy(
            brain_semi_axes_mm=(4.8, 4.6, 3.0), cortex_mm=0.9, white_matter_mm=0.2, ventricle_mm=0.07,
            csf_mm=0.04, skull_mm=0.25, scalp_mm=0.45, head_scale=1.12, deform_mm=0.1, midline_shift_mm=0.3,
        ),
        contrast=t2w_contrast(RELAXATION["mouse"], *PROTOCOL["mouse"]),
        brain_center_mm=(0.0, 0.0, 5.0), noise_sigma=0.05, coil_radius_mm=12.0, coil_gap_mm=2.0, bias_strength=0.06,
        signal_scale=3000.0,
    ),
    "rat": DomainSpec(
        name="rat", matrix=256, n_slices=18, fov_mm=32.0, slice_thickness_mm=1.0,
        anatomy=Anatomy(
            brain_semi_axes_mm=(7.5, 7.6, 5.0), cortex_mm=1.8, white_matter_mm=0.35, ventricle_mm=0.1,
            csf_mm=0.06, skull_mm=0.45, scalp_mm=0.7, head_scale=1.2, deform_mm=0.18, midline_shift_mm=0.6,
        ),
        contrast=t2w_contrast(RELAXATION["rat"], *PROTOCOL["rat"]),
        brain_center_mm=(0.0, 0.0, 5.5), noise_sigma=0.03, coil_radius_mm=60.0, coil_gap_mm=3.0, bias_strength=0.04,
        signal_scale=6000.0,
    ),
}


def domain_spec(name: str, matrix: int | None = None, n_slices: int | None = None) -> DomainSpec:
    """The named domain, optionally at another matrix (same FOV) or slice count (same slab coverage)."""
    if name not in DOMAINS:
        raise ValueError(f"name: unknown domain {name!r}; use one of {', '.join(sorted(DOMAINS))}")
    spec = DOMAINS[name]
    if matrix is not None:
        if int(matrix) != matrix or matrix < 16:
            raise ValueError(f"matrix: {matrix!r} is not an integer >= 16; pass e.g. 64, 128 or 256")
        spec = replace(spec, matrix=int(matrix))
    if n_slices is not None:
        if int(n_slices) != n_slices or n_slices < 4:
            raise ValueError(f"n_slices: {n_slices!r} is not an integer >= 4; pass e.g. {spec.n_slices}")
        coverage = spec.n_slices * spec.slice_thickness_mm
        spec = replace(spec, n_slices=int(n_slices), slice_thickness_mm=coverage / int(n_slices))
    return spec


@dataclass(frozen=True)
class SyntheticCase:
    """One generated scan as stored: ``image`` int16 magnitudes, ``label`` uint8 lesion mask, RAS+ ``affine``."""

    case_id: str
    group: str  # "MCAo" | "sham"
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    lesion_volume_mm3: float
    brain_mask: np.ndarray  # bool, the whole brain (cerebrum, olfactory bulbs, cerebellum, brainstem)


# ------------------------------------------------------------------------------------------ random draws


class _Field:
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


@dataclass(frozen=True)
class _Pose:
    """Where this animal's head lies in the scanner and how it differs from the template."""

    center: np.ndarray  # brain centre, world mm
    origin: np.ndarray  # FOV centre, world mm
    rotation: np.ndarray  # head frame -> world
    size: np.ndarray  # size factor per head-frame axis
    deform: tuple[_Field, _Field, _Field]  # low-frequency shape variation
    texture: _Field  # patchy fat and muscle
    speckle: _Field  # fibre bundles in the striatum
    bias: _Field  # smooth receive-field variation
    fascicles: _Field | None = None  # muscle fascicles and the fat septa between them


def _draw_pose(rng: np.random.Generator, spec: DomainSpec) -> _Pose:
    semi = np.array(spec.anatomy.brain_semi_axes_mm)
    origin = rng.uniform(-1.0, 1.0, 3)
    center = origin + np.array(spec.brain_center_mm) + rng.uniform(-0.04, 0.04, 3) * semi
    rotation = Rotation.from_euler("xyz", rng.uniform(-2.5, 2.5, 3), degrees=True).as_matrix()
    size = rng.uniform(0.94, 1.06, 3)
    return _Pose(
        center=center, origin=origin, rotation=rotation, size=size,
        deform=tuple(_Field(rng, 1.6 * semi[0]) for _ in range(3)), texture=_Field(rng, 0.6 * semi[0]),
        speckle=_Field(rng, 0.08 * semi[0], n_modes=6), bias=_Field(rng, 3.0 * semi[0], n_modes=3),
        fascicles=_Field(rng, 0.12 * semi[0], n_modes=8),
    )


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
class _Lesion:
    """An MCAo lesion's draw; positions and sizes in brain semi-axes."""

    side: float  # +1 right hemisphere, -1 left
    scale: float  # size factor: STRIATAL_SCALE (striatal) or LESION_SCALE (cortex and striatum)
    center: np.ndarray
    semi: np.ndarray
    medial_limit: float  # medial border, in brain half-widths from the midline
    contrast: float  # lesion / grey matter
    shape: _Field
    texture: _Field


def _draw_lesion(rng: np.random.Generator, spec: DomainSpec) -> _Lesion:
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
    return _Lesion(
        side=float(rng.choice([-1.0, 1.0])), scale=scale, center=center, semi=semi,
        medial_limit=float(rng.uniform(0.18, 0.24)), contrast=float(rng.uniform(*spec.contrast.lesion)),
        shape=_Field(rng, 1.5 * width), texture=_Field(rng, 0.4 * width, n_modes=6),
    )


# ----------------------------------------------------------------------------------------------- geometry


def _acquisition_affine(spec: DomainSpec, origin_mm: np.ndarray) -> np.ndarray:
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


def _world_offsets(affine: np.ndarray, shape, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm from ``origin``) of voxel centres along array axes 0, 2, 1 (a permuted-diagonal affine)."""
    x = affine[0, 3] + affine[0, 0] * np.arange(shape[0]) - origin[0]
    y = affine[1, 3] + affine[1, 2] * np.arange(shape[2]) - origin[1]
    z = affine[2, 3] + affine[2, 1] * np.arange(shape[1]) - origin[2]
    return x, y, z


def _ellipsoid_sd(x, y, z, semi) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an origin-centred ellipsoid."""
    a, b, c = (float(s) for s in semi)
    u, v, w = x / a, y / b, z / c
    r = np.sqrt(u * u + v * v + w * w)
    grad = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    return (r - 1) * r / np.maximum(grad, np.float32(1e-6))


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two signed distances with a rounded seam of width ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def _band(sd: np.ndarray, outer, inner) -> np.ndarray:
    """Signed distance of the shell from ``outer`` to ``inner`` mm below the surface ``sd = 0``."""
    return np.maximum(sd + outer, -(sd + inner))


class _Scene:
    """The voxel grid in the head frame (mm; x right, y anterior, z superior; brain centre at 0).

    Only a box around the head is computed (the rest is air); smaller structures work in sub-boxes of it.
    """

    def __init__(self, spec: DomainSpec, pose: _Pose, affine: np.ndarray):
        self.semi = tuple(float(s) for s in spec.anatomy.brain_semi_axes_mm)
        self.pose = pose
        self.shape = (spec.matrix, spec.matrix, spec.n_slices)
        self._world = x, y, z = _world_offsets(affine, self.shape, pose.center)
        self._margin = 5 * spec.anatomy.deform_mm + 2 * max(spec.spacing)
        self.window = self._grid_box(*_head_box(spec.anatomy))
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


class _Canvas:
    """The scene's image, painted tissue by tissue; each shape gets a one-voxel partial-volume edge."""

    def __init__(self, shape: tuple[int, int, int], edge_mm: float):
        self.image = np.zeros(shape, np.float32)
        self.edge = np.float32(edge_mm)

    def paint(self, sd: np.ndarray, value, box=(slice(None),) * 3) -> None:
        region = self.image[box]
        region += np.clip(0.5 - sd / self.edge, 0, 1) * (value - region)


# ------------------------------------------------------------------------------------------------ anatomy
# Positions and sizes below are in brain semi-axes (ax, ay, az) unless they say mm.

_PSF_SIGMA_PIXELS = (0.5, 0.7, 0.0)  # read, phase (RARE echo-train blur), slice
_BRAIN_BOX = ((0.0, -0.05, -0.05), (1.2, 1.62, 1.2))
_HEAD_PARTS = (  # name, centre, semi-axes, mirrored left-right pair
    ("tongue", (0.0, 0.5, -2.6), (0.45, 1.3, 0.55), False),
    ("mandible", (0.72, 0.2, -2.75), (0.11, 1.5, 0.5), True),
    ("airway", (0.0, 0.2, -1.45), (0.1, 1.8, 0.1), False),
    ("ear canal", (0.95, -1.0, -0.65), (0.2, 0.12, 0.12), True),
    ("nasal cavity", (0.14, 1.75, -0.75), (0.1, 0.55, 0.3), True),
    ("eye", (0.8, 1.0, -0.45), (0.3, 0.3, 0.3), True),
    ("lens", (0.95, 1.0, -0.45), (0.14, 0.14, 0.14), True),
    ("salivary gland", (0.95, -0.55, -2.25), (0.3, 0.7, 0.4), True),
    ("harderian gland", (0.62, 0.7, -0.75), (0.2, 0.3, 0.25), True),
)


def _scaled(values, semi) -> tuple[float, float, float]:
    return tuple(float(v) * s for v, s in zip(values, semi))


def _head_box(an: Anatomy) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Head-frame box (centre, half-size in mm) holding the whole head."""
    ax, ay, az = an.brain_semi_axes_mm
    top = 1.1 * az + an.csf_mm + 2.5 * an.skull_mm + an.scalp_mm
    bottom = -(1.75 + 1.55 * an.head_scale) * az
    return (0.0, 0.12 * ay, (top + bottom) / 2), (1.5 * ax * an.head_scale, 2.4 * ay, (top - bottom) / 2)


def _part_sd(scene: _Scene, center, semi, mirrored: bool):
    """Box and signed distance of an ellipsoid (or a mirrored pair) given in brain semi-axes."""
    c, r = _scaled(center, scene.semi), _scaled(semi, scene.semi)
    box = scene.box((0.0, c[1], c[2]) if mirrored else c, (r[0] + abs(c[0]) if mirrored else r[0], r[1], r[2]))
    x, y, z = scene.at(box)
    return box, _ellipsoid_sd((np.abs(x) if mirrored else x) - c[0], y - c[1], z - c[2], r)


def _cerebrum_sd(x, y, z, semi) -> np.ndarray:
    """The cerebrum: an ellipsoid narrower in front, wider below, flatter on top and bottom in coronal section."""
    ax, ay, az = semi
    u = x / ax
    width = (1 - 0.1 * np.clip(y / ay, -1, 1)) * (1 - 0.08 * z / az)
    return _ellipsoid_sd(x / width, y, z * (1 - 0.22 * u * u), semi)


def _brain_parts(x, y, z, semi) -> dict[str, np.ndarray]:
    """Signed distances of the cerebrum, olfactory bulbs, cerebellum, brainstem and their union."""
    ax, ay, az = semi
    parts = {
        "cerebrum": _cerebrum_sd(x, y, z, semi),
        "bulbs": _ellipsoid_sd(np.abs(x) - 0.2 * ax, y - 1.2 * ay, z + 0.05 * az, _scaled((0.21, 0.3, 0.42), semi)),
        "cerebellum": _ellipsoid_sd(x, y + 1.22 * ay, z - 0.02 * az, _scaled((0.62, 0.36, 0.72), semi)),
        "brainstem": _ellipsoid_sd(x, y + 1.0 * ay, z + 0.5 * az, _scaled((0.32, 0.75, 0.38), semi)),
    }
    k = 0.15 * ax
    union = _smooth_union(_smooth_union(parts["cerebrum"], parts["bulbs"], k), parts["cerebellum"], k)
    parts["union"] = _smooth_union(union, parts["brainstem"], k)
    return parts


def _head_sd(scene: _Scene, brain_sd: np.ndarray, eyes_sd: np.ndarray, an: Anatomy) -> np.ndarray:
    """Outline of the head: the vault with its scalp and temporal muscles, the jaw and neck, the eyes."""
    x, y, z = scene.coords
    ax, ay, az = scene.semi
    hs, k = an.head_scale, 0.5 * ax
    snout = 1 - 0.15 * np.clip(y / ay, 0, 2)  # the head narrows towards the nose
    upper = _ellipsoid_sd(x / snout, y + 0.05 * ay, z + 0.15 * az, (1.42 * ax * hs, 1.5 * ay, 1.3 * az))
    lower = _ellipsoid_sd(x / snout, y + 0.25 * ay, z + 1.75 * az, (1.45 * ax * hs, 2.0 * ay, 1.55 * az * hs))
    nose = _ellipsoid_sd(x, y - 1.6 * ay, z + 0.8 * az, (0.45 * ax, 0.9 * ay, 0.75 * az))
    vault = brain_sd - (an.csf_mm + an.skull_mm + an.scalp_mm)
    head = _smooth_union(_smooth_union(_smooth_union(upper, lower, k), nose, k), vault, 0.3 * k)
    return _smooth_union(head, eyes_sd, 0.3 * k)


def _paint_head(canvas: _Canvas, scene: _Scene, brain_sd: np.ndarray, spec: DomainSpec) -> None:
    """Muscle with fat septa, patchy scalp fat, skin, tongue, jaw bones, airways and eyes: everything outside the skull.

    There are no round fat pads in the jaw: rodent masticatory fat lies in the thin fascial planes between muscles
    (the septa below). Round pads were in an earlier version, and the published RatLesNetV2 marked them as lesion.
    """
    an, co = spec.anatomy, spec.contrast
    values = {"tongue": 1.3 * co.muscle, "mandible": co.bone, "airway": 0.0, "ear canal": 0.0,
              "nasal cavity": 0.0, "eye": co.eye, "lens": co.lens, "salivary gland": co.gland,
              "harderian gland": co.gland}
    parts = {name: _part_sd(scene, c, s, m) for name, c, s, m in _HEAD_PARTS}
    head = _head_sd(scene, brain_sd, scene.full(*parts["eye"]), an)
    texture = scene.pose.texture(scene.rel)
    skin = 0.25 * an.scalp_mm
    # Skeletal muscle is bundles of fascicles with fat and connective-tissue septa between them: a fine random
    # field sets each voxel's fat fraction (about 10 % on average), a coarse one the patchiness.
    septa = 0.8 * np.clip(scene.pose.fascicles(scene.rel) - 0.9, 0, 0.6)
    canvas.paint(head, co.muscle * (1 + 0.06 * texture) + septa * (co.fat - co.muscle))
    # The rodent scalp is skin over the temporal muscles with little subcutaneous fat: fat only in patches.
    canvas.paint(_band(head, skin, skin + 0.4 * an.scalp_mm * np.clip(texture - 0.7, 0, 1)), co.fat)
    canvas.paint(_band(head, 0.0, skin), co.skin)
    for name, (box, sd) in parts.items():
        canvas.paint(sd, values[name], box)


def _paint_skull(canvas: _Canvas, scene: _Scene, brain_sd: np.ndarray, an: Anatomy, co: Contrast) -> None:
    """Dark bone (thicker at the skull base) and a thin rim of bright CSF around the brain."""
    center, half = _BRAIN_BOX
    box = scene.box(_scaled(center, scene.semi), np.add(_scaled(half, scene.semi), 3 * an.skull_mm + an.csf_mm))
    sd, z = brain_sd[box], scene.at(box)[2]
    # Subarachnoid CSF: the dura lies almost on the dorsal cortex of rodents (a few tens of um, well under a
    # voxel), the basal cisterns are wider (Paxinos and Watson, The Rat Brain in Stereotaxic Coordinates).
    ventral = 0.2 + 2.3 * np.clip(-0.2 - z / scene.semi[2], 0, 1)
    csf = an.csf_mm * ventral * np.clip(1 + 0.8 * scene.pose.texture(scene.rel_at(box)), 0, None)  # patchy
    bone = an.skull_mm * (1 + 1.5 * np.clip(-z / scene.semi[2] - 0.3, 0, 1))
    canvas.paint(sd - csf - bone, co.bone, box)
    canvas.paint(sd - csf, co.csf, box)


def _paint_hindbrain(canvas: _Canvas, box, t, parts, co: Contrast, semi, texture: np.ndarray) -> None:
    """Olfactory bulbs, cerebellum (folia around a white-matter core) and brainstem."""
    x, y, z = t
    ax, ay, az = semi
    canvas.paint(parts["bulbs"][box], 1.04, box)
    cerebellum = parts["cerebellum"][box]
    folia = np.sqrt(x * x + (y + 1.22 * ay) ** 2 + (z + 0.3 * az) ** 2) * np.float32(2 * np.pi / (0.09 * ax))
    folds = 0.12 * np.clip(1 + cerebellum / (0.2 * ax), 0, 1)  # folia in the outer cerebellum only
    canvas.paint(cerebellum, 0.97 + folds * np.cos(folia + 2.5 * texture), box)
    vitae = _ellipsoid_sd(x, y + 1.22 * ay, z + 0.1 * az, _scaled((0.12, 0.2, 0.3), semi))
    canvas.paint(vitae - 0.05 * ax * texture, co.white_matter, box)
    canvas.paint(parts["brainstem"][box], 0.85, box)


def _paint_brain(canvas: _Canvas, box, t, parts, spec: DomainSpec, texture: np.ndarray, speckle: np.ndarray):
    """Cortex, white-matter band, striatum, thalamus, hippocampus, hindbrain and CSF spaces; returns the CSF sd."""
    x, y, z = t
    an, co = spec.anatomy, spec.contrast
    ax, ay, az = an.brain_semi_axes_mm
    depth = -_cerebrum_sd(x, y, z, an.brain_semi_axes_mm)
    cortex = an.cortex_mm * (1 + 0.7 * (x / ax) ** 2)
    # Cortical layers in T2w: cell-sparse layer I a little brighter, the fibre-rich deep layers V-VI a little
    # darker (a few %; e.g. Boretius et al., NeuroImage 47:1252, 2009, at 9.4 T).
    relative = np.clip(depth / cortex, 0, 1)
    layers = 1.0 + 0.025 * np.clip(1 - relative / 0.12, 0, 1) - 0.035 * np.clip((relative - 0.65) / 0.35, 0, 1)
    canvas.paint(parts["union"][box], layers * (1 + 0.03 * texture), box)
    _paint_hindbrain(canvas, box, t, parts, co, an.brain_semi_axes_mm, texture)
    wm = an.white_matter_mm * (1 + 0.8 * np.exp(-((x / (0.25 * ax)) ** 2))) * np.clip((z / az + 0.35) / 0.35, 0, 1)
    inner = cortex + wm
    extent = np.maximum(-(y + 0.85 * ay), y - 0.8 * ay)  # white matter and deep grey, front to back
    # Striatum: grey matter crossed by the dark fibre bundles of the internal capsule; thalamus more myelinated.
    fibres = 1 + (co.white_matter / co.deep_grey - 1) * np.clip(speckle - 0.8, 0, 1)
    deep = np.where(y < -0.2 * ay, np.float32(co.thalamus), co.deep_grey * fibres)
    deep = 1 + (deep - 1) * np.clip((z / az + 0.65) / 0.3, 0, 1)  # fades into the ventral grey matter
    canvas.paint(np.maximum(inner - depth, extent), deep, box)
    hippocampus = np.maximum(np.maximum(depth - inner - 0.22 * az, y + 0.25 * ay), 0.05 * az - z)
    hippocampus = np.maximum(np.maximum(hippocampus, inner - depth), np.abs(x) - 0.7 * ax)
    canvas.paint(np.maximum(hippocampus, extent), 1.03, box)
    canvas.paint(np.maximum(_band(-depth, cortex, inner), extent), co.white_matter, box)
    csf = np.maximum(_ventricles_sd(x, y, z, an, inner - depth + 0.5 * an.ventricle_mm), -depth)
    canvas.paint(csf, co.csf, box)
    _paint_vessels(canvas, box, t, an, co)
    return csf


# Vessels that run front to back and show as flow voids in a spin-echo train: the superior sagittal sinus on the
# dorsal midline, the middle cerebral arteries over the lateral cortex near the rhinal fissure, the azygos
# pericallosal artery in the fissure; (x, z) in brain semi-axes, radius in mm at rat size (scaled with the brain).
_VESSELS = (((0.0, 1.02), 0.22), ((0.93, -0.3), 0.12), ((-0.93, -0.3), 0.12), ((0.0, 0.62), 0.08),
            ((0.55, -0.85), 0.1), ((-0.55, -0.85), 0.1))


def _paint_vessels(canvas: _Canvas, box, t, an: Anatomy, co: Contrast) -> None:
    x, y, z = t
    ax, ay, az = an.brain_semi_axes_mm
    size = ax / 7.5
    along = np.abs(y) - 0.85 * ay
    for (cx, cz), radius in _VESSELS:
        tube = np.sqrt((x - cx * ax) ** 2 + (z - cz * az) ** 2) - radius * size
        canvas.paint(np.maximum(tube, along), co.vessel, box)


def _ventricles_sd(x, y, z, an: Anatomy, below_white_matter: np.ndarray) -> np.ndarray:
    """Lateral ventricles (thin tilted slits under the corpus callosum), third ventricle, interhemispheric fissure."""
    ax, ay, az = an.brain_semi_axes_mm
    length = 0.25 * az
    top = az - an.cortex_mm - 1.5 * an.white_matter_mm
    xl, zl = np.abs(x) - 0.24 * ax, z - (top - 1.1 * length)
    cos, sin = float(np.cos(np.radians(30))), float(np.sin(np.radians(30)))
    across, along = cos * xl - sin * zl, sin * xl + cos * zl
    across = across - (0.3 / length) * along * along  # bent into a crescent around the striatum
    lateral = _ellipsoid_sd(across, y - 0.12 * ay, along, (an.ventricle_mm, 0.35 * ay, length))
    third = _ellipsoid_sd(x, y + 0.4 * ay, z + 0.35 * az, (0.7 * an.ventricle_mm, 0.28 * ay, 0.32 * az))
    fissure = _ellipsoid_sd(x, y, z - az, (0.8 * an.ventricle_mm, 0.95 * ay, 1.15 * an.cortex_mm))
    return np.minimum(np.minimum(np.maximum(lateral, below_white_matter), third), fissure)


def _midline_shift(x, y, semi, lesion: _Lesion, shift_mm: float) -> np.ndarray:
    """Push the midline away from the lesion: the swollen hemisphere widens, the other one narrows."""
    bulge = np.clip(1 - (x / semi[0]) ** 2, 0, 1) * np.exp(-(((y / semi[1]) - float(lesion.center[1])) / 0.8) ** 2)
    return x + np.float32(lesion.side * shift_mm) * bulge


def _lesion_sd(t, rel, lesion: _Lesion, cerebrum_sd, csf_sd, semi) -> np.ndarray:
    """A deformed ellipsoid in lateral striatum and cortex, cut at a wavy medial border, inside the brain."""
    x, y, z = t
    center, radii = _scaled(lesion.center, semi), _scaled(lesion.semi, semi)
    shape = lesion.shape(rel)
    blob = _ellipsoid_sd(x - lesion.side * center[0], y - center[1], z - center[2], radii)
    blob = blob - np.float32(0.2 * min(radii)) * shape
    dorsal = np.clip(z / semi[2] + 0.1, 0, 1)
    medial_x = semi[0] * (lesion.medial_limit + 0.6 * dorsal**1.5 + 0.05 * shape)  # oblique: spares dorsomedial cortex
    medial = medial_x - lesion.side * x
    return np.maximum(np.maximum(blob, medial), np.maximum(cerebrum_sd, -csf_sd))


# ------------------------------------------------------------------------------------- scanner and cases


def _coil_and_bias(affine: np.ndarray, shape, spec: DomainSpec, pose: _Pose) -> np.ndarray:
    """Receive sensitivity, 1 at the brain centre: a surface loop over the head times a smooth random field.

    By reciprocity (Hoult and Richards, J Magn Reson 24:71, 1976) a receive loop's sensitivity is the field it
    would make per unit current. Biot-Savart on a circular loop of radius ``a`` gives ``a^2 / (a^2 + d^2)^1.5`` on
    its axis at depth ``d``; off the axis the squared distance ``r^2`` from the axis is added to ``d^2`` (a
    first-order approximation of the elliptic-integral solution, good within about a radius of the axis).
    """
    x, y, z = _world_offsets(affine, shape, pose.center)
    a = spec.coil_radius_mm
    plane = spec.anatomy.brain_semi_axes_mm[2] + spec.coil_gap_mm  # loop height above the brain centre
    depth = np.maximum(plane - z, 0.5 * spec.coil_gap_mm)  # nothing reaches above the loop
    d2 = depth[None, :, None] ** 2 + x[:, None, None] ** 2 + y[None, None, :] ** 2
    coil = ((a * a + plane * plane) / (a * a + d2)) ** 1.5
    rel = (x[:, None, None], y[None, None, :], z[None, :, None])
    return coil.astype(np.float32) * np.exp(np.float32(spec.bias_strength) * pose.bias(rel))


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag)


# Partial volume across thick slices: a 2D slice integrates its slice profile, so structures that curve through a
# 0.5-1 mm slice (the cortical surface at the poles, ventricles, the lesion border) blur along the slice axis. The
# slab is sampled at SUB_SLICES positions per slice (a box profile; the real profile is about rectangular for a
# well-designed RARE refocusing pulse) and averaged; the label is the majority of those samples.
SUB_SLICES = (-0.25, 0.25)


def _render(spec: DomainSpec, pose: _Pose, drawn: _Lesion, lesion: bool, affine: np.ndarray):
    """Noise-free signal, lesion indicator and brain indicator (float32, full grid) at one slice position."""
    scene = _Scene(spec, pose, affine)
    parts = _brain_parts(*scene.coords, scene.semi)
    canvas = _Canvas(scene.coords[0].shape, spec.spacing[0])
    _paint_head(canvas, scene, parts["union"], spec)
    _paint_skull(canvas, scene, parts["union"], spec.anatomy, spec.contrast)
    box = scene.box(*(_scaled(v, scene.semi) for v in _BRAIN_BOX))
    x, y, z = scene.at(box)
    rel = scene.rel_at(box)
    if lesion:
        shift_mm = spec.anatomy.midline_shift_mm * (drawn.scale / LESION_SCALE[1]) ** 2  # full shift at the largest
        x = _midline_shift(x, y, scene.semi, drawn, shift_mm)
    speckle = pose.speckle(rel)
    csf = _paint_brain(canvas, box, (x, y, z), parts, spec, pose.texture(rel), speckle)
    signal, label, brain = (np.zeros(scene.shape, np.float32) for _ in range(3))
    if lesion:
        lesion_sd = _lesion_sd((x, y, z), rel, drawn, parts["cerebrum"][box], csf, scene.semi)
        canvas.paint(lesion_sd, _lesion_signal(lesion_sd, drawn, spec, rel, speckle), box)
        label[scene.window][box] = lesion_sd < 0
    signal[scene.window] = canvas.image
    brain[scene.window] = parts["union"] < 0
    return signal, label, brain


RIM_FRACTION = 0.04  # rim width in brain half-widths


def _lesion_signal(sd: np.ndarray, drawn: _Lesion, spec: DomainSpec, rel, speckle: np.ndarray) -> np.ndarray:
    """A hyperintense core inside a milder oedematous rim (T2 rises less at the border zone), patchy in both.

    At 24 h the T2 of the core is up most, the peri-infarct rim less (Hoehn-Berlage et al. 1995), and the
    core is heterogeneous (spared vessels, oedema gradients): a coarse and a fine random field, about +-8 %.
    """
    rim_mm = RIM_FRACTION * spec.anatomy.brain_semi_axes_mm[0]  # 0.3 mm in the rat, 0.2 mm in the mouse
    depth = np.clip(-sd / rim_mm, 0, 1)
    value = spec.contrast.lesion_rim + (drawn.contrast - spec.contrast.lesion_rim) * depth
    return value * (1 + 0.07 * drawn.texture(rel) + 0.03 * speckle)


def synthesize_case(spec: DomainSpec, case_id: str, rng: np.random.Generator, lesion: bool) -> SyntheticCase:
    """One scan of ``spec``'s domain; ``lesion=False`` gives a sham (same anatomy for the same draws, empty mask).

    ``image`` is int16 as stored (grey matter near ``spec.signal_scale``), ``label`` uint8, ``affine`` RAS mm.
    """
    pose, drawn = _draw_pose(rng, spec), _draw_lesion(rng, spec)
    affine = _acquisition_affine(spec, pose.origin)
    signal, label, brain = (np.zeros((spec.matrix, spec.matrix, spec.n_slices), np.float32) for _ in range(3))
    for offset in SUB_SLICES:
        shifted = affine.copy()
        shifted[:3, 3] += offset * affine[:3, 2]
        parts = _render(spec, pose, drawn, lesion, shifted)
        for total, part in zip((signal, label, brain), parts):
            total += part / len(SUB_SLICES)
    signal = ndimage.gaussian_filter(signal, _PSF_SIGMA_PIXELS, truncate=3.0)
    image = _rician(signal * _coil_and_bias(affine, signal.shape, spec, pose), spec.noise_sigma, rng)
    label = (label >= 0.5).astype(np.uint8)
    return SyntheticCase(
        case_id=case_id, group="MCAo" if lesion else "sham",
        image=np.clip(np.rint(image * spec.signal_scale), 0, np.iinfo(np.int16).max).astype(np.int16),
        label=label, affine=affine, lesion_volume_mm3=float(label.sum()) * float(np.prod(spec.spacing)),
        brain_mask=brain >= 0.5,
    )


# ------------------------------------------------------------------------------------------------ dataset


def _nifti_header(spec: DomainSpec, what: str) -> nib.Nifti1Header:
    """A scanner-like header: mm units, coronal slices on axis 2, a description of what the file holds."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(freq=0, phase=1, slice=2)
    header["descrip"] = f"lesionseg synthetic {spec.name} T2w RARE {what}".encode()[:79]
    return header


def _sham_positions(n_cases: int, sham_fraction: float, seed: int, domain_key: int) -> set[int]:
    n_shams = round(n_cases * sham_fraction)
    rng = np.random.default_rng([seed, domain_key])
    return {int(i) for i in rng.choice(n_cases, size=n_shams, replace=False)}


def _check_dataset_args(n_cases: int, seed: int, sham_fraction: float) -> None:
    if isinstance(n_cases, bool) or int(n_cases) != n_cases or n_cases < 1:
        raise ValueError(f"n_cases: {n_cases!r} is not a positive integer; pass how many scans to generate")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed: {seed!r} is not a non-negative integer; pass e.g. 0")
    if not 0.0 <= sham_fraction <= 1.0:
        raise ValueError(f"sham_fraction: {sham_fraction!r} is outside [0, 1]; pass e.g. 0.25")


def _cases_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    columns = ["case_id", "group", "lesion_volume_mm3", "spacing"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def synthesize_dataset(
    domain: str,
    n_cases: int,
    seed: int,
    out_dir: str | Path,
    *,
    sham_fraction: float = 0.25,
    matrix: int | None = None,
    n_slices: int | None = None,
    case_prefix: str | None = None,
) -> Path:
    """Write ``n_cases`` synthetic scans of ``domain`` as an nnU-Net v2 raw dataset (plus ``cases.csv``), with
    case ids ``{case_prefix or domain}_000`` ... (a new cohort of the same domain gets its own prefix).

    The directory is built aside and moved into place only when complete. Case ``i`` depends only on
    (seed, domain, i) and whether it is a sham; which cases are shams (``round(n_cases * sham_fraction)`` of
    them) is drawn from the seed. The same arguments give byte-identical files.
    """
    spec = domain_spec(domain, matrix=matrix, n_slices=n_slices)
    _check_dataset_args(n_cases, seed, sham_fraction)
    domain_key = zlib.crc32(domain.encode())
    shams = _sham_positions(int(n_cases), sham_fraction, int(seed), domain_key)
    spacing = "x".join(f"{s:.6g}" for s in spec.spacing)
    rows = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for i in range(int(n_cases)):
            rng = np.random.default_rng([int(seed), domain_key, i])
            case = synthesize_case(spec, f"{case_prefix or domain}_{i:03d}", rng, lesion=i not in shams)
            write_volume(tmp / "imagesTr" / f"{case.case_id}_0000.nii.gz", case.image, case.affine,
                         _nifti_header(spec, "image"))
            write_volume(tmp / "labelsTr" / f"{case.case_id}.nii.gz", case.label, case.affine,
                         _nifti_header(spec, "lesion label"))
            rows.append({"case_id": case.case_id, "group": case.group,
                         "lesion_volume_mm3": round(case.lesion_volume_mm3, 6), "spacing": spacing})
        write_json(tmp / "dataset.json", {
            "name": f"synthetic_{domain}",
            "description": f"Synthetic {domain} T2w MCAo MRI (coronal 2D RARE, head not skull-stripped) "
                           f"from lesionseg's generator",
            "channel_names": {"0": "T2w"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": int(n_cases),
            "file_ending": ".nii.gz",
            "domain": domain,
            "generator": {"module": __name__, "seed": int(seed), "matrix": spec.matrix, "n_slices": spec.n_slices,
                          "sham_fraction": sham_fraction},
        })
        write_text(tmp / "cases.csv", _cases_csv(rows))
    return out_dir
