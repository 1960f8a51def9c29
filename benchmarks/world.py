"""The synthetic world against the literature: generated mouse and rat cohorts measured like real ones.

Generates a mouse and a rat cohort exactly as ``lesionseg synth`` does (:func:`generate_cases`, the draws that
:func:`synthesize_dataset` writes), measures each scan (brain and ventricle volume, lesion volume by territory
class and occlusion time, lesion/contralateral signal by time point, SNR, dorsal/ventral ratio, sham voxels as
bright as lesion), and writes ``benchmarks/results_world.md`` with each row beside its published or measured
reference, plus mid-slice overlays of a lesion and a sham of each species (``benchmarks/world/``). The
references and where they come from are in ``docs/synthetic.md``; nothing here is fitted to them.

    PYTHONPATH=$PWD python benchmarks/world.py            # about two minutes on 2 cores
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.data.io import write_text  # noqa: E402
from lesionseg.data.synthetic import domain_spec, generate_cases  # noqa: E402
from lesionseg.data.synthetic.domains import cohort_protocols, cohort_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results_world.md"
OVERLAYS = ROOT / "benchmarks" / "world"
SIZES = {"mouse": (128, 32), "rat": (128, 18)}  # the demo's matrices (params.yaml synthesize)
# The protocols' slabs (mouse 32 x 0.5 mm, rat 18 x 1 mm) are not longer than the brain: the whole brain is measured
# on the same animals imaged with this many slices of the same thickness around the same centre.
WHOLE_BRAIN_SLICES = {"mouse": 56, "rat": 40}
# The real heads were measured at 0.15 mm; a band one or two voxels wide, and the 0.25 mm skull under it, read
# differently at the demo's 0.16-0.25 mm rows (the skull is not resolved dark there). The head figures are taken on
# the same animals drawn at a matrix this much finer: rows of 0.12-0.19 mm, 0.15 mm at the median cohort.
HEAD_MATRIX_SCALE = 1.33
REFERENCE_TE_MS = 40.0  # the lesion/contralateral references were read at TE about 30-50 ms

# Published or measured references, (low, high) and source; docs/synthetic.md says how each was obtained.
NEAT = "dama-lab/mouse-brain-atlas NeAt in vivo C57BL/6J (Ma et al. 2008), 10 mice, measured here"
RTG = ("rTg4510 and wild-type in vivo heads (dama-lab/mouse-brain-atlas mask quick-check pictures read back to "
       "intensities, N4-corrected), 24 mice, measured here with the same function (benchmarks/real_scalp.py)")
REFERENCE = {
    ("brain_mm3", "mouse"): ((473, 528), f"union of labelled structures, {NEAT}; the drawn whole-brain masks "
                                         "measure 529-589 (they include surface CSF)"),
    ("brain_mm3", "rat"): ((1765, 1971), "adult Wistar whole brain, in vivo MRI: 1765 +- 86 mm3 (Valdes-Hernandez "
                                         "et al., Front Neuroinform 5:26, 2011) and 1971 +- 23 mm3 (Welniak-Kaminska "
                                         "et al., PLoS One 14:e0215348, 2019, 7 T), as quoted by Goerzen et al., Sci "
                                         "Rep 10:6952 (2020), whose Fischer 344 rats measure 1925 +- 107"),
    ("ventricle_mm3", "mouse"): ((5.3, 8.4), f"ventricles label, {NEAT}"),
    ("ventricle_mm3", "rat"): (None, "no reference measured"),
    ("snr", "mouse"): ((10, 40), "rodent T2w RARE, issue 26"),
    ("snr", "rat"): ((10, 40), "rodent T2w RARE, issue 26"),
    ("midline", "mouse"): ((0.95, 1.05), "FVB/NCrl in vivo T2w (dama-lab/mouse-brain-atlas), 8 mice at 0.15 mm, "
                                          "measured here with dorsal_midline (benchmarks/real_midline.py): "
                                          "0.952-1.045, median 1.008"),
    ("midline", "rat"): ((0.95, 1.05), "SIGMA in vivo rat T2w template (aswendtlab/AIDAmri, rat branch), measured "
                                       "here with dorsal_midline: 0.985 (an average of many rats); range: the mice's"),
    ("groove_mm", "mouse"): ((-0.08, 0.23), "FVB/NCrl in vivo masks (dama-lab), 8 mice at 0.15 mm, measured here "
                                             "with midline_groove_mm: median 0.16; the demo's rows are 0.2 mm"),
    ("groove_mm", "rat"): (None, "SIGMA in vivo rat template's mask, measured here with midline_groove_mm: 0.45 mm "
                                 "at 0.15 mm (one averaged brain, no range); the demo's rows are 0.25 mm"),
    ("scalp_peak", "mouse"): ((0.48, 1.94), f"{RTG}: median 1.17"),
    ("scalp_mean", "mouse"): ((0.45, 1.09), f"{RTG}: median 0.73"),
    ("scalp_width_mm", "mouse"): ((0.15, 0.60), f"{RTG} (0.15 mm voxels): median 0.30"),
    ("muscle", "mouse"): ((0.52, 0.93), f"{RTG}: median 0.74"),
    **{(key, "rat"): (None, "no real rat head measured (the SIGMA template is skull-stripped)")
       for key in ("scalp_peak", "scalp_mean", "scalp_width_mm", "muscle")},
    **{("scalp_width_demo_mm", d): (None, "the real heads are at 0.15 mm: compare the row above") for d in SIZES},
    **{("head_row_mm", d): (None, "real heads: 0.15 mm") for d in SIZES},
    ("dv_ratio", "mouse"): ((1.01, 1.10), "volume-coil cohorts only: FVB/NCrl in vivo templates (dama-lab), 8 mice, "
                                          "measured here (volume-coil-like)"),
    ("dv_ratio_surface", "mouse"): (None, "surface-loop cohorts: no published dorsal/ventral figure found; a loop "
                                          "over the head is brighter on top by design (the seed study's images)"),
    ("dv_ratio", "rat"): ((1.01, 1.10), "as the mouse volume coil (the rat's 60 mm loop is volume-like); the "
                                        "published RatLesNetV2 needed a near-flat profile"),
    ("cortex_striatum", "mouse"): ((0.977, 1.000), "FVB/NCrl in vivo T2w (dama-lab/mouse-brain-atlas), 8 mice with "
                                                   "manual labels (neocortex / caudate putamen), measured here with "
                                                   "cortex_striatum_ratio (benchmarks/real_cortex.py): median 0.991"),
    ("cortex_striatum", "rat"): ((0.977, 1.004), "SIGMA in vivo rat T2w template (aswendtlab/AIDAmri, rat branch), "
                                                 "motor + somatosensory cortex / striatum, measured here with "
                                                 "cortex_striatum_ratio: 1.004 (an average of many rats); below it, "
                                                 "the mice's range"),
    ("striatum_share", "mouse"): ((4.29, 5.46), "caudate putamen / labelled structures, FVB/NCrl in vivo "
                                                "(dama-lab/mouse-brain-atlas), 8 mice, measured here "
                                                "(benchmarks/real_cortex.py): 26.6-35.6 mm3"),
    ("striatum_share", "rat"): ((3.95, 4.40), "striatum / brain, SIGMA in vivo rat template and atlas, measured here "
                                              "(benchmarks/real_cortex.py): 3.95 % of its brain, 4.40 % of its "
                                              "labelled structures (one averaged brain)"),
    ("striatum_forebrain", "mouse"): ((7.8, 9.35), "caudate putamen / forebrain and diencephalon labels, FVB/NCrl in "
                                                  "vivo (dama-lab), 8 mice, measured here (benchmarks/real_cortex.py)"),
    ("striatum_forebrain", "rat"): (None, "SIGMA's forebrain not summed (its atlas names about 150 areas)"),
    ("forebrain_share", "mouse"): ((55.0, 58.5), "forebrain and diencephalon / labelled structures, FVB/NCrl in vivo "
                                                 "(dama-lab), 8 mice, measured here; the images' extent caudally "
                                                 "decides how much brainstem the labels hold"),
    ("forebrain_share", "rat"): (None, "not measured"),
    ("lateral_skin", "mouse"): ((0.34, 0.56), "24 in vivo mouse heads (dama-lab rTg4510 quick-check pictures, 0.15 mm; "
                                              "benchmarks/real_scalp.py): median 0.39"),
    ("lateral_skin", "rat"): (None, "no real rat head here"),
    ("lateral_skin_muscle", "mouse"): ((0.42, 0.87), "the same 24 mice: median 0.54"),
    ("lateral_skin_muscle", "rat"): (None, "no real rat head here"),
    ("neocortex_share", "mouse"): ((27.2, 28.4), "neocortex / labelled structures, FVB/NCrl in vivo (dama-lab), 8 "
                                                 "mice, measured here: 168-189 mm3"),
    ("neocortex_share", "rat"): (None, "SIGMA's atlas splits the neocortex into many areas; not summed"),
    **{("cortex_striatum_surface", d): (None, "surface loop: sensitivity falls with depth (not judged)")
       for d in SIZES},
}
LESION_REFERENCE = {  # lesion volume (mm3) at 24 h by territory class; rounded readings, docs/synthetic.md
    ("mouse", "striatum"): ((5, 30), "30 min tMCAo, C57BL/6 (reviews; approximate)"),
    ("mouse", "striatum+cortex"): ((30, 100), "45-60 min tMCAo (reviews; approximate)"),
    ("mouse", "whole MCA"): ((70, 140), "90+ min tMCAo / pMCAo (reviews; approximate)"),
    ("rat", "striatum"): ((20, 100), "short tMCAo (reviews; approximate)"),
    ("rat", "striatum+cortex"): ((100, 350), "60-120 min tMCAo (reviews; approximate)"),
    ("rat", "whole MCA"): ((250, 500), "pMCAo / long tMCAo (reviews; approximate)"),
}
CONTRAST_REFERENCE = {  # lesion / contralateral T2w signal by time point; rounded readings, docs/synthetic.md
    "2h": (1.0, 1.1), "6h": (1.05, 1.25), "24h": (1.2, 1.6), "48h": (1.25, 1.7), "72h": (1.25, 1.7),
    "7d": (1.1, 1.4), "14d": (1.05, 1.35), "21d": (1.1, 1.5), "28d": (1.15, 1.7), "35d": (1.2, 1.8),
}


def _voxel_mm3(case) -> float:
    return float(np.prod(nib.affines.voxel_sizes(case.affine)))


def _world(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask))


def contralateral_ratio(case) -> float:
    """Mean signal in the lesion / mean signal at its mirror image across the brain's midline (brain voxels)."""
    lesion = case.label.astype(bool)
    midline = _world(case.affine, case.brain_mask)[:, 0].mean()
    mirrored = _world(case.affine, lesion)
    mirrored[:, 0] = 2 * midline - mirrored[:, 0]
    index = np.rint(nib.affines.apply_affine(np.linalg.inv(case.affine), mirrored)).astype(int)
    index = np.clip(index, 0, np.array(case.image.shape) - 1)
    keep = case.brain_mask[tuple(index.T)] & ~lesion[tuple(index.T)]
    contra = case.image[tuple(index[keep].T)].astype(float)
    return float(case.image[lesion].mean() / contra.mean()) if contra.size else float("nan")


