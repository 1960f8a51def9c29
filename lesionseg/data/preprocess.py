"""The ``prepare`` stage: raw scans -> RAS, fixed spacing, robustly normalised, fixed-shape arrays.

Each step runs as a MONAI transform on a MetaTensor, so the affine follows the data and a prediction on the
prepared grid can be mapped back onto the raw scan (:func:`restore_to_input`). Prepared axes are RAS:
x = left->right, y = posterior->anterior, z = inferior->superior.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import BorderPad, Orientation, Spacing, SpatialCrop
from nibabel.processing import resample_from_to
from scipy import ndimage

from lesionseg.data.dataset import CaseRecord, case_id_problem, iter_valid_cases
from lesionseg.data.io import Volume, atomic_dir, read_json, write_json
from lesionseg.errors import ConfigError, DataError

CROP_MODES = ("head", "foreground", "center")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
HEAD_THRESHOLD = 0.1  # head = voxels above this fraction of the way from the darkest voxel to the 99th percentile
HEAD_MIN_COMPONENT = 0.05  # keep bright components of at least this fraction of the largest (drops noise specks)
TOP_MARGIN_VOXELS = 2  # air kept above the head when the "head" crop is aligned to its top
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PreparedCase:
    """One prepared case: ``image`` float32 (x, y, z), ``label`` uint8 or None, ``affine`` of that grid."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray


def image_digest(image: np.ndarray) -> str:
    """Content hash of a prepared image (rounded to 1e-3, so that the same scan prepared twice matches)."""
    return hashlib.sha256(np.round(np.asarray(image, dtype=np.float32), 3).tobytes()).hexdigest()[:16]


