"""The anatomy layer: head, skull and brain of a rodent as smooth analytic shapes in mm, painted tissue by tissue."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lesionseg.data.synthetic.protocol import Contrast
from lesionseg.data.synthetic.shapes import Canvas, band, ellipsoid_sd, scaled, smooth_union

if TYPE_CHECKING:
    from lesionseg.data.synthetic.domains import DomainSpec
    from lesionseg.data.synthetic.scene import Scene


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
    # The groove along the dorsal midline that holds the superior sagittal sinus (half-width, depth), as measured on
    # real in vivo brain masks at 0.15 mm by benchmarks/real_midline.py (docs/synthetic.md).
    sagittal_groove_mm: tuple[float, float] = (0.0, 0.0)
    # The skin (dark, collagen-rich dermis) as a fraction of scalp_mm: calibrated on the skin at the side of 24 real
    # mouse heads by benchmarks/calibrate_skin.py (docs/synthetic.md, "The skin at the side of the head"): 1.0, the
    # thickest step of the declared sweep (0.25, 0.5, 0.75, 1.0), is the nearest the real figure.
    skin_fraction: float = 1.0


BRAIN_BOX = ((0.0, -0.05, -0.05), (1.2, 1.62, 1.2))
# Subarachnoid CSF depth in units of Anatomy.csf_mm: the dura lies almost on the dorsal cortex of rodents (a few
# tens of um, well under a voxel), the basal cisterns are wider (Paxinos and Watson, The Rat Brain in Stereotaxic
# Coordinates). The depth grows from DORSAL_CSF to DORSAL_CSF + BASAL_CSF_GAIN towards the skull base.
DORSAL_CSF, BASAL_CSF_GAIN = 0.2, 2.3


def basal_shell_mm(an: Anatomy) -> float:
    """Deepest basal CSF plus the vault's bone: the shell between brain and skull that subarachnoid blood fills."""
    return (DORSAL_CSF + BASAL_CSF_GAIN) * an.csf_mm + an.skull_mm


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
    # The head changes front to back: ethmoid turbinates (scrolls of bright mucosa and air) under the olfactory
    # bulbs between the eyes; air-filled tympanic bullae ventrolateral to the brainstem, where the ear canals end.
    # Positions and sizes: approximate readings of rodent atlas anatomy (Paxinos and Franklin's mouse atlas;
    # Paxinos and Watson's rat atlas) in brain semi-axes, not measured on images.
    ("turbinates", (0.12, 1.2, -0.72), (0.14, 0.4, 0.26), True),
    ("tympanic bulla", (0.6, -1.0, -1.1), (0.26, 0.3, 0.3), True),
)


def head_box(an: Anatomy) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Head-frame box (centre, half-size in mm) holding the whole head."""
    ax, ay, az = an.brain_semi_axes_mm
    top = 1.1 * az + an.csf_mm + 2.5 * an.skull_mm + an.scalp_mm
    bottom = -(1.75 + 1.55 * an.head_scale) * az
    return (0.0, 0.12 * ay, (top + bottom) / 2), (1.5 * ax * an.head_scale, 2.4 * ay, (top - bottom) / 2)


def _part_sd(scene: Scene, center, semi, mirrored: bool):
    """Box and signed distance of an ellipsoid (or a mirrored pair) given in brain semi-axes."""
    c, r = scaled(center, scene.semi), scaled(semi, scene.semi)
    box = scene.box((0.0, c[1], c[2]) if mirrored else c, (r[0] + abs(c[0]) if mirrored else r[0], r[1], r[2]))
    x, y, z = scene.at(box)
    return box, ellipsoid_sd((np.abs(x) if mirrored else x) - c[0], y - c[1], z - c[2], r)


def cerebrum_sd(x, y, z, semi, groove_mm: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The cerebrum: an ellipsoid narrower in front, wider below, flatter on top and bottom in coronal section, with
    a groove (half-width, depth in mm) along the dorsal midline."""
    ax, ay, az = semi
    u = x / ax
    width = (1 - 0.1 * np.clip(y / ay, -1, 1)) * (1 - 0.08 * z / az)
    cerebrum = ellipsoid_sd(x / width, y, z * (1 - 0.22 * u * u), semi)
    if not groove_mm[1]:
        return cerebrum
    groove = ellipsoid_sd(x, 0 * y, z - az, (groove_mm[0], ay, groove_mm[1]))
    return np.maximum(cerebrum, -groove)