def snr(case) -> float:
    """Median brain signal / noise sigma, sigma from the air in the two top corners (Rician: mean = sigma sqrt(pi/2))."""
    n = max(4, case.image.shape[0] // 10)
    air = np.concatenate([case.image[:n, :n].ravel(), case.image[-n:, :n].ravel()]).astype(float)
    sigma = air.mean() / np.sqrt(np.pi / 2)
    return float(np.median(case.image[case.brain_mask & ~case.label.astype(bool)]) / sigma)


def dorsal_ventral(case) -> float:
    """Median brain signal in its top quarter of rows / its bottom quarter (rows run down, array axis 1)."""
    rows = np.argwhere(case.brain_mask)[:, 1]
    low, high = np.percentile(rows, [25, 75])
    index = np.arange(case.image.shape[1])[None, :, None]
    brain = case.brain_mask & ~case.label.astype(bool)
    return float(np.median(case.image[brain & (index <= low)]) / np.median(case.image[brain & (index >= high)]))


def cortex_striatum_ratio(image: np.ndarray, cortex: np.ndarray, striatum: np.ndarray) -> float:
    """Median signal of the ``cortex`` voxels / median of the ``striatum`` voxels (bool masks). Real brains are
    measured with the same function from their structure labels (``benchmarks/real_cortex.py``)."""
    if not cortex.any() or not striatum.any():
        raise ValueError("no cortex or no striatum voxels; pass the masks that belong to the image")
    return float(np.median(image[cortex]) / np.median(image[striatum]))


def healthy_cortex_striatum(case) -> float:
    """:func:`cortex_striatum_ratio` of a generated scan over its healthy brain: a sham's whole brain, a lesion
    animal's hemisphere opposite its lesion (columns past the brain's middle column, array axis 0)."""
    keep = case.brain_mask & ~case.label.astype(bool)
    if case.label.any():
        offset = _midline_frame(case.brain_mask, 1.0, ())[0]  # each column's offset from the middle, in columns
        lesion_high = offset[np.argwhere(case.label)[:, 0]].mean() > 0
        keep &= ((offset < 0) if lesion_high else (offset > 0))[:, None, None]
    return cortex_striatum_ratio(case.image, case.neocortex_mask & keep, case.striatum_mask & keep)


def _midline_frame(brain: np.ndarray, column_mm: float, levels) -> tuple[np.ndarray, list[int]]:
    """Each column's offset (mm) from the brain's midline, and the coronal slices at ``levels`` of its length."""
    columns, slices = np.where(brain.any((1, 2)))[0], np.where(brain.any((0, 1)))[0]
    x = (np.arange(brain.shape[0]) - (columns.min() + columns.max()) / 2) * column_mm
    return x, [int(slices.min() + level * (slices.max() - slices.min())) for level in levels]


def _rows_between(low_mm: float, high_mm: float, row_mm: float) -> np.ndarray:
    """Row offsets whose depth lies within [low_mm, high_mm] (rounding-safe at exact multiples of the row)."""
    return np.arange(int(np.ceil(low_mm / row_mm - 1e-6)), int(high_mm / row_mm + 1e-6) + 1)


def _below_top(image: np.ndarray, brain: np.ndarray, k: int, chosen: np.ndarray, depths: np.ndarray) -> list[float]:
    """Signal of the ``brain`` voxels ``depths`` rows below each ``chosen`` column's own top, in coronal slice k."""
    out = []
    for i in np.where(chosen & brain[:, :, k].any(1))[0]:
        rows = brain[i, :, k].argmax() + depths
        out += [float(image[i, r, k]) for r in rows[rows < brain.shape[1]] if brain[i, r, k]]
    return out


def dorsal_midline(image: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float],
                   levels=(0.4, 0.5, 0.6)) -> float:
    """Mean signal at the dorsal midline (|x| <= 0.225 mm) / median of lateral cortex (0.75-1.35 mm from it), both
    0.45-1.05 mm below each column's own top of ``brain``, averaged over coronal levels at ``levels`` of the brain's
    front-to-back extent. Arrays: columns left-right, rows from the top down, coronal slices; ``brain`` bool (brain
    voxels whose signal counts; its top defines depth). A bright CSF-filled fissure reads well above 1. Real
    images are measured with the same function (``benchmarks/real_midline.py``)."""
    row_mm = spacing_mm[1]
    x, slices = _midline_frame(brain, spacing_mm[0], levels)
    depths = _rows_between(0.45, 1.05, row_mm)
    ratios = []
    for k in slices:
        mid = _below_top(image, brain, k, np.abs(x) <= 0.225, depths)
        lateral = _below_top(image, brain, k, (np.abs(x) >= 0.75) & (np.abs(x) <= 1.35), depths)
        if mid and lateral:
            ratios.append(np.mean(mid) / np.median(lateral))
    return float(np.mean(ratios))


