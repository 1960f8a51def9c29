"""ParaVision studies in, nnU-Net raw layout out: `synth --format bruker` then `import-bruker` gives back exactly
what `synth` writes as NIfTI; every failure is one line and leaves nothing behind; 3D Slicer masks land on the
scan's grid; the demo's synthesize -> import path gives the raw data `synth` writes directly."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT
from lesionseg.cli import main
from lesionseg.data.dataset import AFFINE_TOLERANCE_MM, validate_dataset
from lesionseg.data.io import write_volume
from lesionseg.data.paravision import Acquisition, add_scan, write_study
from lesionseg.data.synthetic import domain_spec, synthesize_case, synthesize_dataset

TINY = ["--matrix", "16", "--n-slices", "4"]


def _case(lesion: bool = True, seed: int = 0):
    return synthesize_case(domain_spec("mouse", matrix=16, n_slices=4), "mouse_000", np.random.default_rng(seed), lesion)


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.affine


def _assert_same_scan(imported: Path, expected_data: np.ndarray, expected_affine: np.ndarray) -> None:
    data, affine = _nifti(imported)
    assert data.dtype == expected_data.dtype and data.shape == expected_data.shape
    assert np.array_equal(data, expected_data)
    assert np.abs(affine - expected_affine).max() <= AFFINE_TOLERANCE_MM


def _visu(study: Path, key: str):
    from brkraw.core.parameters import Parameters

    return Parameters(study / "1" / "pdata" / "1" / "visu_pars").get(key)


def _edit(path: Path, **values: str | None) -> None:
    """Replace (or with None, delete) parameters of a JCAMP-DX file, as a damaged export would have them."""
    from brkraw.core.parameters import Parameters

    params = Parameters(path)
    params.replace_values(values)
    params.save_to(path)


def _groups(root: Path) -> dict[str, str]:
    with (root / "cases.csv").open() as handle:
        return {row["case_id"]: row["group"] for row in csv.DictReader(handle)}


# --- round trips ------------------------------------------------------------------------------------------


def test_synth_bruker_then_import_gives_synths_nifti(tmp_path):
    """Coronal RARE as the seed study acquired, int16 with a slope other than 1, one study as a PV360 zip."""
    args = ["synth", "--domain", "mouse", "--cases", "3", "--seed", "3", *TINY]
    assert main([*args, "--out", str(tmp_path / "nifti")]) == 0
    assert main([*args, "--format", "bruker", "--out", str(tmp_path / "bruker")]) == 0
    studies = sorted(p for p in (tmp_path / "bruker").iterdir() if p.name != "labels")
    assert len(studies) == 3 and (tmp_path / "bruker" / "labels" / "cases.csv").is_file()
    assert all(float(np.ravel(_visu(s, "VisuCoreDataSlope"))[0]) != 1.0 for s in studies)
    zipped = shutil.make_archive(str(tmp_path / studies[0].name), "zip", tmp_path / "bruker", studies[0].name)
    sources = [zipped, *map(str, studies[1:])]

    assert main(["import-bruker", *sources, "--labels", str(tmp_path / "bruker" / "labels"),
                 "--out", str(tmp_path / "raw")]) == 0

    expected, got = tmp_path / "nifti", tmp_path / "raw"
    for record in validate_dataset(expected):
        _assert_same_scan(got / "imagesTr" / record.image.name, *_nifti(record.image))
        _assert_same_scan(got / "labelsTr" / record.label.name, *_nifti(record.label))
    assert _groups(got) == _groups(expected) and len(validate_dataset(got)) == 3
    manifest = (got / "manifests" / "mouse_001.json").read_text()
    for field in ('"scan_id": 1', '"protocol": "T2_TurboRARE"', '"subject_type": "Quadruped"',
                  '"brkraw_version": "0.5.7"', '"1/pdata/1/2dseq": "'):
        assert field in manifest
    # the headers carry the protocol each mouse was generated with: its cohort's field and effective TE
    meta = json.loads((expected / "dataset.json").read_text())["generator"]
    for case_id in ("mouse_000", "mouse_001", "mouse_002"):
        cohort = meta["cohorts"][meta["case_cohort"][case_id]]
        scanned = json.loads((got / "manifests" / f"{case_id}.json").read_text())
        assert (scanned["echo_time_ms"], scanned["field_strength_t"]) == \
            pytest.approx((cohort["te_ms"], cohort["field_t"]))


# (orientation, permutation of the coronal array's axes, byte order, slice gap, where the slice axis comes from):
# axial packs' slices run S-I, sagittal ones' L-R. brkraw reverses coronal packs, counts a slice gap twice and
# assumes the slices follow the orientation's normal; VisuCorePosition (one position per frame) says otherwise.
PACKS = [("coronal", (0, 1, 2), "big", 0.0, "VisuCorePosition"),
         ("coronal", (0, 1, 2), "little", 0.2, "VisuCorePosition"),
         ("axial", (0, 2, 1), "little", 0.0, "VisuCorePosition"),  # slices against the normal (left-handed axes)
         ("sagittal", (1, 2, 0), "big", 0.0, "brkraw")]


@pytest.mark.parametrize("orient,axes,byte_order,gap,slice_axis", PACKS,
                         ids=[f"{p[0]}-{p[2]}-gap{p[3]}" for p in PACKS])
def test_round_trip_per_slice_orientation(tmp_path, orient, axes, byte_order, gap, slice_axis):
    from brkraw.core.parameters import Parameters
    from lesionseg.data.bruker import import_bruker

    case = _case()
    image, affine = np.transpose(case.image, axes), case.affine[:, [*axes, 3]]
    study = write_study(tmp_path / "studies" / "m_1_1", image, affine, subject_id="m", byte_order=byte_order,
                        acquisition=Acquisition(slice_gap_mm=gap))
    assert Parameters(study / "1" / "method").get("PVM_SPackArrSliceOrient") == orient
    assert _visu(study, "VisuCoreByteOrder") == f"{byte_order}Endian"
    assert float(np.ravel(_visu(study, "VisuCoreDataSlope"))[0]) != 1.0

    import_bruker([tmp_path / "studies"], tmp_path / "raw")
    _assert_same_scan(tmp_path / "raw" / "imagesTr" / "m_0000.nii.gz", image, affine)
    assert f'"slice_axis_from": "{slice_axis}"' in (tmp_path / "raw" / "manifests" / "m.json").read_text()


def test_each_frame_keeps_its_own_slope(tmp_path):
    """brkraw applies the first frame's VisuCoreDataSlope to every frame; a scanner may write one per frame."""
    from lesionseg.data.bruker import import_bruker

    case = _case()
    study = write_study(tmp_path / "s" / "m_1_1", case.image, case.affine, subject_id="m", data_slope=0.5)
    _edit(study / "1" / "pdata" / "1" / "visu_pars", VisuCoreDataSlope="( 4 )\n0.5 0.5 1.0 1.0")
    import_bruker([study], tmp_path / "raw")
    expected = case.image * np.array([1, 1, 2, 2], dtype=np.int16)
    _assert_same_scan(tmp_path / "raw" / "imagesTr" / "m_0000.nii.gz", expected, case.affine)


