"""Slice figures of a scan with lesion outlines: raw-data picture checks and evaluation overlays.

Volumes are reoriented to RAS first, then cut along the acquisition (thick-slice) axis and shown in
anatomical display: the subject's right on the right, superior (or anterior) at the top, physical aspect ratio.
Figures are drawn on a bare matplotlib ``Figure`` (Agg, no screen, no pyplot state) and written atomically.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lesionseg.data.io import atomic_path, read_json, read_volume

GROUND_TRUTH_COLOUR = "lime"
PREDICTION_COLOUR = "red"
_AXIS_NAMES = ("x", "y", "z")
_AXIS_ENDS = (("L", "R"), ("P", "A"), ("I", "S"))


def _to_ras(volumes: list[np.ndarray | None], affine: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray, int]:
    """Reorient arrays to the closest RAS axes; also return the new affine and the RAS axis of array axis 2."""
    ornt = nib.orientations.io_orientation(affine)
    shape = volumes[0].shape
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    out = [None if v is None else nib.orientations.apply_orientation(v, ornt) for v in volumes]
    return out, ras_affine, int(ornt[2, 0])


def _span(ras_affine: np.ndarray, shape: tuple[int, ...], axis: int) -> tuple[float, float]:
    """World extent (mm) of the voxel edges along a RAS-aligned array axis."""
    step = float(ras_affine[axis, axis])
    start = float(ras_affine[axis, 3])
    return start - step / 2, start + step * (shape[axis] - 0.5)


def _slice_position(ras_affine: np.ndarray, shape: tuple[int, ...], axis: int, index: int) -> float:
    """World coordinate (mm) along ``axis`` of the centre of slice ``index``."""
    voxel = (np.array(shape, dtype=float) - 1) / 2
    voxel[axis] = index
    return float((ras_affine[:3, :3] @ voxel + ras_affine[:3, 3])[axis])


def _crop_to_head(volumes: list[np.ndarray | None], ras_affine: np.ndarray, axis: int):
    """Crop every volume in-plane to the bright voxels of the first (the head) with a margin; shift the affine."""
    image = volumes[0]
    bright = image > 0.15 * np.percentile(image, 99)
    starts, box = np.zeros(3), []
    for a in range(3):
        others = tuple(o for o in range(3) if o != a)
        inside = np.flatnonzero(bright.sum(axis=others) >= max(3, 0.002 * image.size / image.shape[a]))
        if a == axis or inside.size == 0:
            box.append(slice(None))
            continue
        pad = int(0.06 * image.shape[a]) + 1
        box.append(slice(max(inside[0] - pad, 0), min(inside[-1] + 1 + pad, image.shape[a])))
        starts[a] = box[-1].start
    affine = ras_affine.copy()
    affine[:3, 3] = ras_affine[:3, :3] @ starts + ras_affine[:3, 3]
    return [None if v is None else v[tuple(box)] for v in volumes], affine


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name}: shape {mask.shape} differs from the image's {shape}; pass a mask on the image grid")
    return mask > 0


def _choose_slices(image: np.ndarray, masks: list[np.ndarray | None], axis: int, n_slices: int) -> list[int]:
    """Slices with the most lesion (first non-empty mask), else evenly spaced through the head."""
    others = tuple(a for a in range(3) if a != axis)
    for mask in masks:
        if mask is not None and mask.any():
            area = mask.sum(axis=others)
            ranked = np.argsort(-area, kind="stable")[:n_slices]
            return sorted(int(i) for i in ranked if area[i] > 0)
    foreground = (image > 0.2 * np.percentile(image, 99)).mean(axis=others)
    filled = np.flatnonzero(foreground >= 0.5 * foreground.max())
    picks = np.linspace(filled[0], filled[-1], n_slices + 2)[1:-1] if filled.size > n_slices else filled
    return sorted({int(round(p)) for p in picks})


def _panel(ax, image2d, masks2d, extent, ends, window, title) -> None:
    """One slice: rows of ``image2d`` run along the horizontal display axis, columns along the vertical one."""
    ax.imshow(image2d.T, cmap="gray", origin="lower", extent=extent, vmin=window[0], vmax=window[1],
              interpolation="nearest")
    for mask, colour in masks2d:
        if mask is not None and mask.any():
            ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.0,
                       origin="lower", extent=extent)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.text(0.02, 0.5, ends[0], transform=ax.transAxes, color="yellow", fontsize=8, va="center")
    ax.text(0.98, 0.5, ends[1], transform=ax.transAxes, color="yellow", fontsize=8, va="center", ha="right")


def render_slices(
    image: np.ndarray,
    affine: np.ndarray,
    out_png: str | Path,
    *,
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    n_slices: int = 4,
    title: str | None = None,
) -> Path:
    """Draw ``n_slices`` acquisition-axis slices of ``image`` with ground-truth and prediction outlines to a PNG."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image: expected a 3D array, got shape {image.shape}; pass one volume")
    if n_slices < 1:
        raise ValueError(f"n_slices: {n_slices} is not >= 1; pass how many slices to show")
    label, prediction = _check_mask(label, image.shape, "label"), _check_mask(prediction, image.shape, "prediction")
    volumes, ras_affine, axis = _to_ras([image, label, prediction], np.asarray(affine, float))
    (image, label, prediction), ras_affine = _crop_to_head(volumes, ras_affine, axis)
    horizontal, vertical = (a for a in range(3) if a != axis)
    extent = [*_span(ras_affine, image.shape, horizontal), *_span(ras_affine, image.shape, vertical)]
    window = np.percentile(image, [0.5, 99.5])
    slices = _choose_slices(image, [label, prediction], axis, n_slices)
    panel_w = 3.2
    panel_h = panel_w * (extent[3] - extent[2]) / (extent[1] - extent[0])
    fig = Figure(figsize=(panel_w * len(slices), panel_h + 0.9), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(slices)))
    for ax, index in zip(axes, slices):
        image2d, label2d, prediction2d = (None if v is None else np.take(v, index, axis=axis)
                                          for v in (image, label, prediction))
        position = _slice_position(ras_affine, image.shape, axis, index)
        _panel(ax, image2d, [(label2d, GROUND_TRUTH_COLOUR), (prediction2d, PREDICTION_COLOUR)], extent,
               _AXIS_ENDS[horizontal], window, f"slice {index}: {_AXIS_NAMES[axis]} = {position:+.2f} mm")
    handles = [Line2D([], [], color=colour, label=name if mask.any() else f"{name} (empty)")
               for mask, colour, name in [(label, GROUND_TRUTH_COLOUR, "ground truth"),
                                          (prediction, PREDICTION_COLOUR, "prediction")] if mask is not None]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return Path(out_png)


def render_dataset_case(dataset_dir: str | Path, case_id: str, out_png: str | Path, n_slices: int = 4) -> Path:
    """Render one case of an nnU-Net raw dataset (image and, if present, its label) to a PNG."""
    dataset_dir = Path(dataset_dir)
    meta_path = dataset_dir / "dataset.json"
    ending = read_json(meta_path).get("file_ending", ".nii.gz") if meta_path.is_file() else ".nii.gz"
    image = read_volume(dataset_dir / "imagesTr" / f"{case_id}_0000{ending}")
    label_path = dataset_dir / "labelsTr" / f"{case_id}{ending}"
    label = read_volume(label_path).data if label_path.is_file() else None
    spacing = "x".join(f"{s:.3g}" for s in image.spacing)
    title = f"{dataset_dir.name} / {case_id}  ({spacing} mm)"
    return render_slices(image.data, image.affine, out_png, label=label, n_slices=n_slices, title=title)