def _tops_beside_groove(brain: np.ndarray, column_mm: float, levels):
    """Per coronal level: each column's |offset| from the midline (mm), its top row of ``brain`` (-1: none), and the
    median top 0.6-1.2 mm lateral (beside the groove)."""
    x, slices = _midline_frame(brain, column_mm, levels)
    x = np.abs(x)
    for k in slices:
        top = np.where(brain[:, :, k].any(1), brain[:, :, k].argmax(1), -1)
        beside = top[(x >= 0.6) & (x <= 1.2) & (top >= 0)]
        if beside.size:
            yield x, top, float(np.median(beside))


def midline_groove_mm(brain: np.ndarray, spacing_mm: tuple[float, float], levels=(0.4, 0.5, 0.6)) -> float:
    """Depth of the groove along the dorsal midline: the deepest top of ``brain`` within 0.225 mm of the midline
    below the median top 0.6-1.2 mm from it (layout as :func:`dorsal_midline`), averaged over the levels."""
    depths = [(top[(x <= 0.225) & (top >= 0)].max() - beside) * spacing_mm[1]
              for x, top, beside in _tops_beside_groove(brain, spacing_mm[0], levels) if (top[x <= 0.225] >= 0).any()]
    return float(np.mean(depths))


def groove_width_mm(brain: np.ndarray, column_mm: float, levels=(0.4, 0.5, 0.6)) -> float:
    """Width of the groove: the columns within 1 mm of the midline whose top lies below the median top 0.6-1.2 mm
    lateral, times the column width, averaged over the levels."""
    return float(np.mean([((top > beside) & (x <= 1.0)).sum() * column_mm
                          for x, top, beside in _tops_beside_groove(brain, column_mm, levels)]))