def prepare_volume(
    image: Volume,
    label: Volume | None,
    *,
    target_spacing: Sequence[float],
    shape: Sequence[int],
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    crop: str = "head",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Reorient to RAS, resample to ``target_spacing`` mm, normalise over the head, crop/pad to ``shape``.

    Normalisation clips to ``clip_percentiles`` of the head's intensities, then z-scores with the head's
    mean and standard deviation, so the air background ends low and flat. ``crop`` places the window:
    ``"head"`` centres it on the head, but where the head is taller than the window it keeps the top of
    the head (the rodent brain lies under the skull, the jaw below); ``"foreground"`` centres it on the
    head's bounding box; ``"center"`` on the field of view. Returns ``(image, label, affine)``; ``label`` is
    None when no label is given (inference).
    """
    check_settings(target_spacing, shape, clip_percentiles, crop)
    if label is not None and (label.data.shape != image.data.shape or not np.allclose(label.affine, image.affine,
                                                                                        rtol=0, atol=1e-3)):
        raise ValueError("label: its grid (shape/affine) differs from the image's; resample it onto the image first")
    img = _resample(image, target_spacing, "bilinear")
    head = head_mask(img[0].numpy())
    img = MetaTensor(torch.from_numpy(_normalise(img[0].numpy(), head, clip_percentiles))[None], affine=img.affine)
    start = _window_start(head, [int(s) for s in shape], crop)
    img = _crop(img, start, shape, pad_value=float(img.min()))
    out_label = None
    if label is not None:
        lab = _crop(_resample(label, target_spacing, "nearest"), start, shape, pad_value=0.0)
        out_label = (lab[0].numpy() > 0.5).astype(np.uint8)
    return img[0].numpy().astype(np.float32), out_label, img.affine.numpy().astype(np.float64)


def restore_to_input(mask: np.ndarray, prepared_affine: np.ndarray, reference: Volume) -> np.ndarray:
    """Map a binary mask on the prepared grid back onto ``reference``'s grid (nearest neighbour, 0 outside).

    Returns a uint8 array of ``reference.data.shape``.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask: expected a 3D array, got shape {mask.shape}; pass one volume without channels")
    source = nib.Nifti1Image(np.asarray(mask > 0, dtype=np.uint8), np.asarray(prepared_affine, dtype=np.float64))
    restored = resample_from_to(source, (reference.data.shape, reference.affine), order=0, cval=0)
    return np.asarray(restored.dataobj, dtype=np.uint8)


def prepare_dataset(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    target_spacing: Sequence[float],
    shape: Sequence[int],
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    crop: str = "head",
    source: str | None = None,
) -> Path:
    """Validate the raw dataset at ``raw_dir`` and write its prepared cases and manifest to ``out_dir``.

    The manifest names the raw data as ``source`` (give it relative to the project root; default the folder's
    name) and each raw file relative to ``raw_dir``, so the same data prepare to the same bytes in any clone.

    Writes ``{case_id}.npz`` (image float32, label uint8, affine float64) and ``manifest.json``, all at once
    through :func:`atomic_dir`: if any case is invalid, :class:`DataError` lists every problem and
    ``out_dir`` is left as it was. Returns the manifest path.
    """
    check_settings(target_spacing, shape, clip_percentiles, crop)
    settings = dict(target_spacing=target_spacing, shape=shape, clip_percentiles=clip_percentiles, crop=crop)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        entries = [_prepare_case(record, image, label, tmp, settings, Path(raw_dir))
                   for record, image, label in iter_valid_cases(raw_dir)]
        write_json(tmp / MANIFEST, {
            "source": source or Path(raw_dir).name,
            "target_spacing": [float(s) for s in target_spacing],
            "shape": [int(s) for s in shape],
            "clip_percentiles": [float(p) for p in clip_percentiles],
            "crop": crop,
            "cases": entries,
        })
    return out_dir / MANIFEST


def load_manifest(prepared_dir: str | Path) -> dict:
    """The manifest of a prepared dataset (:class:`DataError` if missing or malformed)."""
    manifest = read_json(Path(prepared_dir) / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise DataError(f"{Path(prepared_dir) / MANIFEST}: no 'cases' list; re-run the prepare stage (dvc repro)")
    return manifest


def load_prepared_case(prepared_dir: str | Path, case_id: str) -> PreparedCase:
    """Read one prepared case written by :func:`prepare_dataset`."""
    path = Path(prepared_dir) / f"{case_id}.npz"
    problem = case_id_problem(case_id, path)
    if problem:
        raise DataError(problem)
    if not path.is_file():
        raise DataError(f"{path}: prepared case not found; run the prepare stage (dvc repro) or check the case id")
    try:
        with np.load(path) as arrays:
            label = arrays["label"] if "label" in arrays.files else None
            return PreparedCase(case_id, arrays["image"], label, arrays["affine"])
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: cannot read prepared case ({err}); re-run the prepare stage") from None


def check_settings(target_spacing: Sequence[float], shape: Sequence[int],
                   clip_percentiles: Sequence[float], crop: str) -> None:
    """Raise :class:`ConfigError` naming the argument when a preprocessing setting is invalid."""
    if len(target_spacing) != 3 or not all(float(s) > 0 for s in target_spacing):
        raise ConfigError(f"target_spacing={list(target_spacing)} must be 3 positive numbers (mm); fix params.yaml")
    if len(shape) != 3 or not all(int(s) == s and s > 0 for s in shape):
        raise ConfigError(f"shape={list(shape)} must be 3 positive integers; fix params.yaml")
    if len(clip_percentiles) != 2 or not 0 <= clip_percentiles[0] < clip_percentiles[1] <= 100:
        raise ConfigError(f"clip_percentiles={list(clip_percentiles)} must be (low, high) with "
                          "0 <= low < high <= 100; fix params.yaml")
    if crop not in CROP_MODES:
        raise ConfigError(f"crop={crop!r} is not one of {CROP_MODES}; fix params.yaml")


def head_mask(image: np.ndarray) -> np.ndarray:
    """Voxels of the head (everything brighter than the air), holes in each coronal slice filled."""
    darkest, bright_level = float(image.min()), float(np.percentile(image, 99))
    bright = image > darkest + HEAD_THRESHOLD * (bright_level - darkest)
    components, count = ndimage.label(bright)
    if count == 0:
        raise DataError("image: no head found (no voxel brighter than the background); check the scan is not blank")
    sizes = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(sizes >= HEAD_MIN_COMPONENT * sizes.max()) + 1
    mask = np.isin(components, keep)
    # Fill in each coronal (x-z) slice only: bone and ventricles are dark but enclosed there, while a 3D
    # fill would miss regions that open onto the first or last slice.
    return ndimage.binary_fill_holes(mask, structure=np.ones((3, 1, 3), dtype=bool))


def _resample(volume: Volume, target_spacing: Sequence[float], mode: str) -> MetaTensor:
    tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.data, dtype=np.float32))[None],
                        affine=torch.from_numpy(volume.affine))
    tensor = Orientation(axcodes="RAS", labels=RAS_LABELS)(tensor)
    return Spacing(pixdim=[float(s) for s in target_spacing], mode=mode, dtype=np.float32)(tensor)