def test_protocol_and_scan_pick_the_t2w_scan(tmp_path):
    from lesionseg.data.bruker import import_bruker

    case = _case()
    study = write_study(tmp_path / "s" / "m_1_1", case.image, case.affine, subject_id="m", scan_id=3)
    localizer = case.image[:, :, 1:2] * 0 + 7
    add_scan(study, 1, localizer, case.affine, subject_id="m", acquisition=Acquisition(protocol="1_Localizer"))
    import_bruker([study], tmp_path / "by-protocol")
    _assert_same_scan(tmp_path / "by-protocol" / "imagesTr" / "m_0000.nii.gz", case.image, case.affine)
    import_bruker([study], tmp_path / "by-id", scan_id=1)
    assert np.all(_nifti(tmp_path / "by-id" / "imagesTr" / "m_0000.nii.gz")[0] == 7)


# --- failures: one line, exit code != 0, nothing in --out ---------------------------------------------------


def _study(tmp_path: Path, **kwargs) -> Path:
    case = _case()
    image = kwargs.pop("image", case.image)
    return write_study(tmp_path / "in" / "m_1_1", image, case.affine, subject_id="m", **kwargs)


def _fails(capsys, tmp_path: Path, *args: str, says: str) -> str:
    out = tmp_path / "out"
    code = main(["import-bruker", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and says in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return err


def test_no_study_found(tmp_path, capsys):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    _fails(capsys, tmp_path, str(tmp_path / "empty"), says="no ParaVision study found")


def test_2dseq_of_the_wrong_size(tmp_path, capsys):
    study = _study(tmp_path)
    seq = study / "1" / "pdata" / "1" / "2dseq"
    seq.write_bytes(seq.read_bytes()[:-100])
    _fails(capsys, tmp_path, str(study), says=f"{seq}: 2dseq size mismatch")


def test_brkraw_returning_no_image(tmp_path, capsys):
    study = _study(tmp_path)
    _edit(study / "1" / "pdata" / "1" / "visu_pars", VisuCorePosition=None)
    _fails(capsys, tmp_path, str(study), says="brkraw could not convert the scan")


def test_several_slice_packs(tmp_path, capsys):
    study = _study(tmp_path)
    _edit(study / "1" / "method", PVM_NSPacks="2", PVM_SPackArrNSlices="( 2 )\n2 2")
    _fails(capsys, tmp_path, str(study), says="2 slice packs")


def test_4d_scan(tmp_path, capsys):
    case = _case()
    study = _study(tmp_path, image=np.stack([case.image, case.image], axis=-1))
    _fails(capsys, tmp_path, str(study), says="a 4D scan")


@pytest.mark.parametrize("subject,says", [
    ({"VisuSubjectType": None}, "brkraw would take the animal for a human"),
    ({"VisuSubjectPosition": "Head_Supine"}, "Quadruped Head_Supine"),
    ({"VisuSubjectType": "Biped"}, "Biped Head_Prone"),
])
def test_subject_orientation_brkraw_cannot_vouch_for(tmp_path, capsys, subject, says):
    study = _study(tmp_path)
    _edit(study / "1" / "pdata" / "1" / "visu_pars", **subject)
    err = _fails(capsys, tmp_path, str(study), says=says)
    assert "re-run with --subject-type Quadruped --subject-pose Head_Prone" in err


def test_subject_override_is_the_way_out(tmp_path, capsys):
    case = _case()
    study = _study(tmp_path)
    _edit(study / "1" / "pdata" / "1" / "visu_pars", VisuSubjectType=None)
    code = main(["import-bruker", str(study), "--out", str(tmp_path / "out"), "--subject-type", "Quadruped",
                 "--subject-pose", "Head_Prone"])
    assert code == 0, capsys.readouterr().err
    # PV 5.1 wrote no subject type and geometry in a human's frame; brkraw unwraps it as one, then as a quadruped
    data, affine = _nifti(tmp_path / "out" / "imagesTr" / "m_0000.nii.gz")
    assert np.array_equal(data, case.image) and affine.shape == (4, 4)


def test_label_on_another_grid(tmp_path, capsys):
    case = _case()
    study = _study(tmp_path)
    shifted = case.affine.copy()
    shifted[:3, 3] += 0.3 * case.affine[:3, 0]  # a third of a voxel: not the scan's grid
    write_volume(tmp_path / "labels" / "m.nii.gz", case.label, shifted)
    _fails(capsys, tmp_path, str(study), "--labels", str(tmp_path / "labels"),
           says=f"{tmp_path / 'labels' / 'm.nii.gz'}: affine differs from the image's")


def test_failure_from_the_console_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "lesionseg.cli", "import-bruker", str(tmp_path / "empty"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- 3D Slicer labels ---------------------------------------------------------------------------------------


def test_slicer_seg_nrrd_label_lands_on_the_image_grid(tmp_path):
    """A .seg.nrrd as 3D Slicer saves it: LPS space, cropped to the segment's extent, segment metadata."""
    import nrrd
    from lesionseg.data.bruker import import_bruker

    case = _case()
    study = _study(tmp_path)
    lo = np.argwhere(case.label).min(axis=0)
    hi = np.argwhere(case.label).max(axis=0) + 1
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ case.affine
    header = {
        "type": "unsigned char", "dimension": 3, "space": "left-posterior-superior", "encoding": "gzip",
        "kinds": ["domain"] * 3, "space directions": lps[:3, :3].T, "space origin": (lps @ [*lo, 1])[:3],
        "Segment0_ID": "Segment_1", "Segment0_Name": "lesion", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
        "Segmentation_ReferenceImageExtentOffset": " ".join(map(str, lo)),
    }
    (tmp_path / "labels").mkdir()
    nrrd.write(str(tmp_path / "labels" / "m.seg.nrrd"), case.label[tuple(slice(a, b) for a, b in zip(lo, hi))],
               header)

    import_bruker([study], tmp_path / "raw", labels_dir=tmp_path / "labels")
    _assert_same_scan(tmp_path / "raw" / "labelsTr" / "m.nii.gz", case.label, case.affine)
    assert validate_dataset(tmp_path / "raw")[0].group == "MCAo"


# --- the demo's data path -----------------------------------------------------------------------------------


def _run_stage(name: str, project: Path, params: dict, monkeypatch, *args: str) -> None:
    import importlib
    import sys

    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout

    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    module = importlib.import_module(name)
    monkeypatch.setattr(module, "LAYOUT", Layout.at(project))
    monkeypatch.setattr(module, "config", lambda: ProjectConfig(params))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    module.main()


SYNTHETIC = {"rat": ("rat", 5, None), "mouse": ("mouse", 5, None), "mouse-acceptance": ("mouse", 6, "mouseacc")}


def test_demo_synthesize_then_import_gives_synths_raw_data(tmp_path, monkeypatch):
    size = {"cases": 2, "matrix": 24, "n_slices": 6, "sham_fraction": 0.5}
    params = {"datasets": {"synthetic": {
        name: {"domain": domain, "seed": seed, **size, **({"case_prefix": prefix} if prefix else {})}
        for name, (domain, seed, prefix) in SYNTHETIC.items()}}}
    project = tmp_path / "project"
    for name in SYNTHETIC:
        _run_stage("synthesize", project, params, monkeypatch, "--dataset", name)
    assert not (project / "data" / "raw").exists()  # the stage writes what the scanner writes, nothing more
    for name in SYNTHETIC:
        _run_stage("import_bruker", project, params, monkeypatch, "--dataset", name, "--synthetic")

    for name, (domain, seed, prefix) in SYNTHETIC.items():
        expected = synthesize_dataset(domain, 2, seed, tmp_path / "direct" / name, sham_fraction=0.5, matrix=24,
                                      n_slices=6, case_prefix=prefix)
        got = project / "data" / "raw" / name
        for record in validate_dataset(expected):
            _assert_same_scan(got / "imagesTr" / record.image.name, *_nifti(record.image))
            _assert_same_scan(got / "labelsTr" / record.label.name, *_nifti(record.label))
        assert _groups(got) == _groups(expected)


def test_a_labs_bruker_dataset_imports_from_params(tmp_path, monkeypatch):
    """Kind bruker: the lab's studies (here a folder holding one study folder and one PV360 zip) and masks."""
    lab = tmp_path / "lab"
    assert main(["synth", "--domain", "mouse", "--cases", "2", "--seed", "9", *TINY, "--format", "bruker",
                 "--out", str(lab / "studies")]) == 0
    shutil.move(str(lab / "studies" / "labels"), str(lab / "masks"))
    first = sorted((lab / "studies").iterdir())[0]
    shutil.make_archive(str(first), "zip", lab / "studies", first.name)
    shutil.rmtree(first)
    params = {"datasets": {"bruker": {"lab-mice": {"studies": str(lab / "studies"), "masks": str(lab / "masks"),
                                                   "protocol": "TurboRARE"}}}}
    project = tmp_path / "project"
    _run_stage("import_bruker", project, params, monkeypatch, "--dataset", "lab-mice")
    assert len(validate_dataset(project / "data" / "raw" / "lab-mice")) == 2
    with pytest.raises(Exception, match="datasets.bruker.mice is not declared"):
        _run_stage("import_bruker", project, params, monkeypatch, "--dataset", "mice")


# --- what the scanner recorded ------------------------------------------------------------------------------


def test_manifest_has_the_effective_echo_time_not_the_echo_spacing(tmp_path):
    """PV360 TurboRARE: PVM_EchoTime is the echo spacing (6 ms); EffectiveTE / ACQ_echo_time are the TE (36 ms)."""
    study = _study(tmp_path, acquisition=Acquisition(echo_time_ms=36.0, echo_spacing_ms=6.0))
    assert main(["import-bruker", str(study), "--out", str(tmp_path / "raw")]) == 0
    manifest = json.loads((tmp_path / "raw" / "manifests" / "m.json").read_text())
    assert (manifest["echo_time_ms"], manifest["echo_time_from"], manifest["pvm_echo_time_ms"]) == \
        (36.0, "method:EffectiveTE", 6.0)
    # an older export without EffectiveTE: ACQ_echo_time; a single-echo method with PVM_EchoTime only: that
    _edit(study / "1" / "method", EffectiveTE=None)
    assert main(["import-bruker", str(study), "--out", str(tmp_path / "raw2")]) == 0
    manifest = json.loads((tmp_path / "raw2" / "manifests" / "m.json").read_text())
    assert (manifest["echo_time_ms"], manifest["echo_time_from"]) == (36.0, "acqp:ACQ_echo_time")
    _edit(study / "1" / "acqp", ACQ_echo_time=None)
    _edit(study / "1" / "pdata" / "1" / "visu_pars", VisuAcqEchoTime=None)
    assert main(["import-bruker", str(study), "--out", str(tmp_path / "raw3")]) == 0
    manifest = json.loads((tmp_path / "raw3" / "manifests" / "m.json").read_text())
    assert (manifest["echo_time_ms"], manifest["echo_time_from"]) == (6.0, "method:PVM_EchoTime")


def test_brkraw_reads_an_empty_config_home_of_its_own(tmp_path, monkeypatch):
    """Every import (CLI, stage, library) isolates brkraw's config home; the user's setting is back afterwards."""
    import os

    import lesionseg.data.bruker as bruker

    user_home = tmp_path / "users-brkraw"
    monkeypatch.setenv("BRKRAW_CONFIG_HOME", str(user_home))
    seen, load = [], bruker._load
    monkeypatch.setattr(bruker, "_load", lambda study: seen.append(os.environ["BRKRAW_CONFIG_HOME"]) or load(study))
    bruker.import_bruker([_study(tmp_path)], tmp_path / "raw")
    assert len(seen) == 1 and seen[0] != str(user_home) and not Path(seen[0]).exists()  # a temporary folder, gone
    assert os.environ["BRKRAW_CONFIG_HOME"] == str(user_home)