DARK, AIR = 0.35, 0.20  # fractions of cortex: bone (with the CSF beside it) below DARK; air: two voxels below AIR


def outer_band(profile: np.ndarray, voxel_mm: float) -> np.ndarray | None:
    """The bright band outside the skull along ``profile`` (fractions of cortex; profile[1] is the brain's edge voxel,
    profile[0] the one inside it): past the first dark run (bone) that starts within 0.6 mm of the edge, up to the
    air. None where only dark voxels lie between the bone and the air (or the edge of the field)."""
    reach = int(round(0.6 / voxel_mm)) + 2
    dark = np.flatnonzero(profile[:reach] < DARK)
    start = int(dark[0]) if dark.size else 2  # no dark voxel resolved: the band starts right outside the edge
    while start < len(profile) and profile[start] < DARK:
        start += 1
    end = start
    while end < len(profile) and not (profile[end] < AIR and (end + 1 == len(profile) or profile[end + 1] < AIR)):
        end += 1
    return profile[start:end] if end > start else None


def _half_peak_mm(band: np.ndarray, voxel_mm: float) -> float:
    """Width of the run of voxels at or above half the band's peak, around the peak."""
    top = int(band.argmax())
    low, high = top, top
    while low > 0 and band[low - 1] >= 0.5 * band[top]:
        low -= 1
    while high + 1 < len(band) and band[high + 1] >= 0.5 * band[top]:
        high += 1
    return (high - low + 1) * voxel_mm


def _cortex_below_top(image, brain, i: int, k: int, row_mm: float) -> float | None:
    """Mean signal of column i's brain voxels 0.3-0.9 mm below its own top, in coronal slice k."""
    values = _below_top(image, brain, k, np.arange(brain.shape[0]) == i, _rows_between(0.3, 0.9, row_mm))
    return float(np.mean(values)) if len(values) >= 2 else None


def _vault_columns(x: np.ndarray, brain: np.ndarray, k: int) -> np.ndarray:
    """Columns 0.6-1.5 mm from the midline that hold brain in coronal slice k: beside the groove, under the vault."""
    return np.flatnonzero((np.abs(x) >= 0.6) & (np.abs(x) <= 1.5) & brain[:, :, k].any(1))


def scalp_over_vault(image: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float], slices) -> dict:
    """Skin and scalp over the dorsal vault, relative to the cortex beneath: in coronal ``slices``, each column
    0.6-1.5 mm from the midline is walked up from the top of ``brain`` (layout as :func:`dorsal_midline`) through the
    dark bone to the bright band before the air. Medians over the columns with a band of its peak and mean (x the
    column's cortex 0.3-0.9 mm deep) and width at half peak (mm), and the fraction of columns with a band. Real
    heads are measured with the same function (``benchmarks/real_scalp.py``)."""
    x = _midline_frame(brain, spacing_mm[0], ())[0]
    bands, columns = [], 0
    for k in slices:
        for i in _vault_columns(x, brain, k):
            cortex = _cortex_below_top(image, brain, i, k, spacing_mm[1])
            if cortex is None:
                continue
            top = int(brain[i, :, k].argmax())
            columns += 1
            band = outer_band(image[i, top + 1::-1, k] / cortex, spacing_mm[1])
            if band is not None:
                bands.append((band.max(), band.mean(), _half_peak_mm(band, spacing_mm[1])))
    peak, mean, width = np.median(bands, axis=0) if bands else (np.nan,) * 3
    return dict(found=len(bands) / max(columns, 1), peak=float(peak), mean=float(mean), width_mm=float(width))


def _lateral_bands(image: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float], slices):
    """The bands outside the skull at the side of the head, in fractions of the dorsal cortex: in coronal ``slices``,
    rows 0.6-1.8 mm below the brain's top walked out sideways from the brain's edge past the bone, each band at least
    0.75 mm wide (the dorsal cortex: the median 0.3-0.9 mm deep of the columns 0.6-1.5 mm from the midline)."""
    column_mm, row_mm = spacing_mm
    x = _midline_frame(brain, column_mm, ())[0]
    for k in slices:
        cortex = [c for c in (_cortex_below_top(image, brain, i, k, row_mm) for i in _vault_columns(x, brain, k))
                  if c is not None]
        if not cortex:
            continue
        dorsal, top = np.median(cortex), int(np.flatnonzero(brain[:, :, k].any(0))[0])
        for row in range(top + int(round(0.6 / row_mm)), top + int(round(1.8 / row_mm))):
            inside = np.flatnonzero(brain[:, row, k])
            if not inside.size:
                continue
            for walk in (image[inside.max() - 1:, row, k], image[inside.min() + 1::-1, row, k]):  # from one inside
                band = outer_band(walk / dorsal, column_mm)
                if band is not None and len(band) * column_mm >= 0.75:
                    yield band


