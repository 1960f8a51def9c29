"""Import Bruker ParaVision studies (folders or PV360 zip exports) into the nnU-Net v2 raw layout, via brkraw.

One study is one animal: the T2w scan (by protocol name pattern or scan id) becomes ``imagesTr/CASE_0000.nii.gz``
in subject RAS, ``CASE`` being the subject id; masks drawn in ITK-SNAP (NIfTI) or 3D Slicer (NRRD, ``.seg.nrrd``)
become ``labelsTr/CASE.nii.gz``, checked with the dataset validator. ``manifests/CASE.json`` records where each
case came from. The dataset is built aside and moved into place only when every case is good, so a failure (a
one-line :class:`DataError`) leaves nothing behind.

brkraw does the reading; we check what it cannot vouch for and correct what it gets wrong:
- ``convert()`` returns None with a logged warning when metadata is missing: the warning becomes the error.
- It assumes coronal packs are stored in reverse slice order and adds ``PVM_SPackArrSliceGap`` to a slice
  distance that already includes it: the slice axis is taken from ``VisuCorePosition`` (one position per
  stored frame, the spec's definition) whenever brkraw's affine disagrees with it.
- It keeps the first per-frame ``VisuCoreDataSlope`` only, in the header: we scale each frame ourselves.
- Without ``VisuSubjectType`` it assumes a human; only a head-first prone quadruped is accepted unless the
  user states the subject type and pose.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np

from lesionseg.data.dataset import AFFINE_TOLERANCE_MM, GROUPS, case_id_problem, find_problems
from lesionseg.data.io import atomic_dir, write_json, write_text, write_volume
from lesionseg.errors import DataError

DEFAULT_PROTOCOL = "T2"
VOUCHED_SUBJECT = ("Quadruped", "Head_Prone")  # the subject frame whose RAS axes we have verified
LABEL_ENDINGS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd")
BRKRAW_HOME_VARIABLE = "BRKRAW_CONFIG_HOME"  # brkraw's own variable; set only while an import runs
AFFINE_DECIMALS = 6  # brkraw's default; pinned so that a user's brkraw config cannot change our affines
_NRRD_TO_RAS = {  # NRRD world frames (3D Slicer writes LPS) -> RAS sign flips
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
}


@dataclass(frozen=True)
class _Study:
    """One ParaVision study: where it is (``path``, or ``archive`` + ``root`` inside a zip)."""

    path: Path
    archive: Path | None = None
    root: str = ""

    @property
    def name(self) -> str:
        """The study's name (its folder, or zip and folder), which does not depend on where it was copied."""
        if self.archive is not None:
            return f"{self.archive.name}:{self.root}" if self.root else self.archive.name
        return self.path.name

    def where(self, rel: str = "") -> str:
        """A file of the study, as a person would name it in a message."""
        base = f"{self.archive}:{self.root}" if self.archive else str(self.path)
        return f"{base.rstrip('/:')}/{rel}" if rel else base


@dataclass(frozen=True)
class _Scan:
    """The converted T2w scan of one study and what the manifest says about it."""

    case_id: str
    data: np.ndarray
    affine: np.ndarray
    manifest: dict


