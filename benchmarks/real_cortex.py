"""Cortex / striatum signal of real in vivo T2w rodent brains, from their structure labels.

Reads public images fetched by hand (never copied into the project; GPL-3.0): the FVB/NCrl in vivo mice of
dama-lab/mouse-brain-atlas, ``FVB_NCrl/in_vivo/template/N.nii.gz`` with ``label/N.nii.gz`` (structure labels as in
its ``docs/structure_label_list.csv``: neocortex 14, caudate putamen 3, left hemisphere +20), and the SIGMA in vivo
rat template with its anatomical atlas (aswendtlab/AIDAmri, ``rat`` branch, ``lib/sigma/``: the template, the atlas
and its ITK-SNAP label file; dorsal neocortex = the motor and somatosensory areas). Prints the median cortex signal
over the median striatum signal, and the striatum's (and the mice's neocortex's) share of the labelled structures;
for the mice also the caudate putamen's share of the forebrain, its place (percentiles in forebrain half-extents) and
the septum's signal over it; docs/synthetic.md records the figures.

    python benchmarks/real_cortex.py --mice DIR_WITH_template_AND_label [--sigma TEMPLATE ATLAS LABELS_TXT]
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import cortex_striatum_ratio  # noqa: E402  (generated brains are measured with the same function)

NEOCORTEX = (14, 34)  # right, left (docs/structure_label_list.csv; left = right + 20)
CAUDATE_PUTAMEN = (3, 23)
SEPTUM = (19, 39)  # "Basal Forebrain Septum"
# Forebrain and diencephalon: hippocampus, external and internal capsule, caudate putamen, anterior commissure,
# globus pallidus, thalamus, ventricles, hypothalamus, neocortex, amygdala, septum, fimbria (label 22 and 30 are
# folded into 2 and 10 by dama-lab)
FOREBRAIN = tuple(k + side for k in (1, 2, 3, 4, 5, 6, 7, 10, 11, 14, 15, 19, 20) for side in (0, 20))


def cortex_over_striatum(image: np.ndarray, labels: np.ndarray, cortex_ids: Sequence[int] = NEOCORTEX,
                          striatum_ids: Sequence[int] = CAUDATE_PUTAMEN) -> float:
    """Median cortex signal / median striatum signal (default ids: dama-lab's neocortex and caudate putamen)."""
    cortex, striatum = np.isin(labels, cortex_ids), np.isin(labels, striatum_ids)
    if not cortex.any() or not striatum.any():
        raise ValueError(f"labels hold no cortex {tuple(cortex_ids)} or no striatum {tuple(striatum_ids)}; pass "
                         "the structure labels that belong to the image")
    return cortex_striatum_ratio(image, cortex, striatum)


def volume_share(labels: np.ndarray, ids: Sequence[int]) -> float:
    """Volume of the structures ``ids`` as a percentage of all labelled structures (label > 0)."""
    return 100 * float(np.isin(labels, ids).sum() / (labels > 0).sum())


def placement(labels: np.ndarray, affine: np.ndarray, ids: Sequence[int], frame_ids: Sequence[int] = FOREBRAIN,
              ) -> np.ndarray:
    """5th, 50th and 95th percentiles (rows) of the structures ``ids``' |x| (lateral), y and z (columns), in units of
    the half-extent of ``frame_ids`` from its centre (its 0.5-99.5 percentile box; RAS+ image axes)."""
    def points(which):
        return nib.affines.apply_affine(affine, np.argwhere(np.isin(labels, which)))

    frame = points(frame_ids)
    low, high = np.percentile(frame, 0.5, axis=0), np.percentile(frame, 99.5, axis=0)
    rel = (points(ids) - (low + high) / 2) / ((high - low) / 2)
    rel[:, 0] = np.abs(rel[:, 0])
    return np.percentile(rel, [5, 50, 95], axis=0)


def deep_grey_figures(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The caudate putamen's share of the forebrain (%), the forebrain's share of the labelled structures (%) and
    the septum's median signal over the caudate putamen's."""
    forebrain = np.isin(labels, FOREBRAIN).sum()
    return {"striatum_forebrain": 100 * float(np.isin(labels, CAUDATE_PUTAMEN).sum() / forebrain),
            "forebrain_share": volume_share(labels, FOREBRAIN),
            "septum_signal": float(np.median(image[np.isin(labels, SEPTUM)])
                                   / np.median(image[np.isin(labels, CAUDATE_PUTAMEN)]))}


def sigma_labels(labels_txt: Path) -> tuple[list[int], list[int]]:
    """SIGMA atlas label ids of the dorsal neocortex (motor and somatosensory areas) and of the striatum."""
    names = dict(re.findall(r'^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+\S+\s+\d+\s+\d+\s+"(.*)"', labels_txt.read_text(), re.M))
    cortex = [int(k) for k, n in names.items() if "Motor Cortex" in n or "Somatosensory Cortex" in n]
    striatum = [int(k) for k, n in names.items() if n.startswith("Striatum")]
    return cortex, striatum


def sigma_figures(template: Path, atlas: Path, labels_txt: Path) -> str:
    """The SIGMA template's median dorsal-neocortex signal / median striatum signal, and the striatum's volume as a
    percentage of the brain (the template is skull-stripped: its non-zero voxels) and of the labelled structures."""
    image = np.asarray(nib.load(template).dataobj, dtype=float)
    labels = np.asarray(nib.load(atlas).dataobj).astype(int)
    cortex, striatum = sigma_labels(labels_txt)
    signal = cortex_over_striatum(image, np.where(image > 0, labels, 0), cortex, striatum)
    in_brain = 100 * np.isin(labels, striatum).sum() / (image > 0).sum()
    return (f"cortex / striatum {signal:.3f}; striatum {in_brain:.2f} % of the brain, "
            f"{volume_share(labels, striatum):.2f} % of the labelled structures")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mice", type=Path, required=True, help="folder with template/ and label/ of the same names")
    parser.add_argument("--sigma", type=Path, nargs=3, metavar=("TEMPLATE", "ATLAS", "LABELS_TXT"),
                        help="the SIGMA in vivo rat template, its anatomical atlas and the atlas's label file")
    args = parser.parse_args(argv)
    if args.sigma:
        print(f"SIGMA rat template: {sigma_figures(*args.sigma)}")
    ratios, shares, deep, where = [], [], [], []
    for image_path in sorted((args.mice / "template").glob("*.nii*")):
        loaded = nib.load(image_path)
        image = np.asarray(loaded.dataobj, dtype=float)
        labels = np.asarray(nib.load(args.mice / "label" / image_path.name).dataobj).astype(int)
        ratios.append(cortex_over_striatum(image, labels))
        deep.append(deep_grey_figures(image, labels))
        where.append(placement(labels, loaded.affine, CAUDATE_PUTAMEN))
        shares.append((volume_share(labels, CAUDATE_PUTAMEN), volume_share(labels, NEOCORTEX)))
        print(f"{image_path.name}: cortex / striatum {ratios[-1]:.3f}; caudate putamen {shares[-1][0]:.2f} %, "
              f"neocortex {shares[-1][1]:.1f} % of the labelled structures")
    if not ratios:
        raise SystemExit(f"{args.mice / 'template'}: no NIfTI images; fetch dama-lab/mouse-brain-atlas FVB_NCrl/in_vivo")
    print(f"{len(ratios)} mice: median {np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    (low_s, low_n), (high_s, high_n) = np.min(shares, axis=0), np.max(shares, axis=0)
    print(f"{len(ratios)} mice: caudate putamen {low_s:.2f}-{high_s:.2f} %, neocortex {low_n:.1f}-{high_n:.1f} % "
          "of the labelled structures")
    for key, name in (("striatum_forebrain", "caudate putamen / forebrain (%)"),
                      ("forebrain_share", "forebrain / labelled structures (%)"),
                      ("septum_signal", "septum / caudate putamen signal")):
        values = [d[key] for d in deep]
        print(f"{len(deep)} mice: {name} {min(values):.3f}-{max(values):.3f}, median {np.median(values):.3f}")
    mean = np.mean(where, axis=0)
    print(f"{len(where)} mice: caudate putamen 5/50/95th percentiles in forebrain half-extents (mean): "
          + "; ".join(f"{axis} {' / '.join(f'{v:.2f}' for v in mean[:, i])}" for i, axis in enumerate(("|x|", "y", "z"))))


if __name__ == "__main__":
    main()