def lateral_head(image: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float], slices) -> dict:
    """The side of the head, from one walk (:func:`_lateral_bands`), medians over rows and sides: ``muscle``, the
    temporal muscle / dorsal cortex (each band without its outer 0.3 mm); ``skin``, the brightest voxel of the band's
    outer 0.3 mm / dorsal cortex; ``skin_over_muscle``, that voxel over the rest of its band."""
    skin = int(round(0.3 / spacing_mm[0]))
    bands = [(np.median(band[:-skin]), band[-skin:].max()) for band in _lateral_bands(image, brain, spacing_mm, slices)]
    if not bands:
        return dict(muscle=float("nan"), skin=float("nan"), skin_over_muscle=float("nan"))
    muscle, peak = np.asarray(bands).T
    return dict(muscle=float(np.median(muscle)), skin=float(np.median(peak)),
                skin_over_muscle=float(np.median(peak / muscle)))


def measure(domain: str, n_cases: int, seed: int) -> tuple[list[dict], list]:
    """Per-case figures of a generated cohort, and the cases kept for overlays (first lesion, first sham)."""
    matrix, n_slices = SIZES[domain]
    rows, keep = [], {}
    for case, cohort in generate_cases(domain, n_cases, seed, matrix=matrix, n_slices=n_slices):
        voxel = _voxel_mm3(case)  # each cohort has its own resolution
        in_plane = tuple(float(v) for v in nib.affines.voxel_sizes(case.affine)[:2])
        per_slice = case.brain_mask.any((0, 1))
        row = dict(case.info, case_id=case.case_id, group=case.group, cohort=cohort,
                   slab_brain_mm3=case.brain_mask.sum() * voxel, brain_cut=bool(per_slice[0] or per_slice[-1]),
                   ventricle_mm3=case.ventricle_mask.sum() * voxel,
                   lesion_mm3=case.lesion_volume_mm3, snr_measured=snr(case), dv_ratio=dorsal_ventral(case),
                   midline=dorsal_midline(case.image, case.brain_mask & ~case.label.astype(bool), in_plane),
                   groove_mm=midline_groove_mm(case.brain_mask, in_plane),
                   cortex_striatum=healthy_cortex_striatum(case))
        if case.group == "sham":
            row["scalp_width_demo_mm"] = _head_figures(case)["scalp_width_mm"]
        brain = case.image[case.brain_mask & ~case.label.astype(bool)].astype(float)
        row["brain_median"] = float(np.median(brain))
        if case.group == "MCAo":
            row["contrast_measured"] = contralateral_ratio(case)
            # log ratio = TE (1/T2_normal - 1/T2_lesion): the ratio at the references' TE (PD and T1 terms aside)
            row["contrast_at_reference_te"] = row["contrast_measured"] ** (REFERENCE_TE_MS / row["te_ms"])
            row["lesion_q25"] = float(np.percentile(case.image[case.label.astype(bool)], 25)) / row["brain_median"]
        else:
            row["sham_values"] = brain / row["brain_median"]
        rows.append(row)
        keep.setdefault(case.group, case)
    whole = generate_cases(domain, n_cases, seed, matrix=matrix, n_slices=n_slices,
                           slab_slices=WHOLE_BRAIN_SLICES[domain])
    for row, (case, _) in zip(rows, whole):  # the same animals (the same draws), on a slab holding the whole brain
        per_slice = case.brain_mask.any((0, 1))
        if per_slice[0] or per_slice[-1]:
            raise RuntimeError(f"{case.case_id}: the brain reaches past {WHOLE_BRAIN_SLICES[domain]} slices; "
                               "raise WHOLE_BRAIN_SLICES")
        row["brain_mm3"] = case.brain_mask.sum() * _voxel_mm3(case)
        row["striatum_share"] = 100 * float(case.striatum_mask.sum() / case.brain_mask.sum())
        row["neocortex_share"] = 100 * float(case.neocortex_mask.sum() / case.brain_mask.sum())
        row["striatum_forebrain"] = 100 * float(case.striatum_mask.sum() / case.forebrain_mask.sum())
        row["forebrain_share"] = 100 * float(case.forebrain_mask.sum() / case.brain_mask.sum())
        row["brain_length_mm"] = float(per_slice.sum()) * float(nib.affines.voxel_sizes(case.affine)[2])
    heads = {figures.pop("case_id"): figures for figures in sham_head_figures(domain, n_cases, seed)}
    for row in rows:
        row.update(heads.get(row["case_id"], {}))
    return rows, [keep.get("MCAo"), keep.get("sham")]


def sham_head_figures(domain: str, n_cases: int, seed: int) -> list[dict]:
    """:func:`_head_figures` of the cohort's shams (with their ``case_id``): the same animals drawn at about the real
    heads' 0.15 mm rows."""
    matrix, n_slices = SIZES[domain]
    fine = generate_cases(domain, n_cases, seed, matrix=round(matrix * HEAD_MATRIX_SCALE), n_slices=n_slices)
    return [dict(_head_figures(case), case_id=case.case_id) for case, _ in fine if case.group == "sham"]


