"""nnU-Net-layout datasets: reading cases, real-world header quirks, and every kind of problem."""
import gzip
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.data.dataset import find_problems, read_cases, validate_dataset
from lesionseg.errors import DataError

SHAPE = (16, 16, 8)
AFFINE = np.diag([0.2, 0.2, 0.5, 1.0])
VOXEL_MM3 = 0.2 * 0.2 * 0.5


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def case_arrays(index: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    image = rng.uniform(10, 100, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    if lesion:
        label[4:8, 4:8 + index, 2:5] = 1  # 48 + 12 * index voxels
    return image, label


def make_dataset(root: Path, n: int = 4, *, csv: bool = True) -> Path:
    """Cases case_000..; every third one (0, 3, ...) is a sham."""
    rows = ["case_id,group,lesion_volume_mm3,spacing"]
    for i in range(n):
        case_id, lesion = f"case_{i:03d}", i % 3 != 0
        image, label = case_arrays(i, lesion)
        save(root / "imagesTr" / f"{case_id}_0000.nii.gz", image)
        save(root / "labelsTr" / f"{case_id}.nii.gz", label)
        rows.append(f"{case_id},{'MCAo' if lesion else 'sham'},{label.sum() * VOXEL_MM3:.3f},0.2x0.2x0.5")
    write_meta(root, numTraining=n)
    if csv:
        (root / "cases.csv").write_text("\n".join(rows) + "\n")
    return root


def write_meta(root: Path, **overrides) -> None:
    meta = {"channel_names": {"0": "T2w"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 4,
            "file_ending": ".nii.gz", "name": "tiny"}
    meta.update(overrides)
    meta = {k: v for k, v in meta.items() if v is not None}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_valid_dataset_reads_and_validates(tmp_path):
    root = make_dataset(tmp_path / "ds")
    cases = read_cases(root)
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002", "case_003"]
    assert [c.group for c in cases] == ["sham", "MCAo", "MCAo", "sham"]
    assert cases[1].image == root / "imagesTr" / "case_001_0000.nii.gz"
    assert cases[1].label == root / "labelsTr" / "case_001.nii.gz"
    assert find_problems(root) == []
    validated = validate_dataset(root)
    assert [c.lesion_volume_mm3 for c in validated] == pytest.approx([0.0, 60 * VOXEL_MM3, 72 * VOXEL_MM3, 0.0])


def test_without_cases_csv_groups_come_from_labels(tmp_path):
    root = make_dataset(tmp_path / "ds", csv=False)
    cheap = read_cases(root)
    assert {c.group for c in cheap} == {"unknown"} and all(math.isnan(c.lesion_volume_mm3) for c in cheap)
    assert [c.group for c in validate_dataset(root)] == ["sham", "MCAo", "MCAo", "sham"]


def test_real_world_header_quirks_load(tmp_path):
    """Non-RAS orientation, int16 with scl_slope/scl_inter, float labels of exactly 0/1, singleton 4th dim."""
    root = make_dataset(tmp_path / "ds", n=3)
    lps = np.array([[-0.2, 0, 0, 3.0], [0, 0, 0.5, -2.0], [0, -0.2, 0, 1.0], [0, 0, 0, 1]])  # not RAS
    image, label = case_arrays(1, lesion=True)
    scaled = nib.Nifti1Image(np.round(image * 10).astype(np.int16), lps)
    scaled.header.set_slope_inter(0.1, 5.0)
    nib.save(scaled, str(root / "imagesTr" / "case_001_0000.nii.gz"))
    save(root / "labelsTr" / "case_001.nii.gz", label.astype(np.float64)[..., None], lps)
    assert nib.aff2axcodes(lps) != ("R", "A", "S")
    assert find_problems(root) == []
    assert validate_dataset(root)[1].lesion_volume_mm3 == pytest.approx(60 * VOXEL_MM3)


def _nifti(root, case="case_001", kind="image"):
    return root / "imagesTr" / f"{case}_0000.nii.gz" if kind == "image" else root / "labelsTr" / f"{case}.nii.gz"


def _corrupt(root):
    _nifti(root).write_bytes(b"this is not a nifti file at all" * 10)


def _truncate(root):
    raw = gzip.decompress(_nifti(root).read_bytes())
    _nifti(root).write_bytes(gzip.compress(raw[: len(raw) // 2]))


def _four_d(root):
    image, _ = case_arrays(1, True)
    save(_nifti(root), np.stack([image, image], axis=-1))


def _shape_mismatch(root):
    save(_nifti(root, kind="label"), np.zeros((16, 16, 7), dtype=np.uint8))


def _affine_mismatch(root):
    _, label = case_arrays(1, True)
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    save(_nifti(root, kind="label"), label, shifted)


def _bad_label_values(root):
    _, label = case_arrays(1, True)
    label[0, 0, 0], label[1, 1, 1] = 2, 7
    save(_nifti(root, kind="label"), label)


def _nan_image(root):
    image, _ = case_arrays(1, True)
    image[3, 3, 3] = np.nan
    save(_nifti(root), image)


def _sham_with_lesion(root):
    _, label = case_arrays(1, True)
    save(_nifti(root, "case_000", kind="label"), label)


def _mcao_empty(root):
    save(_nifti(root, kind="label"), np.zeros(SHAPE, dtype=np.uint8))


def _unlabelled_image(root):
    _nifti(root, kind="label").unlink()
    write_meta(root, numTraining=4)


def _orphan_label(root):
    _nifti(root).unlink()


def _duplicate_csv_row(root):
    csv = root / "cases.csv"
    csv.write_text(csv.read_text() + "case_002,MCAo,14.4,0.2x0.2x0.5\n")


def _escaping_csv_id(root):
    csv = root / "cases.csv"
    csv.write_text(csv.read_text() + "../../etc/passwd,sham,0,0.2x0.2x0.5\n")


def _bad_group(root):
    csv = root / "cases.csv"
    csv.write_text(csv.read_text().replace("case_001,MCAo", "case_001,stroke"))


def _csv_row_without_files(root):
    csv = root / "cases.csv"
    csv.write_text(csv.read_text() + "case_009,sham,0,0.2x0.2x0.5\n")


def _csv_missing_row(root):
    csv = root / "cases.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")


def _escaping_symlink(root):
    outside = save(root.parent / "elsewhere" / "x.nii.gz", case_arrays(1, True)[0])
    _nifti(root).unlink()
    _nifti(root).symlink_to(outside)


def _unsafe_file_name(root):
    _nifti(root).rename(root / "imagesTr" / "case 001_0000.nii.gz")


def _constant_image(root):
    save(_nifti(root), np.full(SHAPE, 3.0, dtype=np.float32))


# (how to break the dataset, file the problem line must name, words it must contain)
BREAKAGES = [
    (lambda r: (r / "dataset.json").unlink(), "dataset.json", "file not found"),
    (lambda r: write_meta(r, numTraining=None), "dataset.json", "missing key 'numTraining'"),
    (lambda r: write_meta(r, file_ending=None), "dataset.json", "missing key 'file_ending'"),
    (lambda r: write_meta(r, labels={"background": 0, "lesion": 2}), "dataset.json", "background 0 and one foreground 1"),
    (lambda r: write_meta(r, labels={"background": 0, "core": 1, "penumbra": 2}), "dataset.json", "one foreground 1"),
    (lambda r: write_meta(r, numTraining=5), "dataset.json", "numTraining is 5 but 4 cases"),
    (_unlabelled_image, "case_001_0000.nii.gz", "image has no label"),
    (_orphan_label, "case_001.nii.gz", "label has no image"),
    (_duplicate_csv_row, "cases.csv line 6", "duplicate case id 'case_002'"),
    (_escaping_csv_id, "cases.csv line 6", "not a safe file name"),
    (_escaping_symlink, "case_001_0000.nii.gz", "resolves outside the dataset"),
    (_unsafe_file_name, "case 001_0000.nii.gz", "not a safe file name"),
    (_bad_group, "cases.csv line 3", "group 'stroke' of case_001 is not one of"),
    (_csv_row_without_files, "cases.csv", "lists case_009 but the case has no files"),
    (_csv_missing_row, "cases.csv", "has no row for case_003"),
    (_corrupt, "case_001_0000.nii.gz", "cannot read NIfTI"),
    (_truncate, "case_001_0000.nii.gz", "cannot read NIfTI"),
    (_four_d, "case_001_0000.nii.gz", "expected a 3D volume"),
    (_shape_mismatch, "case_001.nii.gz", "shape (16, 16, 7) differs"),
    (_affine_mismatch, "case_001.nii.gz", "affine differs"),
    (_bad_label_values, "case_001.nii.gz", "label values 2, 7 are outside {0, 1}"),
    (_nan_image, "case_001_0000.nii.gz", "NaN/Inf"),
    (_sham_with_lesion, "case_000.nii.gz", "is sham but the mask has 60 lesion voxels"),
    (_mcao_empty, "case_001.nii.gz", "is MCAo but the mask is empty"),
    (_constant_image, "case_001_0000.nii.gz", "image is constant"),
]


@pytest.mark.parametrize("breakage, file, words", BREAKAGES, ids=[b[2] for b in BREAKAGES])
def test_each_problem_is_one_line_naming_the_file(tmp_path, breakage, file, words):
    root = make_dataset(tmp_path / "ds")
    breakage(root)
    problems = find_problems(root)
    matching = [p for p in problems if words in p]
    assert matching, problems
    line = matching[0]
    assert "\n" not in line and "; " in line  # what is wrong; how to fix
    assert line.split(": ")[0].endswith(file)
    with pytest.raises(DataError) as err:
        validate_dataset(root)
    assert words in str(err.value)


def test_empty_dataset(tmp_path):
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    write_meta(root, numTraining=0)
    problems = find_problems(root)
    assert len(problems) == 1 and "no cases found" in problems[0]
    with pytest.raises(DataError, match="no cases found"):
        read_cases(root)


def test_missing_root_and_folders(tmp_path):
    assert "dataset folder not found" in find_problems(tmp_path / "nope")[0]
    root = make_dataset(tmp_path / "ds")
    for path in (root / "labelsTr").iterdir():
        path.unlink()
    (root / "labelsTr").rmdir()
    assert any("labelsTr: folder not found" in p for p in find_problems(root))


def test_all_problems_are_listed_at_once(tmp_path):
    root = make_dataset(tmp_path / "ds")
    _bad_label_values(root)
    _nan_image(root)
    write_meta(root, numTraining=9)
    with pytest.raises(DataError) as err:
        validate_dataset(root)
    message = str(err.value)
    assert message.splitlines()[0].startswith(f"{root}: dataset is invalid (3 problems)")
    assert all(w in message for w in ("numTraining is 9", "NaN/Inf", "label values 2, 7"))


# --- kind nifti: a lab's nnU-Net raw folder, validated and copied into data/raw/NAME ---------------------------


def test_import_nifti_copies_a_valid_dataset_and_only_what_the_study_reads(tmp_path):
    from lesionseg.data.dataset import import_nifti

    lab = make_dataset(tmp_path / "lab" / "Dataset001_mice")
    (lab / "imagesTs").mkdir()
    (lab / "notes.txt").write_text("scanner log")
    out = import_nifti(lab, tmp_path / "project" / "data" / "raw" / "old-mice")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        ["dataset.json", "cases.csv"] + [f"imagesTr/case_00{i}_0000.nii.gz" for i in range(4)]
        + [f"labelsTr/case_00{i}.nii.gz" for i in range(4)])
    assert [c.lesion_volume_mm3 for c in validate_dataset(out)] == \
        [c.lesion_volume_mm3 for c in validate_dataset(lab)]


def test_import_nifti_refuses_a_bad_dataset_and_writes_nothing(tmp_path):
    from lesionseg.data.dataset import import_nifti

    lab = make_dataset(tmp_path / "lab")
    (lab / "labelsTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DataError, match="case_001.nii.gz: cannot read NIfTI"):
        import_nifti(lab, tmp_path / "raw" / "old-mice")
    assert not (tmp_path / "raw" / "old-mice").exists() and not list((tmp_path / "raw").glob(".old-mice*"))
    with pytest.raises(DataError, match="already the raw folder"):
        import_nifti(lab, lab)


def test_import_nifti_stage_reads_the_declared_path(tmp_path, monkeypatch):
    import importlib
    import sys

    from conftest import ROOT
    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout

    lab = make_dataset(tmp_path / "lab" / "Dataset001_mice")
    params = {"datasets": {"nifti": {"old-mice": {"path": str(lab)}}}}
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    module = importlib.import_module("import_nifti")
    monkeypatch.setattr(module, "LAYOUT", Layout.at(tmp_path / "project"))
    monkeypatch.setattr(module, "config", lambda: ProjectConfig(params))
    monkeypatch.setattr(sys, "argv", ["import_nifti.py", "--dataset", "old-mice"])
    module.main()
    assert len(validate_dataset(tmp_path / "project" / "data" / "raw" / "old-mice")) == 4
