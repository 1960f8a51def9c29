"""prepare: orientation, resampling, normalisation, cropping, the way back, and the prepared dataset on disk."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.data.io import Volume, read_volume, write_volume
from lesionseg.data.preprocess import (
    load_manifest,
    load_prepared_case,
    prepare_dataset,
    prepare_volume,
    restore_to_input,
)
from lesionseg.errors import ConfigError, DataError

DIRECTIONS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
MOUSE = dict(shape=(128, 128, 32), voxel=(0.2, 0.2, 0.5), scale=1.0)  # coronal slices, 25.6 mm in-plane
RAT = dict(shape=(128, 128, 18), voxel=(0.25, 0.25, 1.0), scale=1.5)  # 32 mm in-plane, 18 thick slices
MOUSE_PREP = dict(target_spacing=(0.3, 0.5, 0.3), shape=(48, 32, 32))
RAT_PREP = dict(target_spacing=(0.4, 1.0, 0.4), shape=(48, 18, 32))


def make_affine(shape, voxel, axes="RIP"):
    """Voxel axis i points to world direction axes[i]; the field of view is centred on the world origin."""
    affine = np.eye(4)
    affine[:3, :3] = np.column_stack([np.multiply(DIRECTIONS[a], v) for a, v in zip(axes, voxel)])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


def world(shape, affine):
    idx = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)


def inside(xyz, centre, radii, scale):
    return sum(((xyz[i] - centre[i] * scale) / (radii[i] * scale)) ** 2 for i in range(3)) <= 1


def head_phantom(shape, voxel, scale=1.0, axes="RIP", lesion=True, seed=0):
    """A head (brain in its upper part, jaw and muscle below) with a lesion in the right hemisphere."""
    affine = make_affine(shape, voxel, axes)
    xyz = world(shape, affine)
    head = inside(xyz, (0, 0, -2), (8, 9, 7), scale)
    brain = inside(xyz, (0, 0, 1.5), (5, 7, 3.2), scale)
    lesion_mask = inside(xyz, (2.5, 0, 1.5), (1.8, 2.5, 1.8), scale) & lesion
    intensity = 60.0 * head + 40.0 * brain + 50.0 * lesion_mask
    noise = np.abs(np.random.default_rng(seed).normal(0, 3, shape))
    image = Volume((intensity + noise).astype(np.float32), affine, nib.Nifti1Header())
    label = Volume(lesion_mask.astype(np.float32), affine, nib.Nifti1Header())
    return image, label, brain


def centroid_mm(mask, affine):
    return world(mask.shape, affine)[:, mask > 0].mean(axis=1)


def voxel_mm3(affine):
    return abs(np.linalg.det(affine[:3, :3]))


def inside_grid(points, affine, shape):
    """Whether world ``points`` (3, N) fall inside the voxel grid ``shape`` of ``affine``."""
    ijk = np.linalg.inv(affine)[:3] @ np.vstack([points, np.ones(points.shape[1])])
    return ((ijk > -0.5) & (ijk < np.array(shape)[:, None] - 0.5)).all(axis=0)


@pytest.mark.parametrize("axes", ["RIP", "LPS", "RAS", "ASL"])
def test_prepared_volume_is_ras_on_the_target_grid(axes):
    image, label, _ = head_phantom(**MOUSE, axes=axes)
    out, out_label, affine = prepare_volume(image, label, **MOUSE_PREP)
    assert out.shape == out_label.shape == (48, 32, 32)
    assert out.dtype == np.float32 and out_label.dtype == np.uint8 and affine.dtype == np.float64
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose(affine[:3, :3], np.diag(MOUSE_PREP["target_spacing"]))
    # the lesion sits at the same place in the world and keeps its volume
    assert np.linalg.norm(centroid_mm(out_label, affine) - centroid_mm(label.data, image.affine)) < 0.15
    raw_volume = label.data.sum() * voxel_mm3(image.affine)
    assert out_label.sum() * voxel_mm3(affine) == pytest.approx(raw_volume, rel=0.03)


def test_center_crop_keeps_the_field_of_view_centre():
    image, label, _ = head_phantom(**MOUSE, axes="LPS")
    _, _, affine = prepare_volume(image, label, **MOUSE_PREP, crop="center")
    raw_centre = image.affine @ np.append((np.array(image.data.shape) - 1) / 2, 1)
    prepared_centre = affine @ np.append((np.array(MOUSE_PREP["shape"]) - 1) / 2, 1)
    assert np.allclose(prepared_centre[:3], raw_centre[:3], atol=max(MOUSE_PREP["target_spacing"]))


@pytest.mark.parametrize("domain, prep", [(MOUSE, MOUSE_PREP), (RAT, RAT_PREP)], ids=["mouse", "rat"])
def test_default_crop_keeps_the_whole_brain(domain, prep):
    image, label, brain = head_phantom(**domain)
    out, out_label, affine = prepare_volume(image, label, **prep)
    brain_points = world(brain.shape, image.affine)[:, brain]
    assert inside_grid(brain_points, affine, prep["shape"]).all()
    assert out_label.sum() * voxel_mm3(affine) == pytest.approx(label.data.sum() * voxel_mm3(image.affine), rel=0.03)


def test_centring_on_a_tall_head_would_cut_the_brain():
    """Why "head" is the default: the head is taller than the window and the brain is in its upper part."""
    image, _, brain = head_phantom(**MOUSE)
    _, _, affine = prepare_volume(image, None, **MOUSE_PREP, crop="foreground")
    assert not inside_grid(world(brain.shape, image.affine)[:, brain], affine, MOUSE_PREP["shape"]).all()


def test_normalisation_is_robust_and_background_low():
    whole_fov = dict(target_spacing=(0.3, 0.5, 0.3), shape=(86, 32, 86), crop="center")  # nothing cropped
    image, label, _ = head_phantom(**MOUSE)
    clean, _, affine = prepare_volume(image, label, **whole_fov)
    image.data[64, 40, 16] = 1e6  # one hot voxel (in the head) must not squash the contrast
    out, _, _ = prepare_volume(image, label, **whole_fov)
    assert (np.abs(out - clean) > 0.02).sum() <= 8 and out.max() <= clean.max() + 0.02
    head = inside(world(out.shape, affine), (0, 0, -2), (8, 9, 7), 1.0)
    assert abs(out[head].mean()) < 0.1 and 0.9 < out[head].std() < 1.1
    assert np.median(out[~head]) < out[head].min() + 0.1 and np.median(out[~head]) < -1


def test_inference_without_label_matches_training_image():
    image, label, _ = head_phantom(**MOUSE, axes="ASL")
    with_label, _, affine = prepare_volume(image, label, **MOUSE_PREP)
    alone, no_label, affine_alone = prepare_volume(image, None, **MOUSE_PREP)
    assert no_label is None
    assert np.array_equal(with_label, alone) and np.array_equal(affine, affine_alone)


@pytest.mark.parametrize("axes", ["RIP", "LPS"])
def test_restore_to_input_round_trip(axes):
    image, label, _ = head_phantom(**MOUSE, axes=axes)
    _, out_label, affine = prepare_volume(image, label, **MOUSE_PREP)
    restored = restore_to_input(out_label, affine, image)
    assert restored.shape == image.data.shape and restored.dtype == np.uint8
    truth = label.data > 0
    dice = 2 * np.logical_and(restored, truth).sum() / (restored.sum() + truth.sum())
    assert dice > 0.9


@pytest.mark.parametrize("bad, argument", [
    (dict(target_spacing=(0.3, 0.3)), "target_spacing"),
    (dict(target_spacing=(0.3, 0.0, 0.3)), "target_spacing"),
    (dict(shape=(48, 32, 31.5)), "shape"),
    (dict(clip_percentiles=(99.0, 1.0)), "clip_percentiles"),
    (dict(crop="brain"), "crop"),
])
def test_bad_settings_name_the_argument(bad, argument):
    image, label, _ = head_phantom(**MOUSE)
    with pytest.raises(ConfigError, match=argument):
        prepare_volume(image, label, **{**MOUSE_PREP, **bad})


# --- prepare_dataset ----------------------------------------------------------------------------------------

SMALL = dict(shape=(64, 64, 16), voxel=(0.4, 0.4, 1.0), scale=1.0)
SMALL_PREP = dict(target_spacing=(0.5, 1.0, 0.5), shape=(32, 16, 24))


def write_raw(root: Path, n: int = 4) -> Path:
    """Small raw dataset; case_000 is a sham, the others have lesions."""
    rows = ["case_id,group,lesion_volume_mm3,spacing"]
    for i in range(n):
        image, label, _ = head_phantom(**SMALL, lesion=i > 0, seed=i)
        case_id = f"case_{i:03d}"
        write_volume(root / "imagesTr" / f"{case_id}_0000.nii.gz", np.round(image.data).astype(np.int16), image.affine)
        write_volume(root / "labelsTr" / f"{case_id}.nii.gz", label.data.astype(np.uint8), label.affine)
        rows.append(f"{case_id},{'MCAo' if i else 'sham'},0,0.4x0.4x1.0")
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2w"}, "labels": {"background": 0, "lesion": 1}, "numTraining": n,
        "file_ending": ".nii.gz"}))
    return root


def test_prepare_dataset_writes_cases_and_manifest(tmp_path):
    raw = write_raw(tmp_path / "raw")
    manifest_path = prepare_dataset(raw, tmp_path / "prepared", **SMALL_PREP)
    assert manifest_path == tmp_path / "prepared" / "manifest.json"
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [
        "case_000.npz", "case_001.npz", "case_002.npz", "case_003.npz", "manifest.json"]
    manifest = load_manifest(tmp_path / "prepared")
    assert manifest["source"] == "raw"  # the folder's name unless the caller names it (relative to its project)
    assert manifest["target_spacing"] == [0.5, 1.0, 0.5] and manifest["shape"] == [32, 16, 24]
    assert [c["group"] for c in manifest["cases"]] == ["sham", "MCAo", "MCAo", "MCAo"]
    first = manifest["cases"][1]
    assert set(first) >= {"case_id", "group", "lesion_volume_mm3", "file", "raw_image", "raw_label"}
    assert first["raw_image"] == "imagesTr/case_001_0000.nii.gz"  # relative to the raw folder: no checkout path
    for entry in manifest["cases"]:
        case = load_prepared_case(tmp_path / "prepared", entry["case_id"])
        assert case.image.shape == (32, 16, 24) and case.image.dtype == np.float32
        assert case.label.dtype == np.uint8 and case.affine.shape == (4, 4)
        raw_label = read_volume(raw / entry["raw_label"])
        assert entry["lesion_volume_mm3"] == pytest.approx(raw_label.data.sum() * voxel_mm3(raw_label.affine))
        prepared_mm3 = case.label.sum() * voxel_mm3(case.affine)
        assert prepared_mm3 == pytest.approx(entry["lesion_volume_mm3"], rel=0.1, abs=1.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def _corrupt(raw):
    (raw / "imagesTr" / "case_002_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")


def _bad_label(raw):
    label = read_volume(raw / "labelsTr" / "case_002.nii.gz")
    write_volume(raw / "labelsTr" / "case_002.nii.gz", (label.data * 3).astype(np.uint8), label.affine)


def _wrong_count(raw):
    meta = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**meta, "numTraining": 7}))


def _sham_with_lesion(raw):
    (raw / "cases.csv").write_text((raw / "cases.csv").read_text().replace("case_003,MCAo", "case_003,sham"))


@pytest.mark.parametrize("breakage, file", [
    (_corrupt, "case_002_0000.nii.gz"), (_bad_label, "case_002.nii.gz"), (_wrong_count, "dataset.json"),
    (_sham_with_lesion, "case_003.nii.gz")])
def test_invalid_dataset_writes_nothing(tmp_path, breakage, file):
    raw = write_raw(tmp_path / "raw")
    breakage(raw)
    with pytest.raises(DataError, match=file):
        prepare_dataset(raw, tmp_path / "prepared", **SMALL_PREP)
    assert not (tmp_path / "prepared").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_prepare_keeps_the_previous_output(tmp_path):
    raw = write_raw(tmp_path / "raw", n=2)
    prepare_dataset(raw, tmp_path / "prepared", **SMALL_PREP)
    before = {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    _corrupt(write_raw(tmp_path / "raw", n=3))
    with pytest.raises(DataError):
        prepare_dataset(raw, tmp_path / "prepared", **SMALL_PREP)
    assert {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()} == before


def test_loading_missing_or_unsafe_cases_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="manifest.json: file not found"):
        load_manifest(tmp_path)
    with pytest.raises(DataError, match="case_404.npz: prepared case not found"):
        load_prepared_case(tmp_path, "case_404")
    with pytest.raises(DataError, match="not a safe file name"):
        load_prepared_case(tmp_path, "../secrets")


def test_label_on_another_grid_is_rejected():
    image, label, _ = head_phantom(**SMALL)
    affine = label.affine.copy()
    affine[0, 3] += 1.0
    shifted = Volume(label.data, affine, label.header)
    with pytest.raises(ValueError, match="label: its grid"):
        prepare_volume(image, shifted, **SMALL_PREP)