def _head_figures(case) -> dict:
    """Scalp over the vault and temporal muscle of a sham, as ``benchmarks/real_scalp.py`` measures real heads
    (lesion-free: the real heads are)."""
    in_plane = tuple(float(v) for v in nib.affines.voxel_sizes(case.affine)[:2])
    slices = _midline_frame(case.brain_mask, in_plane[0], (0.4, 0.5, 0.6))[1]
    scalp = scalp_over_vault(case.image, case.brain_mask, in_plane, slices)
    side = lateral_head(case.image, case.brain_mask, in_plane, slices)
    return dict(scalp_peak=scalp["peak"], scalp_mean=scalp["mean"], scalp_width_mm=scalp["width_mm"],
                muscle=side["muscle"], head_row_mm=in_plane[1], lateral_skin=side["skin"],
                lateral_skin_muscle=side["skin_over_muscle"])


def _summary(values) -> str:
    values = np.asarray([v for v in values if np.isfinite(v)], float)
    if not values.size:
        return "n/a"
    return f"{np.median(values):.3g} [{values.min():.3g}-{values.max():.3g}] (n={values.size})"


def _ref(reference) -> str:
    return "n/a" if reference is None else f"{reference[0]:g}-{reference[1]:g}"


def _inside(values, reference) -> str:
    if reference is None:
        return "n/a"
    values = np.asarray([v for v in values if np.isfinite(v)], float)
    median = np.median(values)  # 4 digits, so that a median just past a bound does not read as on it
    return f"{median:.4g} {'in' if reference[0] <= median <= reference[1] else 'OUT'}"


def table(by_domain: dict[str, list[dict]]) -> list[str]:
    """The literature table, one row per quantity and species (median [range] of the generated cohort)."""
    lines = ["| quantity | species | generated: median [min-max] (n) | reference | median inside? | source |",
             "|---|---|---|---|---|---|"]
    names = {"brain_mm3": "whole brain volume (mm3; same animals on a slab holding the whole brain)",
             "ventricle_mm3": "ventricle volume (mm3)",
             "striatum_share": "striatum volume (% of the whole brain; its generated region, same animals)",
             "striatum_forebrain": "striatum volume (% of the forebrain and diencephalon; same animals)",
             "forebrain_share": "forebrain and diencephalon volume (% of the whole brain; same animals)",
             "neocortex_share": "neocortex volume (% of the whole brain; same animals)", "snr_measured": "SNR",
             "midline": "dorsal midline / lateral cortex signal, 0.45-1.05 mm deep (no bright fissure: about 1)",
             "groove_mm": "groove along the dorsal midline, depth (mm; at the demo's 0.2-0.25 mm rows)",
             "scalp_peak": "skin and scalp over the vault, peak / cortex beneath (shams)",
             "scalp_mean": "skin and scalp over the vault, mean / cortex beneath (shams)",
             "scalp_width_mm": "skin and scalp over the vault, width at half peak (mm; shams)",
             "scalp_width_demo_mm": "the same width at the demo's rows (0.16-0.25 mm; not comparable, not judged)",
             "muscle": "temporal muscle / dorsal cortex (shams)",
             "lateral_skin": "skin at the side of the head, peak / dorsal cortex (shams)",
             "lateral_skin_muscle": "skin at the side of the head, peak / the temporal muscle under it (shams)",
             "head_row_mm": "rows the four head figures above were measured at (mm; shams drawn at 1.33 x the matrix)"}
    for key, name in names.items():
        for domain, rows in by_domain.items():
            ref, source = REFERENCE[(key if key != "snr_measured" else "snr", domain)]
            values = [r[key] for r in rows if key in r]
            lines.append(f"| {name} | {domain} | {_summary(values)} | {_ref(ref)} | {_inside(values, ref)} | {source} |")
        if key == "brain_mm3":
            for domain, rows in by_domain.items():
                matrix, n_slices = SIZES[domain]
                slab = n_slices * domain_spec(domain, matrix=matrix, n_slices=n_slices).slice_thickness_mm
                cut = sum(r["brain_cut"] for r in rows)
                lines.append(f"| brain inside the protocol's slab (mm3) | {domain} | "
                             f"{_summary([r['slab_brain_mm3'] for r in rows])} | n/a | n/a | the slab is {slab:g} mm; "
                             f"the brain is {_summary([r['brain_length_mm'] for r in rows])} mm long, front to back; "
                             f"{cut} of {len(rows)} brains reach past the slab's ends |")
    for domain, rows in by_domain.items():
        lines += _coil_rows(domain, rows)
    for domain, rows in by_domain.items():
        lesions = [r for r in rows if r["group"] == "MCAo"]
        for territory in ("striatum", "striatum+cortex", "whole MCA"):
            ref, source = LESION_REFERENCE[(domain, territory)]
            values = [r["lesion_mm3"] for r in lesions if r["territory"] == territory and r["time_point"] == "24h"]
            every = [r["lesion_mm3"] for r in lesions if r["territory"] == territory]
            lines.append(f"| lesion volume at 24 h, {territory} (mm3) | {domain} | {_summary(values)}; all time "
                         f"points {_summary(every)} | {_ref(ref)} | {_inside(values, ref) if values else 'n/a'} | "
                         f"{source} |")
        for occlusion in sorted({r["occlusion_min"] for r in lesions}):
            values = [r["lesion_mm3"] for r in lesions if r["occlusion_min"] == occlusion]
            lines.append(f"| lesion volume, {occlusion} min occlusion (mm3) | {domain} | {_summary(values)} | "
                         f"n/a | n/a | territory mix by occlusion, docs/synthetic.md |")
        for stage in sorted({r["time_point"] for r in lesions}, key=lambda s: list(CONTRAST_REFERENCE).index(s)):
            chosen = [r for r in lesions if r["time_point"] == stage]
            values = [r["contrast_at_reference_te"] for r in chosen]
            raw = [r["contrast_measured"] for r in chosen]
            te = sorted({r["te_ms"] for r in chosen})
            te_text = f"{te[0]:g}" if len(te) == 1 else f"{te[0]:g}-{te[-1]:g}"
            ref = CONTRAST_REFERENCE[stage]
            lines.append(f"| lesion/contralateral signal at TE {REFERENCE_TE_MS:g} ms, {stage} | {domain} | "
                         f"{_summary(values)}; raw {_summary(raw)} at TE_eff {te_text} ms | {_ref(ref)} | "
                         f"{_inside(values, ref)} | each case's ratio ** ({REFERENCE_TE_MS:g} / TE_eff), as the log "
                         "ratio scales with TE; reference: rounded reading of T2w time courses (Knight 1991; "
                         "Hoehn-Berlage 1995) at TE about 30-50 ms, not re-read |")
        lines += _substrain_and_blood_rows(domain, lesions)
        lines.append(f"| sham brain voxels >= lesion threshold (%) | {domain} | {_sham_fraction(rows)} | n/a | n/a | "
                     "threshold: median over lesions of each lesion's lower-quartile signal / brain median |")
    return lines