def brain_parts(x, y, z, semi, groove_mm: tuple[float, float] = (0.0, 0.0)) -> dict[str, np.ndarray]:
    """Signed distances of the cerebrum (with its dorsal groove), olfactory bulbs, cerebellum, brainstem and their
    union."""
    ax, ay, az = semi
    parts = {
        "cerebrum": cerebrum_sd(x, y, z, semi, groove_mm),
        "bulbs": ellipsoid_sd(np.abs(x) - 0.2 * ax, y - 1.2 * ay, z + 0.05 * az, scaled((0.21, 0.3, 0.42), semi)),
        "cerebellum": ellipsoid_sd(x, y + 1.22 * ay, z - 0.02 * az, scaled((0.62, 0.36, 0.72), semi)),
        "brainstem": ellipsoid_sd(x, y + 1.0 * ay, z + 0.5 * az, scaled((0.32, 0.75, 0.38), semi)),
    }
    k = 0.15 * ax
    union = smooth_union(smooth_union(parts["cerebrum"], parts["bulbs"], k), parts["cerebellum"], k)
    parts["union"] = smooth_union(union, parts["brainstem"], k)
    return parts


def _head_sd(scene: Scene, brain_sd: np.ndarray, eyes_sd: np.ndarray, an: Anatomy) -> np.ndarray:
    """Outline of the head: the vault with its scalp and temporal muscles, the jaw and neck, the eyes."""
    x, y, z = scene.coords
    ax, ay, az = scene.semi
    hs, k = an.head_scale, 0.5 * ax
    snout = 1 - 0.15 * np.clip(y / ay, 0, 2)  # the head narrows towards the nose
    upper = ellipsoid_sd(x / snout, y + 0.05 * ay, z + 0.15 * az, (1.42 * ax * hs, 1.5 * ay, 1.3 * az))
    lower = ellipsoid_sd(x / snout, y + 0.25 * ay, z + 1.75 * az, (1.45 * ax * hs, 2.0 * ay, 1.55 * az * hs))
    nose = ellipsoid_sd(x, y - 1.6 * ay, z + 0.8 * az, (0.45 * ax, 0.9 * ay, 0.75 * az))
    vault = brain_sd - (an.csf_mm + an.skull_mm + an.scalp_mm)
    # The vault's seam is rounded on the scale of the scalp: a seam on the brain's scale (0.8 mm in the mouse) bulged
    # the outline by up to a quarter of it, a scalp two thirds thicker than drawn (docs/synthetic.md).
    head = smooth_union(smooth_union(smooth_union(upper, lower, k), nose, k), vault, an.scalp_mm)
    return smooth_union(head, eyes_sd, 0.3 * k)


def paint_head(canvas: Canvas, scene: Scene, brain_sd: np.ndarray, spec: DomainSpec, side: float = 1.0) -> None:
    """Muscle with fat septa, patchy scalp fat, skin, tongue, jaw bones, airways and eyes: everything outside the skull.

    There are no round fat pads in the jaw: rodent masticatory fat lies in the thin fascial planes between muscles
    (the septa below). Round pads were in an earlier version, and the published RatLesNetV2 marked them as lesion.
    """
    an, co = spec.anatomy, spec.contrast
    values = {"tongue": 1.3 * co.muscle, "mandible": co.bone, "airway": 0.0, "ear canal": 0.0,
              "nasal cavity": 0.0, "eye": co.eye, "lens": co.lens, "salivary gland": co.gland,
              "harderian gland": co.gland, "turbinates": None, "tympanic bulla": 0.0}
    parts = {name: _part_sd(scene, c, s, m) for name, c, s, m in _HEAD_PARTS}
    head = _head_sd(scene, brain_sd, scene.full(*parts["eye"]), an)
    texture = scene.pose.texture(scene.rel)
    skin = an.skin_fraction * an.scalp_mm
    fascicles = scene.pose.fascicles(scene.rel)
    # Real T2w muscle is dark and homogeneous, crossed by thin bright fascial planes: the zero crossings of a smooth
    # random field are sheets, given a fat fraction that falls off within about a voxel. (The rat's muscle was
    # once fascicles with patchy fat, chosen while watching the published model; it showed as a lattice of dots.)
    septa = 0.35 * np.clip(1 - np.abs(fascicles) / 0.12, 0, 1)
    grain = 0.02
    canvas.paint(head, co.muscle * (1 + grain * texture) + septa * (co.fat - co.muscle))
    if scene.pose.oedema:
        _paint_muscle_oedema(canvas, scene, head, side, co.muscle * (1 + scene.pose.oedema))
    canvas.paint(_scalp_on_vault_sd(head, brain_sd, an), co.skin)
    # The rodent scalp has little subcutaneous fat: fat only in patches.
    canvas.paint(band(head, skin, skin + 0.4 * an.scalp_mm * np.clip(texture - 0.7, 0, 1)), co.fat)
    canvas.paint(band(head, 0.0, skin), co.skin)
    for name, (box, sd) in parts.items():
        canvas.paint(sd, _turbinate_signal(scene, box, co) if values[name] is None else values[name], box)