def import_bruker(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    scan_id: int | None = None,
    labels_dir: str | Path | None = None,
    subject_type: str | None = None,
    subject_pose: str | None = None,
) -> Path:
    """Convert ParaVision studies to an nnU-Net v2 raw dataset at ``out_dir``; return ``out_dir``.

    ``sources``: study folders, folders of studies, or ``.zip`` exports. The scan is the one whose protocol name
    matches the regular expression ``protocol`` (case-insensitive), or ``scan_id``. ``labels_dir`` holds
    ``CASE.nii.gz`` / ``CASE.seg.nrrd`` masks and optionally a ``cases.csv`` with each case's group (MCAo or sham;
    otherwise an empty mask means sham). ``subject_type``/``subject_pose`` override what the scanner recorded.
    Raises :class:`DataError` (one line) and writes nothing on any failure.
    """
    out_dir, labels = Path(out_dir), Path(labels_dir) if labels_dir is not None else None
    groups = _read_groups(labels) if labels is not None else {}
    with _brkraw_isolated(), _brkraw_quiet(), atomic_dir(out_dir) as tmp:
        studies = [study for source in sources for study in _find_studies(Path(source))]
        rows, seen = [], {}
        for study in studies:  # one scan in memory at a time
            scan = _convert_study(study, protocol, scan_id, subject_type, subject_pose)
            if scan.case_id in seen:
                raise DataError(f"{study.where()}: subject id {scan.case_id} is also the subject of "
                                f"{seen[scan.case_id]}; import one study per animal")
            seen[scan.case_id] = study.where()
            rows.append(_write_case(tmp, scan, labels, groups))
        _write_dataset_files(tmp, out_dir.name, sorted(rows, key=lambda row: row["case_id"]))
        if labels is not None:
            _validate(tmp, {f"labelsTr/{case_id}.nii.gz": str(_find_label(labels, case_id)) for case_id in seen})
    return out_dir


# --- finding studies --------------------------------------------------------------------------------------


def _find_studies(source: Path) -> list[_Study]:
    """The studies in ``source`` (a study folder, a folder of study folders and/or zip exports, or a zip export)."""
    if not source.exists():
        raise DataError(f"{source}: not found; pass a ParaVision study folder or a PV360 .zip export")
    zips = sorted(p for p in source.iterdir() if p.suffix.lower() == ".zip") if source.is_dir() else []
    folders = [p for p in sorted(source.iterdir()) if p.is_dir()] if zips else [source]
    return [study for zipped in zips for study in _discover(zipped)] + \
        [study for folder in folders for study in _discover(folder, quiet=bool(zips))]


def _discover(source: Path, quiet: bool = False) -> list[_Study]:
    """The studies brkraw finds in ``source``; ``quiet``: a folder without any is not an error (beside zips)."""
    from brkraw.core.fs import DatasetFS
    from brkraw.dataclasses import Study

    try:
        found = Study.discover(DatasetFS.from_path(source))
    except Exception as err:  # a corrupt zip, an unreadable folder
        raise DataError(f"{source}: cannot read ({_first_line(err)}); copy the study again from the scanner") from None
    if not found and quiet:
        return []
    if not found:
        raise DataError(f"{source}: no ParaVision study found (a study has <scan>/acqp, <scan>/method and "
                        "<scan>/pdata/<reco>/{2dseq,visu_pars,reco}); pass a study folder or a PV360 .zip export")
    if source.is_file():
        if len(found) > 1:
            raise DataError(f"{source}: holds {len(found)} studies; export one study per zip")
        return [_Study(source, archive=source, root=found[0].relroot)]
    return [_Study(source / s.relroot if s.relroot else source) for s in found]


# --- converting one study ---------------------------------------------------------------------------------


def _convert_study(study: _Study, protocol: str, scan_id: int | None, subject_type: str | None,
                   subject_pose: str | None) -> _Scan:
    import brkraw

    with _brkraw_warnings() as warnings:
        loader = _load(study)
        scan = _pick_scan(study, loader, protocol, scan_id)
        reco = next(iter(loader.avail[scan].avail))
        visu = loader.avail[scan].avail[reco].visu_pars
        method = loader.avail[scan].method
        where = f"{scan}/pdata/{reco}"
        _check_single_pack(study, scan, method)
        subject = _subject(study, where, visu, subject_type, subject_pose)
        image = _brkraw_image(study, loader, scan, reco, subject, warnings)
    data = _scaled(study, where, np.asarray(image.dataobj), visu)
    affine, slice_axis_source = _checked_affine(study, where, loader, scan, reco, image.affine, visu, subject)
    case_id = _case_id(study, loader, visu)
    manifest = {
        "case_id": case_id, "study": study.name, "scan_id": scan, "reco_id": reco,
        "protocol": _text(loader.avail[scan].acqp.get("ACQ_protocol_name")),
        "method": _text(method.get("Method")),
        **_echo_time(method, loader.avail[scan].acqp, visu),
        "repetition_time_ms": _number(method.get("PVM_RepetitionTime"), visu.get("VisuAcqRepetitionTime")),
        "field_strength_t": _field_strength(visu, loader.avail[scan].acqp),
        "subject_type": subject[0], "subject_position": subject[1],
        "subject_as_recorded": [visu.get("VisuSubjectType"), visu.get("VisuSubjectPosition")],
        "slice_axis_from": slice_axis_source, "shape": list(data.shape),
        "brkraw_version": brkraw.__version__, "brkraw_warnings": warnings,
        "source_sha256": _source_hashes(study, scan),
    }
    return _Scan(case_id, data, affine, manifest)