SUBSTRAIN_REFERENCE = ((0.45, 0.65), "J-lineage / N-lineage C57BL/6 mean infarct 'nearly two-fold smaller' (Zhao, "
                       "Mulligan and Nowak, J Cereb Blood Flow Metab 2019, permanent distal MCAo; abstract read), "
                       "carried to the filament model as an assumption; the lesions' territories differ by draw")


def _coil_rows(domain: str, rows: list[dict]) -> list[str]:
    """Figures a surface loop's falling sensitivity moves (dorsal brighter): judged on volume-coil cohorts only."""
    lines = []
    for key, name in (("dv_ratio", "dorsal/ventral brain signal"),
                      ("cortex_striatum", "neocortex / striatum signal, healthy brain (shams; the lesion's "
                                          "contralateral hemisphere)")):
        for coil, chosen in (("volume coil", [r for r in rows if r["coil_radius_mm"] >= 30]),
                             ("surface loop", [r for r in rows if r["coil_radius_mm"] < 30])):
            if not chosen:
                continue
            ref, source = REFERENCE[(key if coil == "volume coil" else f"{key}_surface", domain)]
            values = [r[key] for r in chosen]
            lines.append(f"| {name}, {coil} | {domain} | {_summary(values)} | {_ref(ref)} | {_inside(values, ref)} "
                         f"| {source} |")
    return lines


def _substrain_and_blood_rows(domain: str, lesions: list[dict]) -> list[str]:
    """Lesion volume by substrain (J / N ratio of medians) and how many lesion animals have subarachnoid blood."""
    lines = []
    volumes = {s: [r["lesion_mm3"] for r in lesions if r["substrain"] == s] for s in ("C57BL/6J", "C57BL/6N")}
    if all(volumes.values()):
        ref, source = SUBSTRAIN_REFERENCE
        ratio = float(np.median(volumes["C57BL/6J"]) / np.median(volumes["C57BL/6N"]))
        lines.append(f"| lesion volume, C57BL/6J / C57BL/6N (ratio of medians) | {domain} | {ratio:.3g} (J "
                     f"{_summary(volumes['C57BL/6J'])}, N {_summary(volumes['C57BL/6N'])}) | {_ref(ref)} | "
                     f"{ratio:.4g} {'in' if ref[0] <= ratio <= ref[1] else 'OUT'} | {source} |")
    bleeding = sum(bool(r["subarachnoid_blood"]) for r in lesions)
    lines.append(f"| subarachnoid blood (% of lesion animals) | {domain} | {100 * bleeding / max(len(lesions), 1):.3g} "
                 f"({bleeding} of {len(lesions)}) | n/a | n/a | drawn for 5 % (assumed; docs/synthetic.md) |")
    return lines


def _sham_fraction(rows: list[dict]) -> str:
    lesions = [r["lesion_q25"] for r in rows if r["group"] == "MCAo"]
    shams = [r["sham_values"] for r in rows if r["group"] == "sham"]
    if not lesions or not shams:
        return "n/a"
    threshold = float(np.median(lesions))
    fractions = [100 * float((s >= threshold).mean()) for s in shams]
    return f"{_summary(fractions)} at threshold {threshold:.2f} x brain median"


def overlay(case, path: Path, title: str) -> Path:
    """Three coronal slices (front, lesion centre or middle, back), image in grey, the label's outline in red."""
    z = (int(np.argwhere(case.label)[:, 2].mean()) if case.label.any()
         else int(np.argwhere(case.brain_mask)[:, 2].mean()))
    slices = np.argwhere(case.brain_mask)[:, 2]
    chosen = [int(slices.min() + 0.2 * (slices.max() - slices.min())), z,
              int(slices.min() + 0.85 * (slices.max() - slices.min()))]
    figure = Figure(figsize=(9, 3.3), dpi=100)
    vmax = float(np.percentile(case.image, 99.5))
    for k, index in enumerate(chosen):
        ax = figure.add_subplot(1, 3, k + 1)
        ax.imshow(case.image[:, :, index].T, cmap="gray", vmin=0, vmax=vmax)
        if case.label[:, :, index].any():
            ax.contour(case.label[:, :, index].T, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"slice {index}", fontsize=8)
        ax.axis("off")
    figure.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp)
    tmp.replace(path)
    return path