def _scalp_on_vault_sd(head: np.ndarray, brain_sd: np.ndarray, an: Anatomy) -> np.ndarray:
    """Skin and subcutis lying on the bone over the dorsal vault, with no muscle between.

    The temporal muscles attach at the temporal lines on the side of the vault, so where the head's outline comes
    within about a scalp's depth of the skull (1.5 x ``scalp_mm`` keeps the smooth outline's bulge in) the whole layer
    is scalp; lateral muscle on the bone, far from the outline, stays muscle. Measured on real mouse heads
    (docs/synthetic.md, "The scalp over the vault").
    """
    reach = 1.5 * an.scalp_mm
    near_outline = np.maximum(head, -(head + reach))
    return np.maximum(near_outline, brain_sd - (an.csf_mm + an.skull_mm + reach))


def _turbinate_signal(scene: Scene, box, co: Contrast) -> np.ndarray:
    """Mucosa (watery, bright in T2w, taken as the glands' signal) rolled into thin scrolls with air between:
    the sign of a fine random field decides which, with a partial-volume edge."""
    return co.gland * np.clip(0.5 + 2.0 * scene.pose.speckle(scene.rel_at(box)), 0, 1)


def _paint_muscle_oedema(canvas: Canvas, scene: Scene, head: np.ndarray, side: float, value: float) -> None:
    """Oedema of the temporal muscle on the operated side (``side``: +1 right), inside the head only."""
    ax, ay, az = scene.semi
    x, y, z = scene.coords
    temporalis = ellipsoid_sd(side * x - 1.2 * ax, y + 0.1 * ay, z - 0.05 * az, (0.4 * ax, 0.75 * ay, 0.75 * az))
    canvas.paint(np.maximum(temporalis, head), value)


def paint_skull(canvas: Canvas, scene: Scene, brain_sd: np.ndarray, an: Anatomy, co: Contrast) -> None:
    """Dark bone (thicker at the skull base) and a thin rim of bright CSF around the brain."""
    center, half = BRAIN_BOX
    box = scene.box(scaled(center, scene.semi), np.add(scaled(half, scene.semi), 3 * an.skull_mm + an.csf_mm))
    sd, z = brain_sd[box], scene.at(box)[2]
    ventral = DORSAL_CSF + BASAL_CSF_GAIN * np.clip(-0.2 - z / scene.semi[2], 0, 1)  # subarachnoid CSF depth
    csf = an.csf_mm * ventral * np.clip(1 + 0.8 * scene.pose.texture(scene.rel_at(box)), 0, None)  # patchy
    bone = an.skull_mm * (1 + 1.5 * np.clip(-z / scene.semi[2] - 0.3, 0, 1))
    canvas.paint(sd - csf - bone, co.bone, box)
    canvas.paint(sd - csf, co.csf, box)