def _load(study: _Study):
    from brkraw.apps.loader import BrukerLoader

    try:  # hooks off and decimals pinned: a user's brkraw config must not change what we import
        return BrukerLoader(study.archive or study.path, disable_hook=True, affine_decimals=AFFINE_DECIMALS)
    except Exception as err:
        raise DataError(f"{study.where()}: brkraw cannot read the study ({_first_line(err)}); "
                        "copy it again from the scanner") from None


def _pick_scan(study: _Study, loader, protocol: str, scan_id: int | None) -> int:
    protocols = {sid: _text(scan.acqp.get("ACQ_protocol_name")) for sid, scan in loader.avail.items()}
    listing = ", ".join(f"{sid} ({name})" for sid, name in protocols.items())
    if scan_id is not None:
        if scan_id not in protocols:
            raise DataError(f"{study.where()}: no scan {scan_id} (scans: {listing}); pass one of them with --scan")
        return scan_id
    try:
        pattern = re.compile(protocol, re.IGNORECASE)
    except re.error as err:
        raise DataError(f"--protocol {protocol!r}: not a regular expression ({err}); fix the pattern") from None
    matches = [sid for sid, name in protocols.items() if pattern.search(name)]
    if not matches:
        raise DataError(f"{study.where()}: no scan's protocol matches {protocol!r} (scans: {listing}); "
                        "pass --protocol PATTERN or --scan ID")
    if len(matches) > 1:
        raise DataError(f"{study.where()}: scans {', '.join(map(str, matches))} all match protocol {protocol!r} "
                        f"(scans: {listing}); choose one with --scan ID or a narrower --protocol")
    return matches[0]


def _check_single_pack(study: _Study, scan: int, method) -> None:
    packs = int(method.get("PVM_NSPacks") or 1)
    if packs > 1:
        raise DataError(f"{study.where(f'{scan}/method')}: {packs} slice packs (PVM_NSPacks); lesionseg needs one "
                        "3D volume per case: acquire or export the packs as separate scans, or pick one with --scan")


def _subject(study: _Study, where: str, visu, subject_type: str | None, subject_pose: str | None) -> tuple[str, str]:
    """The subject type and pose to convert with; refuses those whose RAS axes nobody has verified."""
    recorded = (visu.get("VisuSubjectType"), visu.get("VisuSubjectPosition"))
    chosen = (subject_type or recorded[0], subject_pose or recorded[1])
    if subject_type or subject_pose:
        if chosen[0] is None or chosen[1] is None:
            raise DataError(f"{study.where(where + '/visu_pars')}: subject recorded as {_shown(recorded)}; "
                            "pass both --subject-type and --subject-pose")
        return str(chosen[0]), str(chosen[1])
    if tuple(chosen) == VOUCHED_SUBJECT:
        return VOUCHED_SUBJECT
    why = ("no VisuSubjectType, so brkraw would take the animal for a human (Biped)" if recorded[0] is None
           else f"subject recorded as {_shown(recorded)}, whose RAS axes from brkraw are unverified")
    raise DataError(f"{study.where(where + '/visu_pars')}: {why}; if the animal lay prone, head first, re-run with "
                    "--subject-type Quadruped --subject-pose Head_Prone (or pass the true type and pose, then check "
                    "the image's orientation in a viewer)")


