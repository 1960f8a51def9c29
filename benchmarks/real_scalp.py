"""Scalp and temporal muscle of real in vivo T2w mouse heads, measured as ``benchmarks/world.py`` measures the
synthetic ones (``scalp_over_vault``, ``lateral_head``).

Every in vivo NIfTI image of dama-lab/mouse-brain-atlas (GPL-3.0) that the public snapshot holds is skull-stripped;
the full-head images (``rTg4510/rTg4510_in_vivo_LR/template/*.nii``) are too large to be in it. The head survives in
the atlas's mask quick-check pictures (``quickcheck/mask/*.png``): FSL ``overlay 1 0 head -a mask 1 1`` then
``slicer -t -n -l renderjet.lut`` (the atlas's own ``mas_quickcheck``), one pixel per voxel. This script reads those
pictures back into intensities: grey pixels (outside the brain) are the head image scaled by its display window, the
blue pixels (inside) the same scaled image one step of ten. The window (2nd and 98th percentile of the unseen head
image) is found by matching the blue levels to the skull-stripped NIfTI, which is that image inside the brain; the
figures are printed only when that match reproduces the picture (>= 99 % of brain voxels). Nothing read here is
copied into the project; docs/synthetic.md records the figures.

    python benchmarks/real_scalp.py --atlas DIR   # DIR: rTg4510_in_vivo_LR with template_after_brain_extraction/,
                                                  # mask/ and quickcheck/mask/, fetched by hand
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import lateral_head, scalp_over_vault  # noqa: E402

SHAPE = (112, 128, 80)  # the atlas's grid (i left-right, j back-front, k up), 0.15 mm
CORONAL_AT = (0.15, 0.25, 0.34, 0.42, 0.50, 0.55, 0.62, 0.65, 0.70, 0.73, 0.78, 0.82)  # mas_quickcheck's -y cuts
LEVELS = (0.4, 0.5, 0.6)  # of the brain's front-to-back extent, as world.py; a cut within 0.05 of one is used
# FSL overlay with a 1-1 mask: value 15200 * scaled outside the mask, 16800 + 1600 * scaled inside, over 32000;
# renderjet.lut: 100 greys then 100 jet colours; a pixel shows the entry int(value * 199 / 32000).
STEP = 199 / 32000


def _jet(m: int = 100) -> np.ndarray:
    """MATLAB's jet(m), which renderjet.lut holds (matplotlib's jet differs by a level here and there)."""
    n = int(np.ceil(m / 4))
    ramp = np.r_[np.arange(1, n + 1) / n, np.ones(n - 1), np.arange(n, 0, -1) / n]
    green = int(np.ceil(n / 2)) - (m % 4 == 1) + np.arange(1, len(ramp) + 1)
    out = np.zeros((m, 3))
    for channel, at in enumerate((green + n, green, green - n)):
        inside = (at >= 1) & (at <= m)
        out[at[inside] - 1, channel] = ramp[inside]
    return out


def _lut() -> np.ndarray:
    """The 200 RGB entries of renderjet.lut, as 24-bit keys (greys 255 * n / 100, then jet in 100 steps)."""
    grey = np.repeat(np.arange(100)[:, None] / 100, 3, axis=1)
    jet = _jet()
    rgb = np.clip((255 * np.vstack([grey, jet]) + 1e-6).astype(int), 0, 255)
    return rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]


def coronal_cuts(png: Path) -> dict[int, np.ndarray]:
    """LUT index per voxel of each coronal cut in the picture, keyed by j, as (i, rows from the top down); -1 where a
    pixel matches no entry. Tiles: 4 per row below the 3 sagittal rows, 114 px apart; FSL draws i mirrored."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    keys, lut = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2], _lut()
    index = np.full(keys.shape, -1)
    for entry, key in enumerate(lut):
        index[keys == key] = entry
    cuts = {}
    for n, at in enumerate(CORONAL_AT):
        row0, col0 = 390 + 130 * (n // 4) + 24, 114 * (n % 4)
        j = int(min(SHAPE[1] - 1, np.floor(at * SHAPE[1] + 0.5)))
        cuts[j] = index[row0:row0 + SHAPE[2], col0:col0 + SHAPE[0]][:, ::-1].T
    return cuts


def _coronal(volume: np.ndarray, j: int) -> np.ndarray:
    """Coronal slice j of an atlas volume as (columns, rows from the top down), the layout world.py reads."""
    return volume[:, j, ::-1]


def display_window(cuts: dict[int, np.ndarray], image: np.ndarray, brain: np.ndarray) -> tuple[float, float, float]:
    """(p2, p98) of the head image, fitted where the blue levels inside the brain change, and the share of brain
    voxels whose level the fit reproduces."""
    stripped = brain & (image > 0)  # the skull-stripped image is the mask less its outer layer of voxels
    levels = np.concatenate([cut[_coronal(stripped, j)] for j, cut in cuts.items()])
    values = np.concatenate([_coronal(image, j)[_coronal(stripped, j)] for j in cuts])
    chosen = levels >= 100
    levels, values = levels[chosen], values[chosen]
    order = np.argsort(values)
    levels, values = levels[order], values[order]
    scaled, edges = [], []
    for level in range(levels.min() + 1, levels.max() + 1):
        at = (level / STEP - 16800) / 1600  # the scaled value where this level begins
        if 0 < at < 1:
            above = levels >= level  # an edge after the n smallest values misplaces the n's above, the rest's below
            errors = np.r_[0, np.cumsum(above)] + (np.sum(~above) - np.r_[0, np.cumsum(~above)])
            cut = int(np.argmin(errors))
            scaled.append(at)
            edges.append(values[max(cut - 1, 0):cut + 1].mean())
    slope, low = np.polyfit(scaled, edges, 1)
    predicted = np.floor((16800 + 1600 * np.clip((values - low) / slope, 0, 1)) * STEP)
    return float(low), float(low + slope), float(np.mean(predicted == levels))


def head(cut: np.ndarray, p2: float, p98: float) -> np.ndarray:
    """Intensity of a coronal cut from its levels, the middle of each level's range: grey outside the brain (a
    level is about 2 % of cortex), blue inside (about 10 %); NaN where a pixel matched no entry."""
    scaled = np.full(cut.shape, np.nan)
    grey, blue = (cut >= 0) & (cut < 100), cut >= 100
    scaled[grey] = (cut[grey] + 0.5) / (15200 * STEP)
    scaled[blue] = np.clip(((cut[blue] + 0.5) / STEP - 16800) / 1600, 0, 1)
    return p2 + scaled * (p98 - p2)


def mouse_figures(image_path: Path, mask_path: Path, png: Path) -> tuple[dict, float, float, float, dict]:
    """Scalp figures, temporal muscle / dorsal cortex, the air above the head / brain (ghosting shows here), the
    share of brain voxels the display window reproduces and the skin at the side of the head, for one mouse."""
    image = np.asarray(nib.load(image_path).dataobj, dtype=float)
    brain = np.asarray(nib.load(mask_path).dataobj) > 0
    cuts = coronal_cuts(png)
    p2, p98, agree = display_window(cuts, image, brain)
    extent = np.flatnonzero(brain.any((0, 2)))
    chosen = [j for j in cuts if min(abs((j - extent[0]) / (extent[-1] - extent[0]) - lv) for lv in LEVELS) <= 0.05]
    mask = np.stack([_coronal(brain, j) for j in chosen], axis=2)
    mixed = np.stack([np.where(_coronal(image, j) > 0, _coronal(image, j), head(cuts[j], p2, p98))
                      for j in chosen], axis=2)  # the exact image where the stripped one has it
    slices, spacing = list(range(len(chosen))), (0.15, 0.15)
    scalp = scalp_over_vault(mixed, mask, spacing, slices)
    air = float(np.nanmedian(mixed[:, :3, :]) / np.median(mixed[mask]))  # the top rows of the field
    side = lateral_head(mixed, mask, spacing, slices)
    return scalp, side["muscle"], air, agree, side


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, required=True, help="rTg4510_in_vivo_LR, fetched by hand")
    args = parser.parse_args(argv)
    pngs = [p for p in sorted((args.atlas / "quickcheck" / "mask").glob("*.png"))
            if (args.atlas / "mask" / (p.stem + ".nii.gz")).exists()]  # not the folder's tmp_* pictures
    if not pngs:
        raise SystemExit(f"{args.atlas / 'quickcheck' / 'mask'}: no pictures; fetch dama-lab/mouse-brain-atlas first")
    kept = []
    for png in pngs:
        name = png.stem + ".nii.gz"
        scalp, muscle, air, agree, skin = mouse_figures(args.atlas / "template_after_brain_extraction" / name,
                                                  args.atlas / "mask" / name, png)
        note = "" if agree >= 0.99 and air <= 0.2 else "  (left out: " + (
            f"window reproduces {agree:.1%}" if agree < 0.99 else f"air {air:.2f} of the brain, ghosting") + ")"
        print(f"{png.stem}: scalp band in {scalp['found']:.0%} of columns, peak {scalp['peak']:.2f}, mean "
              f"{scalp['mean']:.2f}, {scalp['width_mm']:.2f} mm at half peak; temporal muscle {muscle:.2f}; lateral skin "
              f"{skin['skin']:.2f} ({skin['skin_over_muscle']:.2f} x muscle); window {agree:.1%}{note}")
        if not note:
            kept.append((scalp["peak"], scalp["mean"], scalp["width_mm"], muscle, skin["skin"], skin["skin_over_muscle"]))
    for name, column in zip(("scalp peak / cortex", "scalp mean / cortex", "scalp width at half peak (mm)",
                             "temporal muscle / dorsal cortex", "lateral skin peak / dorsal cortex",
                             "lateral skin peak / temporal muscle"), np.array(kept).T):
        print(f"{name}: median {np.nanmedian(column):.2f}, {np.nanmin(column):.2f}-{np.nanmax(column):.2f} "
              f"(n = {len(kept)} mice)")


if __name__ == "__main__":
    main()
