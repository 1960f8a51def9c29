"""Raw datasets in the nnU-Net v2 layout: finding the cases and checking everything a stage will rely on.

``ROOT/dataset.json``, ``ROOT/imagesTr/{case}_0000.nii.gz``, ``ROOT/labelsTr/{case}.nii.gz`` and an optional
``ROOT/cases.csv`` (``case_id,group,lesion_volume_mm3,spacing``). Every problem found is one line,
``<file>: <what is wrong>; <how to fix>``, and validation reports all of them at once.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from lesionseg.data.io import Volume, read_json, read_volume
from lesionseg.errors import DataError

GROUPS = ("MCAo", "sham")
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
FILE_ENDINGS = (".nii.gz", ".nii")
UNKNOWN_GROUP = "unknown"
AFFINE_TOLERANCE_MM = 1e-3
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CaseRecord:
    """One training case. ``group``/``lesion_volume_mm3`` come from cases.csv; without it, :func:`read_cases`
    leaves them ``"unknown"``/NaN and :func:`validate_dataset` derives them from the label."""

    case_id: str
    image: Path
    label: Path
    group: str
    lesion_volume_mm3: float


@dataclass
class _Layout:
    """What the cheap (header-free) pass found: records for complete cases, and the problems."""

    records: list[CaseRecord]
    problems: list[str]


def read_cases(root: str | Path) -> list[CaseRecord]:
    """Cases of the dataset at ``root`` from its layout, dataset.json and cases.csv, without reading voxels.

    Raises :class:`DataError` listing every layout problem (missing files, bad dataset.json or cases.csv).
    """
    layout = _scan_layout(Path(root))
    _raise_if(layout.problems, Path(root))
    return layout.records


def find_problems(root: str | Path) -> list[str]:
    """Every problem with the dataset at ``root``, one line each; an empty list means it is valid."""
    problems: list[str] = []
    for _ in _checked_cases(Path(root), problems):
        pass
    return problems


def validate_dataset(root: str | Path) -> list[CaseRecord]:
    """Fully check the dataset (layout and every volume); return its cases with group and measured lesion volume.

    ``lesion_volume_mm3`` is measured from the label; a group missing from cases.csv is derived from it
    (empty mask = sham). Raises :class:`DataError` listing all problems.
    """
    return [record for record, _, _ in iter_valid_cases(root)]


def iter_valid_cases(root: str | Path) -> Iterator[tuple[CaseRecord, Volume, Volume]]:
    """Check the dataset case by case, reading each file once; yield ``(record, image, label)`` per good case.

    Records are as :func:`validate_dataset` returns them. Nothing more is yielded once a problem is found,
    but checking goes on; after the last case a :class:`DataError` lists every problem. A caller that writes
    outputs should write them through :func:`lesionseg.data.io.atomic_dir`, so that the error discards them.
    """
    problems: list[str] = []
    yield from _checked_cases(Path(root), problems)
    _raise_if(problems, Path(root))


def _checked_cases(root: Path, problems: list[str]) -> Iterator[tuple[CaseRecord, Volume, Volume]]:
    layout = _scan_layout(root)
    problems += layout.problems
    for record in layout.records:
        case_problems, image, label = _check_case(record)
        problems += case_problems
        if not problems:
            yield _measured(record, label), image, label


def _check_case(record: CaseRecord) -> tuple[list[str], Volume | None, Volume | None]:
    """Read and check one case's image and label; return (problems, image, label)."""
    problems: list[str] = []
    image = _read_or_report(record.image, problems)
    label = _read_or_report(record.label, problems)
    if image is not None and float(image.data.min()) == float(image.data.max()):
        problems.append(f"{record.image}: image is constant (every voxel {float(image.data.min()):g}); "
                        "re-export the scan")
    if image is not None and label is not None:
        problems += _geometry_problems(record, image, label)
    if label is not None:
        problems += _label_problems(record, label)
    return problems, image, label