def _normalise(image: np.ndarray, head: np.ndarray, clip_percentiles: Sequence[float]) -> np.ndarray:
    # MONAI's percentile clipping and NormalizeIntensity work on the whole image or on non-zero voxels;
    # the statistics here must come from the head mask only, so they are computed with numpy.
    low, high = np.percentile(image[head], clip_percentiles)
    clipped = np.clip(image, low, high)
    values = clipped[head]
    std = float(values.std())
    return ((clipped - float(values.mean())) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def _window_start(head: np.ndarray, shape: list[int], crop: str) -> list[int]:
    """First voxel of the crop window along each axis (may be negative or beyond the image: padded)."""
    if crop == "center":
        return [(dim - size) // 2 for dim, size in zip(head.shape, shape)]
    starts = []
    for axis, size in enumerate(shape):
        other = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(head.any(axis=other))
        first, last = int(occupied[0]), int(occupied[-1])
        if crop == "head" and axis == 2 and last - first + 1 > size:
            starts.append(min(last + 1 + TOP_MARGIN_VOXELS, head.shape[2]) - size)
        else:
            starts.append((first + last + 1 - size) // 2)
    return starts


def _crop(tensor: MetaTensor, start: Sequence[int], shape: Sequence[int], pad_value: float) -> MetaTensor:
    """Cut the window ``start`` + ``shape`` out of ``tensor``, padding with ``pad_value`` where it overhangs."""
    before = [max(0, -s) for s in start]
    after = [max(0, s + n - dim) for s, n, dim in zip(start, shape, tensor.shape[1:])]
    if any(before) or any(after):
        border = [b for pair in zip(before, after) for b in pair]
        tensor = BorderPad(spatial_border=border, mode="constant", value=pad_value)(tensor)
    roi_start = [s + b for s, b in zip(start, before)]
    return SpatialCrop(roi_start=roi_start, roi_end=[s + int(n) for s, n in zip(roi_start, shape)])(tensor)


def _prepare_case(record: CaseRecord, image: Volume, label: Volume, out_dir: Path, settings: dict,
                  raw_dir: Path) -> dict:
    try:
        prepared, prepared_label, affine = prepare_volume(image, label, **settings)
    except DataError as err:
        raise DataError(f"{record.image}: {str(err).removeprefix('image: ')}") from None
    file = f"{record.case_id}.npz"
    np.savez(out_dir / file, image=prepared, label=prepared_label, affine=affine)
    return {
        "case_id": record.case_id,
        "group": record.group,
        "lesion_volume_mm3": record.lesion_volume_mm3,
        "file": file,
        "raw_image": Path(record.image).relative_to(raw_dir).as_posix(),
        "raw_label": Path(record.label).relative_to(raw_dir).as_posix(),
    }
