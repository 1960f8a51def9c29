"""The lesion layer: an MCAo lesion's territory, size, position and signal, and the swelling it causes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lesionseg.data.synthetic.shapes import Field, ellipsoid_sd, scaled

if TYPE_CHECKING:
    from lesionseg.data.synthetic.domains import DomainSpec


# Lesion size. A lesion is an ellipsoid of semi-axes ``scale * (0.62, 0.72, 0.85)`` brain semi-axes, cut at its
# medial border and by the brain surface. Three territory classes (docs/synthetic.md): a striatal lesion
# (``scale`` log-uniform in STRIATAL_SCALE, deep in the striatum); striatum and lateral cortex (uniform in
# LESION_SCALE); the whole MCA territory (uniform in WHOLE_SCALE, reaching back and medially into hippocampus and
# thalamus). How often each class occurs depends on the occlusion time (TERRITORY_BY_OCCLUSION). The geometry is
# in brain semi-axes, so the lesion fraction of the hemisphere is the same in both species. Shams are drawn too
# (their side is the operated side); their lesion is never painted.
LESION_SCALE = (0.65, 1.15)
STRIATAL_SCALE = (0.38, 0.58)
WHOLE_SCALE = (1.0, 1.25)
TERRITORIES = ("striatum", "striatum+cortex", "whole MCA")
# Transient filament MCAo at 24 h: 30 min gives mostly striatal lesions, 45-60 min striatum and cortex, 90 min and
# longer often the whole territory with hippocampus or thalamus (reviews: Liu and McCullough, Int J Physiol
# Pathophysiol Pharmacol 3:1, 2011; McColl et al., Neuroscience 2004, C57BL/6 occlusion-time series). The
# weights are rounded readings of those reports, not fitted: (striatum, striatum+cortex, whole MCA).
TERRITORY_BY_OCCLUSION = {
    30: (0.5, 0.5, 0.0), 45: (0.25, 0.65, 0.1), 60: (0.15, 0.65, 0.2), 90: (0.05, 0.5, 0.45),
}

# Lesion volume by C57BL/6 substrain, relative to the pooled population the volumes above were read from. Zhao,
# Mulligan and Nowak (J Cereb Blood Flow Metab, 2019; PMC6421252, abstract read) found the mean infarct nearly
# two-fold smaller in J-lineage substrains (C57BL/6J, JEiJ, ByJ) than in N-lineage ones (NCrl, NJ, NTac), through
# more small infarcts, after permanent distal MCA + CCA occlusion. Carried over to the filament model as an assumption (Nowak et al.,
# Neurochem Int 127:12, 2019, review it across models). Each animal's lesion semi-axes scale by the cube root of
# its substrain's factor; the brain surface and the medial border clip large lesions, so the drawn volumes move
# less than the factors: 0.5 and 1.5 (an even mix keeps the pooled mean) give J / N = 0.50 in the generated world
# (benchmarks/results_world.md; 0.71 and 1.29, the published ratio taken literally, gave 0.76). The shape of the
# J-lineage distribution (more small infarcts, not all of them smaller) is not modelled.
SUBSTRAIN_LESION_VOLUME = {"C57BL/6J": 0.5, "C57BL/6N": 1.5}


@dataclass(frozen=True)
class TimePoint:
    """Imaging time after occlusion and what it does to a T2w lesion, relative to 24 h."""

    name: str
    t2_excess: float  # lesion T2 rise (above grey matter) relative to 24 h
    swelling: float  # midline shift relative to 24 h; negative: tissue loss pulls the midline (atrophy)
    volume: float  # visible lesion volume relative to 24 h


# T2 of the infarct (rat and mouse): barely raised at 2 h (cytotoxic oedema moves water, T2 changes little), rising
# over 6-24 h, highest at 2-3 days with vasogenic oedema and swelling, lower again at 7-14 days ("fogging",
# pseudo-normalisation while the swelling resolves), then rising as the core cavitates and fills with fluid, with
# tissue loss and ex-vacuo widening by 4-5 weeks (Knight et al., Stroke 22:802, 1991; Hoehn-Berlage et al., NMR
# Biomed 8:345, 1995; Lin et al., J Cereb Blood Flow Metab 2002 for the sub-acute course). The numbers are
# rounded readings of those time courses, relative to 24 h. The 2 h, 6 h and 7 d rises were lowered (0.15, 0.5 and
# 0.7 before) where benchmarks/results_world.md put their lesion / contralateral signal, normalised to TE 40 ms,
# above the published range of the same time courses; each now sits inside it (docs/synthetic.md).
TIME_POINTS = {tp.name: tp for tp in (
    TimePoint("2h", 0.08, 0.2, 0.55), TimePoint("6h", 0.35, 0.5, 0.8), TimePoint("24h", 1.0, 1.0, 1.0),
    TimePoint("48h", 1.2, 1.2, 1.05), TimePoint("72h", 1.15, 1.0, 1.0), TimePoint("7d", 0.55, 0.3, 0.85),
    TimePoint("14d", 0.6, 0.0, 0.7), TimePoint("21d", 0.85, -0.3, 0.65), TimePoint("28d", 1.05, -0.4, 0.6),
    TimePoint("35d", 1.2, -0.5, 0.6),
)}


@dataclass(frozen=True)
class LesionModel:
    """A species' lesions: imaging time points, occlusion times (minutes) and their weights."""

    time_points: tuple[str, ...] = ("24h",)
    time_weights: tuple[float, ...] = (1.0,)
    occlusions_min: tuple[int, ...] = (60,)
    occlusion_weights: tuple[float, ...] = (1.0,)
    whole_scale: tuple[float, float] = WHOLE_SCALE  # size range of whole-territory lesions