def _paint_hindbrain(canvas: Canvas, box, t, parts, co: Contrast, semi, texture: np.ndarray) -> None:
    """Olfactory bulbs, cerebellum (folia around a white-matter core) and brainstem."""
    x, y, z = t
    ax, ay, az = semi
    canvas.paint(parts["bulbs"][box], 1.04, box)
    cerebellum = parts["cerebellum"][box]
    folia = np.sqrt(x * x + (y + 1.22 * ay) ** 2 + (z + 0.3 * az) ** 2) * np.float32(2 * np.pi / (0.09 * ax))
    folds = 0.12 * np.clip(1 + cerebellum / (0.2 * ax), 0, 1)  # folia in the outer cerebellum only
    canvas.paint(cerebellum, 0.97 + folds * np.cos(folia + 2.5 * texture), box)
    vitae = ellipsoid_sd(x, y + 1.22 * ay, z + 0.1 * az, scaled((0.12, 0.2, 0.3), semi))
    canvas.paint(vitae - 0.05 * ax * texture, co.white_matter, box)
    canvas.paint(parts["brainstem"][box], 0.85, box)


class BrainRegions(NamedTuple):
    """Signed distances (negative inside) of the regions :func:`paint_brain` drew, in its box."""

    csf: np.ndarray  # ventricles and interhemispheric fissure: bounds the lesion
    ventricles: np.ndarray
    neocortex: np.ndarray  # the layered cortical band above the rhinal level, without the fissure and hindbrain
    striatum: np.ndarray  # the caudate putamen: its ellipsoid's part of the deep grey, ventricles excluded
    forebrain: np.ndarray  # the cerebrum without the olfactory bulbs and the hindbrain (atlases' forebrain and
    # diencephalon): the caudate putamen's share is measured against it


# The caudate putamen in each hemisphere, placed on 8 in vivo FVB/NCrl mice's labels (dama-lab/mouse-brain-atlas;
# 5th-95th percentiles of its voxels in forebrain half-extents, converted to brain semi-axes): centre (|x|, y, z)
# and semi-axes in brain semi-axes. The rest of the deep grey in front of the thalamus (septum, basal forebrain,
# pallidum) reads BASAL_FOREBRAIN of the caudate putamen's signal there (median of the 8 mice; docs/synthetic.md).
CAUDATE_PUTAMEN = ((0.45, 0.27, -0.13), (0.32, 0.42, 0.53))
BASAL_FOREBRAIN = 0.964


def caudate_putamen_sd(x, y, z, semi) -> np.ndarray:
    """Signed distance (mm, negative inside) of the two caudate putamen ellipsoids, before the white matter and the
    ventricles cut them."""
    (cx, cy, cz), half = CAUDATE_PUTAMEN
    return ellipsoid_sd(np.abs(x) - cx * semi[0], y - cy * semi[1], z - cz * semi[2], scaled(half, semi))


def paint_brain(canvas: Canvas, box, t, parts, spec: DomainSpec, texture: np.ndarray, speckle: np.ndarray,
                ventricle_volume: tuple[float, float] = (1.0, 1.0)) -> BrainRegions:
    """Cortex, white-matter band, striatum, thalamus, hippocampus, hindbrain and CSF spaces."""
    x, y, z = t
    an, co = spec.anatomy, spec.contrast
    ax, ay, az = an.brain_semi_axes_mm
    depth = -cerebrum_sd(x, y, z, an.brain_semi_axes_mm, an.sagittal_groove_mm)
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
    caudate_putamen = caudate_putamen_sd(x, y, z, an.brain_semi_axes_mm)
    grey = np.where(caudate_putamen < 0, co.deep_grey * fibres, np.float32(BASAL_FOREBRAIN * co.deep_grey))
    deep = np.where(y < -0.2 * ay, np.float32(co.thalamus), grey)
    deep = 1 + (deep - 1) * np.clip((z / az + 0.65) / 0.3, 0, 1)  # fades into the ventral grey matter
    deep_sd = np.maximum(inner - depth, extent)
    canvas.paint(deep_sd, deep, box)
    hippocampus = np.maximum(np.maximum(depth - inner - 0.22 * az, y + 0.25 * ay), 0.05 * az - z)
    hippocampus = np.maximum(np.maximum(hippocampus, inner - depth), np.abs(x) - 0.7 * ax)
    canvas.paint(np.maximum(hippocampus, extent), 1.03, box)
    canvas.paint(np.maximum(band(-depth, cortex, inner), extent), co.white_matter, box)
    ventricles, fissure = _ventricles_sd(x, y, z, an, inner - depth + 0.5 * an.ventricle_mm, ventricle_volume)
    ventricles = np.maximum(ventricles, -depth)
    # The interhemispheric fissure holds the falx, pia and vessels with little CSF: real in vivo T2w shows no bright
    # line there (dorsal midline / lateral cortex 0.95-1.05 in 8 FVB mice, 0.985 in the SIGMA rat template;
    # docs/synthetic.md). It bounds the lesion (the returned CSF sd) but is not painted as CSF.
    canvas.paint(ventricles, co.csf, box)
    _paint_vessels(canvas, box, t, an, co)
    csf = np.minimum(ventricles, np.maximum(fissure, -depth))
    # Measuring regions only (benchmarks/world.py), comparable with atlas labels of neocortex and caudate putamen.
    hindbrain = np.minimum.reduce([parts[name][box] for name in ("bulbs", "cerebellum", "brainstem")])
    neocortex = np.maximum.reduce([-depth, depth - cortex, -csf, -hindbrain, -0.35 * az - z])
    striatum = np.maximum.reduce([deep_sd, -ventricles, -0.2 * ay - y, caudate_putamen])
    forebrain = np.maximum(parts["cerebrum"][box], -hindbrain)
    return BrainRegions(csf, ventricles, neocortex, striatum, forebrain)


