"""NIfTI and file I/O. Every write goes to a temporary sibling first and is renamed into place,
so a crash never leaves a half-written file behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
from nibabel.affines import voxel_sizes
import numpy as np

from lesionseg.errors import DataError


@dataclass(frozen=True)
class Volume:
    """A 3D scan: ``data`` in voxel order as stored, ``affine`` mapping voxels to scanner mm (RAS+)."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in voxel_sizes(self.affine))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)  # keep .nii.gz so writers pick the right format
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python ones and NaN/inf as None, so the JSON is standard (no ``NaN``)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, standard JSON (see :func:`json_ready`)."""
    write_text(path, json.dumps(json_ready(obj), indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or malformed file into a one-line :class:`DataError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; run the stage that makes it (dvc repro) or check the path") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); regenerate or fix it") from None


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D NIfTI (``.nii`` or ``.nii.gz``) as float32, applying ``scl_slope``/``scl_inter``.

    Integer storage types and any orientation are accepted; a trailing singleton 4th dimension is
    dropped. Raises :class:`DataError` with one line naming the file for corrupt, truncated, 4D or
    non-finite data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path or the dataset layout (imagesTr/, labelsTr/)")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)  # dataobj applies scl_slope/scl_inter
    except Exception as err:  # nibabel raises many types for corrupt/truncated files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read NIfTI ({reason}); re-export or re-copy the file") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(
            f"{path}: expected a 3D volume, got shape {data.shape}; split 4D series into one 3D file per volume"
        )
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {n_bad} NaN/Inf voxels; fix the export or replace them before use")
    return Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), header=img.header.copy())


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
) -> None:
    """Atomically write ``data`` as NIfTI-1 with ``affine`` (qform and sform both set, code 1 = scanner)."""
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64), header=header)
    img.set_data_dtype(np.asarray(data).dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if header is None:
        img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