def _measured(record: CaseRecord, label: Volume) -> CaseRecord:
    """``record`` with the lesion volume measured from ``label`` and, if unknown, the group it implies."""
    volume = lesion_volume_mm3(label)
    group = record.group if record.group in GROUPS else ("MCAo" if volume > 0 else "sham")
    return replace(record, group=group, lesion_volume_mm3=volume)


def lesion_volume_mm3(label: Volume) -> float:
    """Foreground volume of a binary label in mm^3 (voxel count times voxel volume from the affine)."""
    voxel_mm3 = abs(float(np.linalg.det(label.affine[:3, :3])))
    return float(np.count_nonzero(label.data > 0.5)) * voxel_mm3


def problems_message(root: Path, problems: list[str]) -> str:
    """The :class:`DataError` text for a list of problems: a one-line summary, then one line per problem."""
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{root}: dataset is invalid ({len(problems)} {noun}); fix each line below and re-run\n" + "\n".join(
        f"  {p}" for p in problems
    )


def _raise_if(problems: list[str], root: Path) -> None:
    if problems:
        raise DataError(problems_message(root, problems))


# --- layout: dataset.json, folders, cases.csv (no voxel reads) ---------------------------------------------


def _scan_layout(root: Path) -> _Layout:
    if not root.is_dir():
        return _Layout([], [f"{root}: dataset folder not found; check the path or run the synthesize stage"])
    meta, problems = _read_dataset_json(root)
    file_ending = meta.get("file_ending") if isinstance(meta.get("file_ending"), str) else ".nii.gz"
    folders = [root / "imagesTr", root / "labelsTr"]
    missing = [f"{f}: folder not found; put the {f.name[:-2]} there (nnU-Net v2 raw layout)"
               for f in folders if not f.is_dir()]
    if missing:
        return _Layout([], problems + missing)
    images, bad_images, image_problems = _list_cases(folders[0], file_ending, channel=True)
    labels, bad_labels, label_problems = _list_cases(folders[1], file_ending, channel=False)
    problems += image_problems + label_problems
    problems += _pairing_problems(images, labels, file_ending, ignore=bad_images | bad_labels)
    all_ids = set(images) | set(labels)
    if not all_ids and not image_problems and not label_problems:
        problems.append(f"{root}: no cases found in imagesTr/ and labelsTr/; add CASE_0000{file_ending} images "
                        f"and CASE{file_ending} labels")
    n_training = meta.get("numTraining")
    if isinstance(n_training, int) and all_ids and n_training != len(all_ids):
        problems.append(f"{root / 'dataset.json'}: numTraining is {n_training} but {len(all_ids)} cases were found; "
                        f"set numTraining to {len(all_ids)}")
    csv_rows, csv_problems = _read_cases_csv(root, all_ids)
    problems += csv_problems
    records = [
        CaseRecord(case_id, images[case_id], labels[case_id], *csv_rows.get(case_id, (UNKNOWN_GROUP, math.nan)))
        for case_id in sorted(set(images) & set(labels))
    ]
    return _Layout(records, problems)


def _read_dataset_json(root: Path) -> tuple[dict, list[str]]:
    path = root / "dataset.json"
    if not path.is_file():
        return {}, [f"{path}: file not found; write a dataset.json with {', '.join(REQUIRED_KEYS)} (nnU-Net v2 format)"]
    try:
        meta = read_json(path)
    except DataError as err:
        return {}, [str(err)]
    if not isinstance(meta, dict):
        return {}, [f"{path}: expected a JSON object; write a dataset.json with {', '.join(REQUIRED_KEYS)}"]
    problems = [f"{path}: missing key '{key}'; add it (nnU-Net v2 dataset.json format)"
                for key in REQUIRED_KEYS if key not in meta]
    problems += _meta_value_problems(path, meta)
    return meta, problems