@dataclass(frozen=True)
class Lesion:
    """An MCAo lesion's draw; positions and sizes in brain semi-axes."""

    side: float  # +1 right hemisphere, -1 left (for a sham: the operated side)
    scale: float  # size factor, by territory class
    center: np.ndarray
    semi: np.ndarray
    medial_limit: float  # medial border, in brain half-widths from the midline
    contrast: float  # lesion core / grey matter
    shape: Field
    texture: Field
    rim_contrast: float = 1.1  # oedematous rim / grey matter
    territory: str = "striatum+cortex"
    time_point: str = "24h"
    occlusion_min: int = 60
    dorsal_sparing: float = 0.6  # how far the medial border swings out dorsally (spares dorsomedial cortex)

    @property
    def swelling(self) -> float:
        return TIME_POINTS[self.time_point].swelling


def _pick(rng: np.random.Generator, values, weights):
    p = np.asarray(weights, float)
    return values[int(rng.choice(len(values), p=p / p.sum()))]


def _draw_scale(rng: np.random.Generator, territory: str, whole_scale: tuple[float, float]) -> float:
    if territory == "striatum":
        return float(np.exp(rng.uniform(np.log(STRIATAL_SCALE[0]), np.log(STRIATAL_SCALE[1]))))
    return float(rng.uniform(*(LESION_SCALE if territory == "striatum+cortex" else whole_scale)))


def lesion_contrast(spec: DomainSpec, excess: float, name: str, grey: str = "grey") -> float:
    """Signal of ``name`` (a lesion tissue of the spec's table) / grey matter, its T2, T1 and PD rise scaled."""
    from lesionseg.data.synthetic.protocol import Relaxation, rare_signal, relaxation_at

    tissues = relaxation_at(spec.name, spec.field_t)
    g, t = tissues[grey], tissues[name]
    moved = Relaxation(g.pd + excess * (t.pd - g.pd), g.t1_s + excess * (t.t1_s - g.t1_s),
                       g.t2_ms + excess * (t.t2_ms - g.t2_ms))
    return rare_signal(moved, spec.tr_s, spec.te_ms) / rare_signal(g, spec.tr_s, spec.te_ms)


def draw_lesion(rng: np.random.Generator, spec: DomainSpec) -> Lesion:
    """A lesion of ``spec.lesion_model``: time point, occlusion time, territory class, then geometry and signal."""
    model = spec.lesion_model
    time_point = _pick(rng, model.time_points, model.time_weights)
    occlusion = int(_pick(rng, model.occlusions_min, model.occlusion_weights))
    territory = _pick(rng, TERRITORIES, spec.territory_weights or TERRITORY_BY_OCCLUSION[occlusion])
    scale = _draw_scale(rng, territory, model.whole_scale)
    # small lesions sit in the striatum, larger ones reach out into the lateral cortex; the whole territory reaches
    # back over the hippocampus and medially into the thalamus
    grow = float(np.clip((scale - STRIATAL_SCALE[0]) / (0.9 - STRIATAL_SCALE[0]), 0, 1))
    striatum, cortex = np.array([0.4, 0.15, 0.05]), np.array([0.55, 0.05, -0.05])
    center = striatum + grow * (cortex - striatum) + rng.uniform(-0.03, 0.03, 3)
    semi = scale * np.array([0.62, 0.72, 0.85]) * rng.uniform(0.9, 1.1, 3)
    medial, sparing = float(rng.uniform(0.18, 0.24)), 0.6
    if territory == "whole MCA":
        center = center + np.array([-0.05, -0.12, 0.0])
        semi = semi * np.array([1.0, 1.15, 1.0])
        medial, sparing = float(rng.uniform(0.1, 0.16)), 0.45
    stage = TIME_POINTS[time_point]
    substrain = SUBSTRAIN_LESION_VOLUME[spec.substrain] if spec.substrain else 1.0
    semi = semi * (stage.volume * substrain) ** (1 / 3)
    width = spec.anatomy.brain_semi_axes_mm[0]
    side = float(rng.choice([-1.0, 1.0]))
    shape, texture = Field(rng, 1.5 * width), Field(rng, 0.4 * width, n_modes=6)
    mix = float(rng.uniform())  # where the core's T2 lies between the table's low and high lesion
    core = (1 - mix) * lesion_contrast(spec, stage.t2_excess, "lesion_low") + \
        mix * lesion_contrast(spec, stage.t2_excess, "lesion_high")
    return Lesion(
        side=side, scale=scale, center=center, semi=semi, medial_limit=medial, contrast=float(core),
        shape=shape, texture=texture, rim_contrast=lesion_contrast(spec, stage.t2_excess, "lesion_rim"),
        territory=territory, time_point=time_point, occlusion_min=occlusion, dorsal_sparing=sparing,
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
    medial_x = semi[0] * (lesion.medial_limit + lesion.dorsal_sparing * dorsal**1.5 + 0.05 * shape)  # oblique: spares dorsomedial cortex
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
    value = drawn.rim_contrast + (drawn.contrast - drawn.rim_contrast) * depth
    return value * (1 + 0.07 * drawn.texture(rel) + 0.03 * speckle)
