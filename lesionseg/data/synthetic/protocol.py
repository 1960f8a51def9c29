"""The cohort protocol layer: relaxation times at the scanner's field and the T2w RARE signal they give."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
# T2 about 45-50 ms). T1 grows and T2 shrinks with field. The thalamus holds more myelinated fibres than cortex: a
# little shorter T2. The striatum's grey matter (between the internal capsule's bundles, drawn apart in the anatomy)
# has the cortex's PD and T1 and a T2 calibrated on real in vivo T2w brains: real neocortex / striatum medians are
# 0.977-1.000 (8 FVB/NCrl mice) and 1.004 (SIGMA rat template); on the caudate putamen drawn at its real size,
# striatum T2 = cortex T2 (mouse) and cortex T2 + 0.5 ms (rat; bundles included) give the generated volume-coil
# brains 0.993 and 1.012 (benchmarks/results_striatum_calibration.md, docs/synthetic.md). CSF and
# vitreous humour are nearly free water (T1 3.5-4 s; T2 well over 100 ms, shortened at high field by diffusion and
# exchange). Ischaemic lesion at 24 h (vasogenic + cytotoxic oedema):
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
        "grey": Relaxation(0.80, 1.90, 42), "striatum": Relaxation(0.80, 1.90, 42.5),
        "thalamus": Relaxation(0.77, 1.75, 38), "white": Relaxation(0.70, 1.60, 34),
        "csf": Relaxation(1.00, 3.80, 170), "vitreous": Relaxation(1.00, 3.50, 200),
        "lesion_low": Relaxation(0.87, 2.30, 62), "lesion_high": Relaxation(0.89, 2.60, 95),
        "lesion_rim": Relaxation(0.82, 2.00, 47), "muscle": Relaxation(0.75, 1.90, 35),
        "fat": Relaxation(0.90, 0.55, 60), "skin": Relaxation(0.70, 1.50, 30),
        "bone": Relaxation(0.15, 1.00, 2), "lens": Relaxation(0.60, 1.20, 15),
        "gland": Relaxation(0.85, 1.80, 45),
    },
    "mouse": {
        "grey": Relaxation(0.80, 1.75, 46), "striatum": Relaxation(0.80, 1.75, 46),
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


# ------------------------------------------------------------------ cohorts: field strength and sequence
# Field dependence of tissue water relaxation, fitted as power laws through de Graaf et al., MRM 56:386 (2006)
# (rat brain water at 4.0, 9.4 and 11.7 T: T1 grows, T2 shrinks with field). The exponents reproduce this module's
# own tables within a few ms (mouse grey matter T2 46 ms at 7 T -> 40 ms at 9.4 T, 36 ms at 11.7 T; rat 42 ms at
# 9.4 T). Fat, bone and the lens (T2 of a few ms, or J-coupled lines) are left as they are.
T2_FIELD_EXPONENT = 0.5  # T2 ~ B^-0.5
T1_FIELD_EXPONENT = 0.35  # T1 ~ B^0.35
_FIELD_FIXED = ("fat", "bone", "lens")
BASE_FIELD_T = {"rat": 9.4, "mouse": 7.0}  # the field at which RELAXATION's tables are given


def relaxation_at(species: str, field_t: float) -> dict[str, Relaxation]:
    """``RELAXATION[species]`` moved from its table's field (:data:`BASE_FIELD_T`) to ``field_t`` tesla."""
    ratio = field_t / BASE_FIELD_T[species]
    return {
        name: tissue if name in _FIELD_FIXED else Relaxation(
            tissue.pd, tissue.t1_s * ratio**T1_FIELD_EXPONENT, tissue.t2_ms * ratio**-T2_FIELD_EXPONENT)
        for name, tissue in RELAXATION[species].items()
    }


@dataclass(frozen=True)
class Protocol:
    """One cohort: its scanner and T2w RARE sequence, and the substrain of its animals (None: not varied)."""

    field_t: float
    tr_s: float
    te_ms: float  # effective echo time
    snr: float  # grey matter at the brain centre / noise sigma
    coil_radius_mm: float  # receive loop radius; a volume coil is a loop far wider than the head
    bias_strength: float  # amplitude of the smooth random log-bias field
    pixel_scale: float = 1.0  # in-plane pixel size / the dataset's (same FOV: the matrix shrinks as it grows)
    slice_scale: float = 1.0  # slice thickness / the dataset's (same slab: fewer, thicker slices)
    substrain: str | None = None  # a key of lesion.SUBSTRAIN_LESION_VOLUME


@dataclass(frozen=True)
class CohortRanges:
    """Where a species' cohorts (labs, scanners, protocols) are drawn from; see docs/synthetic.md for sources."""

    fields_t: tuple[float, ...] = (7.0, 9.4, 11.7)
    field_weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    te_ms: tuple[float, float] = (30.0, 55.0)
    tr_s: tuple[float, float] = (2.5, 4.0)
    snr: tuple[float, float] = (12.0, 35.0)  # log-uniform
    surface_coil_fraction: float = 0.6
    surface_radius_mm: tuple[float, float] = (10.0, 14.0)
    volume_radius_mm: float = 60.0
    bias_strength: tuple[float, float] = (0.03, 0.1)
    # Resolution relative to the dataset's matrix and slice count (params.yaml), each scale uniform from its set:
    # at the demo's 0.2 mm x 0.5 mm, pixels of 0.16 / 0.2 / 0.25 mm and slices of 0.4 / 0.5 / 0.7 mm.
    pixel_scales: tuple[float, ...] = (0.8, 1.0, 1.25)
    slice_scales: tuple[float, ...] = (0.8, 1.0, 1.4)
    # The animals' substrain, one per cohort (lab): the cohorts take these in turn, in an order drawn per world.
    substrains: tuple[str, ...] = ()


def draw_protocol(rng: np.random.Generator, ranges: CohortRanges) -> Protocol:
    """One cohort's protocol from ``ranges``."""
    field = float(rng.choice(ranges.fields_t, p=np.array(ranges.field_weights) / sum(ranges.field_weights)))
    surface = rng.uniform() < ranges.surface_coil_fraction
    return Protocol(
        field_t=field, tr_s=round(float(rng.uniform(*ranges.tr_s)), 2), te_ms=round(float(rng.uniform(*ranges.te_ms)), 1),
        snr=float(np.exp(rng.uniform(*np.log(ranges.snr)))),
        coil_radius_mm=float(rng.uniform(*ranges.surface_radius_mm)) if surface else ranges.volume_radius_mm,
        bias_strength=float(rng.uniform(*ranges.bias_strength)),
    )


def draw_resolution(rng: np.random.Generator, ranges: CohortRanges) -> tuple[float, float]:
    """One cohort's (pixel_scale, slice_scale) from ``ranges`` (a separate stream from :func:`draw_protocol`, so
    adding resolution left every cohort's scanner and sequence as they were)."""
    return float(rng.choice(ranges.pixel_scales)), float(rng.choice(ranges.slice_scales))


def draw_substrains(rng: np.random.Generator, ranges: CohortRanges, n_cohorts: int) -> list[str | None]:
    """Each cohort's substrain: ``ranges.substrains`` taken in turn (so each occurs when there are enough
    cohorts), in a shuffled order. A separate stream again, so the cohorts' scanners stay as they were."""
    if not ranges.substrains:
        return [None] * n_cohorts
    turns = [ranges.substrains[i % len(ranges.substrains)] for i in range(n_cohorts)]
    return [turns[int(i)] for i in rng.permutation(n_cohorts)]