def _meta_value_problems(path: Path, meta: dict) -> list[str]:
    problems = []
    channels = meta.get("channel_names")
    if "channel_names" in meta and (not isinstance(channels, dict) or len(channels) != 1):
        problems.append(f"{path}: channel_names must name exactly one channel, got {channels!r}; "
                        'use {"0": "T2w"} (lesionseg reads one channel)')
    labels = meta.get("labels")
    if "labels" in meta and not _labels_ok(labels):
        problems.append(f"{path}: labels must be background 0 and one foreground 1, got {labels!r}; "
                        'use {"background": 0, "lesion": 1}')
    n_training = meta.get("numTraining")
    if "numTraining" in meta and (not isinstance(n_training, int) or isinstance(n_training, bool)):
        problems.append(f"{path}: numTraining must be an integer, got {n_training!r}; set it to the number of cases")
    ending = meta.get("file_ending")
    if "file_ending" in meta and ending not in FILE_ENDINGS:
        problems.append(f"{path}: file_ending {ending!r} is not supported; convert the images to NIfTI and use "
                        f"one of {list(FILE_ENDINGS)}")
    return problems


def _labels_ok(labels: object) -> bool:
    if not isinstance(labels, dict) or labels.get("background") != 0 or len(labels) != 2:
        return False
    return [v for k, v in labels.items() if k != "background"] == [1]


def _list_cases(folder: Path, file_ending: str, *, channel: bool) -> tuple[dict[str, Path], set[str], list[str]]:
    """Case id -> file in ``imagesTr`` (``CASE_0000``) or ``labelsTr`` (``CASE``); also the rejected ids."""
    found: dict[str, Path] = {}
    rejected: set[str] = set()
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.name.endswith(file_ending):
            if path.name.endswith(FILE_ENDINGS):
                problems.append(f"{path}: does not end in {file_ending} (dataset.json file_ending); "
                                "rename it or fix file_ending")
            continue
        stem = path.name[: -len(file_ending)]
        if channel:
            if not stem.endswith("_0000"):
                problems.append(f"{path}: image name must end in _0000{file_ending} (one channel); rename it "
                                f"CASE_0000{file_ending}")
                continue
            stem = stem[: -len("_0000")]
        problem = case_id_problem(stem, path) or _outside_problem(folder.parent, path)
        if problem:
            problems.append(problem)
            rejected.add(stem)
            continue
        found[stem] = path
    return found, rejected, problems


def case_id_problem(case_id: str, where: str | Path) -> str | None:
    """Why ``case_id`` is unsafe as a file name (None when it is safe); ``where`` names the file that has it."""
    if _SAFE_ID.fullmatch(case_id) and ".." not in case_id:
        return None
    return (f"{where}: case id {case_id!r} is not a safe file name; "
            "rename the case using only letters, digits, '_', '.' and '-' (no '..')")


def _outside_problem(root: Path, path: Path) -> str | None:
    """A problem line if ``path`` (following links) lies outside ``root``."""
    resolved = path.resolve()
    if resolved.is_relative_to(root.resolve()):
        return None
    return f"{path}: resolves outside the dataset ({resolved}); copy the file into {root}"


def _pairing_problems(images: dict, labels: dict, file_ending: str, ignore: set[str]) -> list[str]:
    """Images without labels and labels without images (``ignore``: ids already reported as bad)."""
    problems = [f"{images[c]}: image has no label; add labelsTr/{c}{file_ending} or remove the image"
                for c in sorted(set(images) - set(labels) - ignore)]
    problems += [f"{labels[c]}: label has no image; add imagesTr/{c}_0000{file_ending} or remove the label"
                 for c in sorted(set(labels) - set(images) - ignore)]
    return problems


def _read_cases_csv(root: Path, case_ids: set[str]) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """cases.csv rows as case id -> (group, lesion volume); an absent file is fine (groups come from labels)."""
    path = root / "cases.csv"
    if not path.is_file():
        return {}, []
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return {}, [f"{path}: cannot read CSV ({err}); re-export it as UTF-8 CSV"]
    missing = [c for c in ("case_id", "group") if c not in columns]
    if missing:
        return {}, [f"{path}: missing column(s) {missing}; the header must be case_id,group,lesion_volume_mm3,spacing"]
    return _parse_csv_rows(path, rows, case_ids)