def _brkraw_image(study: _Study, loader, scan: int, reco: int, subject: tuple[str, str], warnings: list[str]):
    try:
        image = loader.convert(scan, reco, space="subject_ras", override_subject_type=subject[0],
                               override_subject_pose=subject[1])
    except ValueError as err:
        if "2dseq" in str(err):
            raise DataError(f"{study.where(f'{scan}/pdata/{reco}/2dseq')}: {_first_line(err)}; the file is truncated "
                            "or belongs to another reco: copy the study again from the scanner") from None
        raise DataError(f"{study.where(f'{scan}')}: brkraw cannot convert the scan ({_first_line(err)}); "
                        "check its visu_pars and method") from None
    if image is None:
        said = warnings[-1] if warnings else "no reason given"
        raise DataError(f"{study.where(f'{scan}/pdata/{reco}/visu_pars')}: brkraw could not convert the scan "
                        f"({said}); the geometry parameters are missing or malformed: export the study again")
    if isinstance(image, tuple):
        raise DataError(f"{study.where(f'{scan}/method')}: {len(image)} slice packs; lesionseg needs one 3D volume "
                        "per case: pick another scan with --scan")
    shape = image.shape
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise DataError(f"{study.where(f'{scan}/pdata/{reco}/visu_pars')}: a {len(shape)}D scan {tuple(shape)} "
                        "(repetitions, echoes or cycles); lesionseg needs one 3D volume per case: pick a 3D scan "
                        "with --scan or export one volume")
    return image


def _scaled(study: _Study, where: str, raw: np.ndarray, visu) -> np.ndarray:
    """Stored values times each frame's slope plus offset (brkraw keeps only the first frame's slope)."""
    raw = raw.reshape(raw.shape[:3])
    n_frames = raw.shape[2]
    factors = []
    for key, default in (("VisuCoreDataSlope", 1.0), ("VisuCoreDataOffs", 0.0)):
        value = np.atleast_1d(np.asarray(visu.get(key, default), dtype=np.float64)).ravel()
        if value.size not in (1, n_frames):
            raise DataError(f"{study.where(where + '/visu_pars')}: {key} has {value.size} values for "
                            f"{n_frames} frames; export the study again")
        factors.append(np.broadcast_to(value, (n_frames,)))
    data = raw.astype(np.float64) * factors[0] + factors[1]
    if np.array_equal(data, np.rint(data)) and np.abs(data).max(initial=0) <= np.iinfo(np.int16).max:
        return data.astype(np.int16)  # integral values (a scanner's usual case) stay exact and compact
    return data.astype(np.float32)


def _checked_affine(study: _Study, where: str, loader, scan: int, reco: int, affine: np.ndarray, visu,
                    subject: tuple[str, str]) -> tuple[np.ndarray, str]:
    """brkraw's affine, with its slice axis replaced by VisuCorePosition's when the two disagree."""
    positions = np.asarray(visu.get("VisuCorePosition"), dtype=np.float64).reshape(-1, 3)
    n_slices = int(np.asarray(loader.avail[scan].method.get("PVM_SPackArrNSlices", [1])).ravel()[0])
    if visu.get("VisuCoreDim") != 2 or n_slices < 2 or positions.shape[0] < n_slices:
        return np.asarray(affine, dtype=np.float64), "brkraw"
    raw = loader.get_affine(scan, reco, space="raw")
    ras = loader.get_affine(scan, reco, space="subject_ras", override_subject_type=subject[0],
                            override_subject_pose=subject[1])
    to_ras = np.asarray(ras) @ np.linalg.inv(np.asarray(raw))  # brkraw's subject frame -> RAS (a rotation)
    expected = (to_ras @ np.c_[positions[:n_slices], np.ones(n_slices)].T).T[:, :3]
    affine = np.asarray(affine, dtype=np.float64)
    voxels = np.c_[np.zeros((n_slices, 2)), np.arange(n_slices), np.ones(n_slices)]
    if np.abs((affine @ voxels.T).T[:, :3] - expected).max() <= AFFINE_TOLERANCE_MM:
        return affine, "brkraw"
    fixed = affine.copy()
    fixed[:3, 2] = (expected[-1] - expected[0]) / (n_slices - 1)
    fixed[:3, 3] = expected[0]
    if np.abs((fixed @ voxels.T).T[:, :3] - expected).max() > AFFINE_TOLERANCE_MM:
        raise DataError(f"{study.where(where + '/visu_pars')}: VisuCorePosition's slices are not evenly spaced on a "
                        "line; lesionseg reads 2D multi-slice packs with one slice distance: export the study again")
    return fixed, "VisuCorePosition"


