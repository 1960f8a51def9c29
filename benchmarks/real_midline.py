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
from world import dorsal_midline, groove_width_mm, midline_groove_mm  # noqa: E402


def figures(image: np.ndarray, brain: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float, float]:
    """Midline / lateral signal, groove depth and groove width (mm) of one brain (layout as dorsal_midline)."""
    return dorsal_midline(image, brain, spacing), midline_groove_mm(brain, spacing), groove_width_mm(brain, spacing[0])


def mouse_figures(image_path: Path, mask_path: Path) -> tuple[float, float, float]:
    """Midline ratio, groove depth and width (mm) of a dama-lab in vivo mouse, stored (L-R, A-P, S-I with superior last):
    turned to columns, rows down, slices."""
    loaded = nib.load(image_path)
    image, mask = np.asarray(loaded.dataobj, dtype=float), np.asarray(nib.load(mask_path).dataobj) > 0
    image, brain = (np.transpose(a[:, :, ::-1], (0, 2, 1)) for a in (image, mask))
    zooms = loaded.header.get_zooms()
    return figures(image, brain, (float(zooms[0]), float(zooms[2])))


def sigma_figures(path: Path) -> tuple[float, float, float]:
    """The SIGMA template's voxel axes run L-R, dorsal to ventral, A-P (its header's labels aside): already columns,
    rows down, slices."""
    loaded = nib.load(path)
    image, zooms = np.asarray(loaded.dataobj, dtype=float), loaded.header.get_zooms()
    return figures(image, image > 0, (float(zooms[0]), float(zooms[1])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mice", type=Path, required=True, help="FVB_NCrl/in_vivo (holds template/ and mask/)")
    parser.add_argument("--sigma", type=Path, required=True)
    args = parser.parse_args(argv)
    mice = sorted((args.mice / "template").glob("*.nii.gz"))
    if not mice:
        raise SystemExit(f"{args.mice / 'template'}: no .nii.gz images; fetch dama-lab/mouse-brain-atlas first")
    measured = np.array([mouse_figures(p, args.mice / "mask" / p.name) for p in mice])
    for p, (ratio, groove, width) in zip(mice, measured):
        print(f"{p.name}: midline / lateral {ratio:.3f}, groove {groove:.2f} mm deep, {width:.2f} mm wide")
    names = ("midline / lateral", "groove depth mm", "groove width mm")
    for name, column in zip(names, measured.T):
        print(f"mice, {name}: {column.min():.3f}-{column.max():.3f}, median {np.median(column):.3f} (n = {len(mice)})")
    ratio, groove, width = sigma_figures(args.sigma)
    print(f"SIGMA rat template: midline / lateral {ratio:.3f}, groove {groove:.2f} mm deep, {width:.2f} mm wide")


if __name__ == "__main__":
    main()