def _parse_csv_rows(path: Path, rows: list[dict], case_ids: set[str]) -> tuple[dict, list[str]]:
    parsed: dict[str, tuple[str, float]] = {}
    problems: list[str] = []
    for line, row in enumerate(rows, start=2):
        case_id, group = (row.get("case_id") or "").strip(), (row.get("group") or "").strip()
        where = f"{path} line {line}"
        problem = case_id_problem(case_id, where)
        if problem:
            problems.append(problem)
        elif case_id in parsed:
            problems.append(f"{where}: duplicate case id {case_id!r}; keep one row per case")
        elif group not in GROUPS:
            problems.append(f"{where}: group {group!r} of {case_id} is not one of {list(GROUPS)}; fix it")
        else:
            parsed[case_id] = (group, _float_or_nan(row.get("lesion_volume_mm3")))
    problems += [f"{path}: lists {c} but the case has no files; remove the row or add its image and label"
                 for c in sorted(set(parsed) - case_ids)]
    problems += [f"{path}: has no row for {c}; add a row (case_id,group,...)"
                 for c in sorted(case_ids - set(parsed)) if rows]
    return parsed, problems


def _float_or_nan(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


# --- per-case checks (voxel reads) --------------------------------------------------------------------------


def _read_or_report(path: Path, problems: list[str]) -> Volume | None:
    try:
        return read_volume(path)
    except DataError as err:
        problems.append(str(err))
        return None


def _geometry_problems(record: CaseRecord, image: Volume, label: Volume) -> list[str]:
    if image.data.shape != label.data.shape:
        return [f"{record.label}: shape {label.data.shape} differs from the image's {image.data.shape}; "
                "re-export the label on the image's grid"]
    if not np.allclose(image.affine, label.affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        delta = float(np.abs(image.affine - label.affine).max())
        return [f"{record.label}: affine differs from the image's by up to {delta:.4g} mm; "
                "re-export the label with the image's header"]
    return []


def _label_problems(record: CaseRecord, label: Volume) -> list[str]:
    values = np.unique(label.data)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        return [f"{record.label}: label values {shown} are outside {{0, 1}}; binarise the mask (lesion = 1)"]
    has_lesion = bool(values.size and values.max() == 1)
    if record.group == "sham" and has_lesion:
        return [f"{record.label}: cases.csv says {record.case_id} is sham but the mask has "
                f"{int(np.count_nonzero(label.data))} lesion voxels; fix the group or the mask"]
    if record.group == "MCAo" and not has_lesion:
        return [f"{record.label}: cases.csv says {record.case_id} is MCAo but the mask is empty; "
                "fix the group (sham) or the mask"]
    return []


def import_nifti(source: str | Path, out_dir: str | Path) -> Path:
    """Copy the valid nnU-Net v2 raw dataset at ``source`` to ``out_dir`` (atomically); return ``out_dir``.

    The whole dataset is validated first (a :class:`DataError` listing every problem, nothing written); only
    what the study reads is copied: dataset.json, cases.csv if present, imagesTr/ and labelsTr/.
    """
    import shutil

    from lesionseg.data.io import atomic_dir

    source, out_dir = Path(source), Path(out_dir)
    if source.resolve() == out_dir.resolve():
        raise DataError(f"{source}: already the raw folder this dataset is imported to; keep the lab's copy "
                        "outside data/raw and declare that path under datasets.nifti")
    records = validate_dataset(source)
    with atomic_dir(out_dir) as tmp:
        shutil.copy2(source / "dataset.json", tmp / "dataset.json")
        if (source / "cases.csv").is_file():
            shutil.copy2(source / "cases.csv", tmp / "cases.csv")
        for record in records:
            for path in (record.image, record.label):
                (tmp / path.parent.name).mkdir(exist_ok=True)
                shutil.copy2(path, tmp / path.parent.name / path.name)
    return out_dir