def _case_id(study: _Study, loader, visu) -> str:
    subject = loader.subject or {}
    case_id = str(subject.get("Subject", {}).get("ID", "Unknown"))
    if case_id in ("", "Unknown"):
        case_id = _text(visu.get("VisuSubjectId"))
    if not case_id:
        raise DataError(f"{study.where('subject')}: no subject id (SUBJECT_id, VisuSubjectId); "
                        "register the animal's id in ParaVision or fix the subject file")
    problem = case_id_problem(case_id, study.where("subject"))
    if problem:
        raise DataError(problem.replace("rename the case", "change the subject id"))
    return case_id


def _source_hashes(study: _Study, scan: int) -> dict[str, str]:
    if study.archive is not None:
        return {study.archive.name: _sha256(study.archive.read_bytes())}
    files = [study.path / "subject"] + sorted(p for p in (study.path / str(scan)).rglob("*") if p.is_file())
    return {p.relative_to(study.path).as_posix(): _sha256(p.read_bytes()) for p in files if p.is_file()}


# --- labels ------------------------------------------------------------------------------------------------


def _read_groups(labels_dir: Path) -> dict[str, str]:
    """case id -> group from ``labels_dir/cases.csv`` (optional)."""
    if not labels_dir.is_dir():
        raise DataError(f"{labels_dir}: labels folder not found; pass the folder with CASE.nii.gz or CASE.seg.nrrd")
    path = labels_dir / "cases.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups = {(r.get("case_id") or "").strip(): (r.get("group") or "").strip() for r in rows}
    for case_id, group in groups.items():
        if group not in GROUPS:
            raise DataError(f"{path}: group {group!r} of {case_id} is not one of {list(GROUPS)}; fix it")
    return groups


def _find_label(labels_dir: Path, case_id: str) -> Path:
    found = [p for p in (labels_dir / f"{case_id}{ending}" for ending in LABEL_ENDINGS) if p.is_file()]
    if not found:
        raise DataError(f"{labels_dir}: no label for {case_id}; add {case_id}.nii.gz (ITK-SNAP) or "
                        f"{case_id}.seg.nrrd (3D Slicer)")
    if len(found) > 1:
        raise DataError(f"{labels_dir}: {len(found)} labels for {case_id} ({', '.join(p.name for p in found)}); "
                        "keep one")
    return found[0]