def _cohort_lines(domain: str) -> list[str]:
    matrix, n_slices = SIZES[domain]
    demo = domain_spec(domain, matrix=matrix, n_slices=n_slices)
    protocols = cohort_protocols(demo)
    if not protocols:
        spec = domain_spec(domain)
        return [f"- {domain}: one protocol: {spec.field_t} T, TR {spec.tr_s} s, TE_eff {spec.te_ms} ms, "
                f"SNR {1 / spec.noise_sigma:.0f}, coil radius {spec.coil_radius_mm} mm"]
    return [f"- {domain} cohort {k}: {p.field_t} T, TR {p.tr_s} s, TE_eff {p.te_ms} ms, SNR {p.snr:.0f}, "
            f"{'surface loop %.0f mm' % p.coil_radius_mm if p.coil_radius_mm < 30 else 'volume coil'}, "
            f"bias {p.bias_strength:.2f}, {_grid(cohort_spec(demo, p))}, {p.substrain or 'pooled'} mice"
            for k, p in enumerate(protocols)]


def _grid(spec) -> str:
    pixel, _, thickness = spec.spacing
    return f"{spec.matrix}x{spec.matrix}x{spec.n_slices} at {pixel:.3f} x {pixel:.3f} x {thickness:.2f} mm (demo size)"


_TIMING = """
import sys, time, numpy as np
from lesionseg.data.synthetic import domain_spec, synthesize_case
for domain, (matrix, n_slices) in {sizes!r}.items():
    spec = domain_spec(domain, matrix=matrix, n_slices=n_slices)
    start = time.perf_counter()
    for i in range({n}):
        synthesize_case(spec, "t", np.random.default_rng([99, i]), lesion=i % 4 != 0)
    print(domain, (time.perf_counter() - start) / {n})
"""


def generation_seconds(checkout: Path, n: int = 6) -> dict[str, float]:
    """Seconds per scan at the demo's sizes with the generator of ``checkout`` (a subprocess on its code)."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, "-c", _TIMING.format(sizes=SIZES, n=n)], env=env, cwd=checkout,
                          capture_output=True, text=True, check=True)
    return {line.split()[0]: float(line.split()[1]) for line in done.stdout.splitlines()}


def _timing_lines(baseline: Path | None) -> list[str]:
    """Interleaved (baseline, this, baseline, this) so that a shared CPU's load hits both alike."""
    if baseline is None:
        return []
    runs = [(name, generation_seconds(path)) for _ in range(2) for name, path in (("before", baseline), ("now", ROOT))]
    lines = ["## Generation cost (seconds per scan, demo size, interleaved runs in one session)", "",
             "| species | before (" + str(baseline) + ") | now | ratio |", "|---|---|---|---|"]
    for domain in SIZES:
        before = np.mean([t[domain] for name, t in runs if name == "before"])
        now = np.mean([t[domain] for name, t in runs if name == "now"])
        lines.append(f"| {domain} | {before:.2f} | {now:.2f} | {now / before:.2f} |")
    return [*lines, "", "Absolute seconds depend on the load of the shared CPU; the ratio is the figure to read.", ""]


def run(out: Path = RESULTS, n_cases: int = 48, seed: int = 4242, baseline: Path | None = None) -> dict:
    """Generate both cohorts, measure, write ``out`` and the overlays; return the per-case rows."""
    start = time.perf_counter()
    by_domain, pictures = {}, []
    for domain in ("mouse", "rat"):
        rows, (lesion, sham) = measure(domain, n_cases, seed)
        by_domain[domain] = rows
        for case in (lesion, sham):
            info = case.info
            title = (f"{domain} {case.group}: {info['field_t']} T, TE {info['te_ms']} ms, SNR {info['snr']:.0f}"
                     + (f", {info['time_point']}, {info['territory']}, {case.lesion_volume_mm3:.0f} mm3"
                        if case.group == "MCAo" else "") + (", muscle oedema" if info["muscle_oedema"] else ""))
            pictures.append(overlay(case, OVERLAYS / f"{domain}_{case.group}.png", title))
    seconds = time.perf_counter() - start
    counts = defaultdict(int)
    for rows in by_domain.values():
        for r in rows:
            counts[(r["group"], r["territory"], r["time_point"])] += 1
    lines = [
        "# The synthetic world against published and measured figures",
        "",
        f"Written by `benchmarks/world.py` (seed {seed}, {n_cases} cases per species at the demo's matrices "
        f"{SIZES}, 25 % shams, {seconds:.0f} s with a shared 2-core CPU). Generated as `lesionseg synth` does. "
        "Each row: the generated cohort's median [min-max] and the reference it should meet; sources and how the "
        "measured references were obtained are in `docs/synthetic.md`. References marked approximate are rounded "
        "readings of published time courses and reviews, not re-read for this run.",
        "",
        "## Cohorts (scanners and protocols; fixed per world, every mouse dataset draws from them)",
        "",
        *_cohort_lines("mouse"), *_cohort_lines("rat"),
        "",
        "## Literature table",
        "",
        *table(by_domain),
        "",
        *_timing_lines(baseline),
        "## Mid-slice overlays (front, lesion centre, back; label outline in red)",
        "",
        *[f"![{p.stem}]({Path(os.path.relpath(p, out.parent)).as_posix()})" for p in pictures],
        "",
    ]
    write_text(out, "\n".join(lines))
    return by_domain


def cohort_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """Arguments of a run on the world cohort (``--out``, ``--n-cases``, ``--seed``, the world table's defaults), for
    this script and the calibrations that sweep a setting over the same cohort."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--n-cases", type=int, default=48)
    parser.add_argument("--seed", type=int, default=4242)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = cohort_parser(__doc__, RESULTS)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout whose generator to time against this one (e.g. the main branch)")
    args = parser.parse_args(argv)
    run(args.out, args.n_cases, args.seed, args.baseline)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
