"""The dorsal midline of real in vivo T2w rodent brains, measured as ``benchmarks/world.py`` measures the synthetic ones.

Reads public images fetched by hand (never copied into the project; GPL-3.0): the FVB/NCrl in vivo mice of
dama-lab/mouse-brain-atlas (``FVB_NCrl/in_vivo/template/*.nii.gz`` with ``mask/``) and the SIGMA in vivo rat template
of aswendtlab/AIDAmri (``rat`` branch, ``lib/sigma/SIGMA_InVivo_Brain_Template_Masked.nii.gz``, skull-stripped: its
non-zero voxels are the brain). Prints each image's dorsal midline / lateral cortex ratio and midline groove depth and width; docs/synthetic.md records
the figures.

    python benchmarks/real_midline.py --mice DIR_WITH_template_AND_mask --sigma SIGMA_TEMPLATE.nii.gz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import _midline_frame, dorsal_midline, midline_groove_mm  # noqa: E402


def groove_width_mm(brain: np.ndarray, column_mm: float, levels=(0.4, 0.5, 0.6)) -> float:
    """Width of the dorsal midline groove: columns within 1 mm of the midline whose top of ``brain`` lies below the
    median top 0.6-1.2 mm lateral, times the column width, averaged over the levels (layout as dorsal_midline)."""
    x, slices = _midline_frame(brain, column_mm, levels)
    x, widths = np.abs(x), []
    for k in slices:
        top = np.where(brain[:, :, k].any(1), brain[:, :, k].argmax(1), -1)
        beside = np.median(top[(x >= 0.6) & (x <= 1.2) & (top >= 0)])
        widths.append(float(((top > beside) & (x <= 1.0)).sum()) * column_mm)
    return float(np.mean(widths))


def mouse_figures(image_path: Path, mask_path: Path) -> tuple[float, float, float]:
    """Midline ratio, groove depth and width (mm) of a dama-lab in vivo mouse, stored (L-R, A-P, S-I with superior last):
    turned to columns, rows down, slices."""
    image, mask = (np.asarray(nib.load(p).dataobj, dtype=float) for p in (image_path, mask_path))
    image, brain = (np.transpose(a[:, :, ::-1], (0, 2, 1)) for a in (image, mask > 0))
    zooms = nib.load(image_path).header.get_zooms()
    spacing = (float(zooms[0]), float(zooms[2]))
    return dorsal_midline(image, brain, spacing), midline_groove_mm(brain, spacing), groove_width_mm(brain, spacing[0])


def sigma_figures(path: Path) -> tuple[float, float, float]:
    """The SIGMA template's voxel axes run L-R, dorsal to ventral, A-P (its header's labels aside): already columns,
    rows down, slices."""
    image = np.asarray(nib.load(path).dataobj, dtype=float)
    zooms = nib.load(path).header.get_zooms()
    spacing = (float(zooms[0]), float(zooms[1]))
    brain = image > 0
    return dorsal_midline(image, brain, spacing), midline_groove_mm(brain, spacing), groove_width_mm(brain, spacing[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mice", type=Path, required=True, help="FVB_NCrl/in_vivo (holds template/ and mask/)")
    parser.add_argument("--sigma", type=Path, required=True)
    args = parser.parse_args(argv)
    mice = sorted((args.mice / "template").glob("*.nii.gz"))
    if not mice:
        raise SystemExit(f"{args.mice / 'template'}: no .nii.gz images; fetch dama-lab/mouse-brain-atlas first")
    figures = np.array([mouse_figures(p, args.mice / "mask" / p.name) for p in mice])
    for p, (ratio, groove, width) in zip(mice, figures):
        print(f"{p.name}: midline / lateral {ratio:.3f}, groove {groove:.2f} mm deep, {width:.2f} mm wide")
    names = ("midline / lateral", "groove depth mm", "groove width mm")
    for name, column in zip(names, figures.T):
        print(f"mice, {name}: {column.min():.3f}-{column.max():.3f}, median {np.median(column):.3f} (n = {len(mice)})")
    ratio, groove, width = sigma_figures(args.sigma)
    print(f"SIGMA rat template: midline / lateral {ratio:.3f}, groove {groove:.2f} mm deep, {width:.2f} mm wide")


if __name__ == "__main__":
    main()