def read_label(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A mask as ``(data, RAS affine)`` from NIfTI or NRRD (3D Slicer's ``.seg.nrrd`` included, LPS -> RAS)."""
    path = Path(path)
    try:
        if path.name.endswith(".nrrd"):
            return _read_nrrd(path)
        image = nib.load(str(path))
        return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read the label ({_first_line(err)}); export it again") from None


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(path))
    space = str(header.get("space", "")).lower()
    if space not in _NRRD_TO_RAS or "space directions" not in header:
        raise DataError(f"{path}: NRRD without a patient space (space: {header.get('space')!r}); "
                        "save the segmentation from 3D Slicer with its reference volume")
    directions = np.asarray(header["space directions"], dtype=np.float64)
    spatial = ~np.isnan(directions).any(axis=1)  # a .seg.nrrd may lead with a 'list' axis of segment layers
    if data.ndim == 4 and spatial.sum() == 3:
        data = np.moveaxis(data, int(np.flatnonzero(~spatial)[0]), 0).max(axis=0)
        directions = directions[spatial]
    if data.ndim != 3 or directions.shape != (3, 3):
        raise DataError(f"{path}: NRRD label of shape {data.shape}; save one 3D segmentation")
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # NRRD lists one direction per axis (rows); an affine has them as columns
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    return data, np.diag([*_NRRD_TO_RAS[space], 1.0]) @ affine


def _on_image_grid(data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                   image_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask resampled onto the image's grid when its voxels are the image's in another axis order or a
    cropped extent (as 3D Slicer saves segmentations); otherwise unchanged, for the validator to judge."""
    voxel_map = np.linalg.inv(image_affine) @ affine  # label voxel -> image voxel
    linear, offset = voxel_map[:3, :3], voxel_map[:3, 3]
    rounded = np.rint(linear)
    tol = AFFINE_TOLERANCE_MM / max(float(np.abs(image_affine[:3, :3]).max()), 1e-9)
    is_permutation = np.allclose(linear, rounded, atol=tol) and (np.abs(rounded).sum(axis=0) == 1).all() \
        and (np.abs(rounded).sum(axis=1) == 1).all()
    if not is_permutation or not np.allclose(offset, np.rint(offset), atol=tol):
        return data, affine
    index = np.indices(data.shape).reshape(3, -1)
    target = (rounded @ index + np.rint(offset)[:, None]).astype(int)
    if (target < 0).any() or (target >= np.array(shape[:3])[:, None]).any():
        return data, affine
    placed = np.zeros(shape[:3], dtype=data.dtype)
    placed[tuple(target)] = data.reshape(-1)
    return placed, image_affine


# --- writing ----------------------------------------------------------------------------------------------


def _write_case(root: Path, scan: _Scan, labels_dir: Path | None, groups: dict[str, str]) -> dict:
    write_volume(root / "imagesTr" / f"{scan.case_id}_0000.nii.gz", scan.data, scan.affine, _header("T2w image"))
    spacing = "x".join(f"{s:.6g}" for s in nib.affines.voxel_sizes(scan.affine))
    row = {"case_id": scan.case_id, "group": "", "lesion_volume_mm3": "", "spacing": spacing}
    if labels_dir is not None:
        path = _find_label(labels_dir, scan.case_id)
        data, affine = _on_image_grid(*read_label(path), scan.data.shape, scan.affine)
        if np.array_equal(data, np.rint(data)) and data.min(initial=0) >= 0 and data.max(initial=0) <= 255:
            data = data.astype(np.uint8)
        else:
            data = data.astype(np.float32)  # kept as drawn, so that the validator names the bad values
        write_volume(root / "labelsTr" / f"{scan.case_id}.nii.gz", data, affine, _header("lesion label"))
        lesion = int(np.count_nonzero(data > 0.5)) * abs(float(np.linalg.det(affine[:3, :3])))
        row["group"] = groups.get(scan.case_id) or ("MCAo" if lesion > 0 else "sham")
        row["lesion_volume_mm3"] = round(lesion, 6)
        scan.manifest["label"] = {"file": path.name, "sha256": _sha256(path.read_bytes())}
    write_json(root / "manifests" / f"{scan.case_id}.json", scan.manifest)
    return row


def _write_dataset_files(root: Path, name: str, rows: list[dict]) -> None:
    import brkraw

    write_json(root / "dataset.json", {
        "name": name, "description": f"ParaVision studies converted to subject RAS by brkraw {brkraw.__version__}",
        "channel_names": {"0": "T2w"}, "labels": {"background": 0, "lesion": 1}, "numTraining": len(rows),
        "file_ending": ".nii.gz",
    })
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "group", "lesion_volume_mm3", "spacing"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(root / "cases.csv", buffer.getvalue())


def _validate(root: Path, sources: dict[str, str]) -> None:
    """The dataset validator's first problem, about the lab's file rather than our temporary copy."""
    problems = find_problems(root)
    if problems:
        line = problems[0]
        for rel, source in sources.items():
            line = line.replace(str(root / rel), source)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(line.replace(str(root), "the imported dataset") + more)


def _header(what: str) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = f"lesionseg import-bruker {what}".encode()[:79]
    return header


# --- small helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _brkraw_isolated() -> Iterator[None]:
    """brkraw reads rules, hooks and decimals from its config home (``BRKRAW_CONFIG_HOME``, else ~/.brkraw): for
    the import it is an empty folder of its own, so that no user's config changes what lesionseg imports."""
    import os
    import tempfile

    saved = os.environ.get(BRKRAW_HOME_VARIABLE)
    with tempfile.TemporaryDirectory(prefix="lesionseg-brkraw-") as home:
        os.environ[BRKRAW_HOME_VARIABLE] = home
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(BRKRAW_HOME_VARIABLE, None)
            else:
                os.environ[BRKRAW_HOME_VARIABLE] = saved


@contextlib.contextmanager
def _brkraw_quiet() -> Iterator[None]:
    """Keep brkraw's log lines off stderr (our errors are one line); _brkraw_warnings collects them instead."""
    logger = logging.getLogger("brkraw")
    saved, sink = (logger.propagate, logger.level), logging.NullHandler()  # no handler at all would mean stderr
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    logger.addHandler(sink)
    try:
        yield
    finally:
        logger.removeHandler(sink)
        logger.propagate = saved[0]
        logger.setLevel(saved[1])


@contextlib.contextmanager
def _brkraw_warnings() -> Iterator[list[str]]:
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage().splitlines()[0])  # type: ignore[method-assign]
    logger = logging.getLogger("brkraw")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _text(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return text[1:-1].strip() if text.startswith("<") and text.endswith(">") else text


def _number(*values: object) -> float | None:
    for value in values:
        if value is not None:
            return float(np.asarray(value, dtype=np.float64).ravel()[0])
    return None


# Where the effective echo time is, most specific first. In RARE (TurboRARE) PVM_EchoTime is the echo spacing
# (PV360: 6 ms for an effective TE of 36 ms); EffectiveTE (method) and ACQ_echo_time (acqp) hold the TE at the
# centre of k-space, which sets the T2 contrast; single-echo methods (FLASH, MSME's first echo) have only
# PVM_EchoTime, and then it is the TE.
ECHO_TIME_KEYS = (("method", "EffectiveTE"), ("acqp", "ACQ_echo_time"), ("visu_pars", "VisuAcqEchoTime"),
                  ("method", "PVM_EchoTime"))


def _echo_time(method, acqp, visu) -> dict:
    """The manifest's ``echo_time_ms`` (the effective TE), the parameter it came from, and PVM_EchoTime."""
    files = {"method": method, "acqp": acqp, "visu_pars": visu}
    for file, key in ECHO_TIME_KEYS:
        value = _number(files[file].get(key))
        if value is not None and value > 0:
            return {"echo_time_ms": value, "echo_time_from": f"{file}:{key}",
                    "pvm_echo_time_ms": _number(method.get("PVM_EchoTime"))}
    return {"echo_time_ms": None, "echo_time_from": None, "pvm_echo_time_ms": None}


def _field_strength(visu, acqp) -> float | None:
    if visu.get("VisuMagneticFieldStrength") is not None:
        return _number(visu.get("VisuMagneticFieldStrength"))
    frequency = _number(acqp.get("BF1"))  # 1H frequency in MHz; 42.577 MHz per tesla
    return round(frequency / 42.577478, 3) if frequency else None


def _shown(subject: tuple) -> str:
    return " ".join(str(v) if v is not None else "(none)" for v in subject)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