# Vessels that run front to back and show as flow voids in a spin-echo train: the superior sagittal sinus on the
# dorsal midline (centred at the mouth of the groove, its lower half in it), the middle cerebral arteries over the
# lateral cortex near the rhinal fissure, the azygos pericallosal artery in the fissure; (x, z) in brain semi-axes,
# radius in mm at rat size (scaled with the brain).
_VESSELS = (((0.0, 1.0), 0.22), ((0.93, -0.3), 0.12), ((-0.93, -0.3), 0.12), ((0.0, 0.62), 0.08),
            ((0.55, -0.85), 0.1), ((-0.55, -0.85), 0.1))


def _paint_vessels(canvas: Canvas, box, t, an: Anatomy, co: Contrast) -> None:
    x, y, z = t
    ax, ay, az = an.brain_semi_axes_mm
    size = ax / 7.5
    along = np.abs(y) - 0.85 * ay
    for (cx, cz), radius in _VESSELS:
        tube = np.sqrt((x - cx * ax) ** 2 + (z - cz * az) ** 2) - radius * size
        canvas.paint(np.maximum(tube, along), co.vessel, box)


def _ventricles_sd(x, y, z, an: Anatomy, below_white_matter: np.ndarray, volume=(1.0, 1.0)):
    """Signed distances of the ventricles (lateral, third, aqueduct) and of the interhemispheric fissure.

    The lateral ventricles are thin tilted slits under the corpus callosum, bent around the striatum; ``volume``
    (right, left) scales each one's volume, mostly by its width.
    """
    ax, ay, az = an.brain_semi_axes_mm
    length = 0.25 * az
    top = az - an.cortex_mm - 1.5 * an.white_matter_mm
    xl, zl = np.abs(x) - 0.24 * ax, z - (top - 1.1 * length)
    cos, sin = float(np.cos(np.radians(30))), float(np.sin(np.radians(30)))
    across, along = cos * xl - sin * zl, sin * xl + cos * zl
    across = across - (0.3 / length) * along * along  # bent into a crescent around the striatum
    side = np.where(x >= 0, np.float32(volume[0]), np.float32(volume[1]))
    width, reach = side**0.7, side**0.3
    lateral = ellipsoid_sd(across / width, y - 0.12 * ay, along / reach, (an.ventricle_mm, 0.35 * ay, length))
    mean = float(np.sqrt(0.5 * (volume[0] + volume[1])))
    third = ellipsoid_sd(x, y + 0.4 * ay, z + 0.35 * az, (0.7 * an.ventricle_mm * mean, 0.28 * ay, 0.32 * az))
    # the cerebral aqueduct: a narrow canal through the midbrain, behind the third ventricle
    aqueduct = np.maximum(np.sqrt(x * x + (z + 0.2 * az) ** 2) - 1.2 * an.ventricle_mm * mean, np.abs(y + 0.78 * ay)
                          - 0.17 * ay)
    fissure = ellipsoid_sd(x, y, z - az, (0.8 * an.ventricle_mm, 0.95 * ay, 1.15 * an.cortex_mm))
    return np.minimum(np.minimum(np.maximum(lateral, below_white_matter), third), aqueduct), fissure
