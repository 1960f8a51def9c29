"""Registry lifecycle on real tiny models: aliases, promotion, pyfunc, predict, serving, reproduce."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lesionseg.data.io import read_json
from lesionseg.errors import DataError
from lesionseg.inference import predict_files
from lesionseg.tracking.pyfunc import load_segmenter
from lesionseg.tracking import promotion
from lesionseg.config import PromoteConfig
from lesionseg.tracking.promotion import decide, promote
from lesionseg.tracking.registry import CHALLENGER, CHAMPION, TARGET_MODEL, set_alias
from lesionseg.tracking.reproduce import reproduce_plan
from servers import free_port, get_when_up, stop


def _named(dices, shams=()):
    """A native-space per-case table: lesion cases with the given Dice, shams (True = false alarm)."""
    from lesionseg.evaluation.summary import case_metrics

    rows = [{"case_id": f"c{i}", "group": "MCAo", "dice": d, "hd95_mm": 2.0, "true_volume_mm3": 10.0,
             "pred_volume_mm3": 9.0, "outcome": "detected", "diagonal_mm": 20.0} for i, d in enumerate(dices)]
    rows += [{"case_id": f"s{i}", "group": "sham", "dice": 0.0 if fa else np.nan, "hd95_mm": np.inf if fa else np.nan,
              "true_volume_mm3": 0.0, "pred_volume_mm3": 2.0 if fa else 0.0,
              "outcome": "false_alarm" if fa else "true_empty", "diagonal_mm": 20.0} for i, fa in enumerate(shams)]
    return case_metrics(pd.DataFrame(rows))


def test_decide_uses_the_named_metrics_and_guards_hd95_and_false_alarms():
    base = np.linspace(0.4, 0.6, 12)
    champion = _named(base, shams=(False, False))
    rule = PromoteConfig(alpha=0.05, hd95_margin_mm=0.5)
    up, table = decide(_named(base + 0.1, shams=(False, False)), champion, rule, "2", "1")
    assert up.promote and up.summary["dice_lesion_gain"] == pytest.approx(0.1) and up.summary["p_value"] < 0.001
    assert len(table) == 14
    down, _ = decide(_named(base - 0.1, shams=(False, False)), champion, rule, "3", "1")
    assert not down.promote and any(r.startswith("fail: dice_lesion gain") for r in down.reasons)
    alarm, _ = decide(_named(base + 0.1, shams=(True, False)), champion, rule, "4", "1")
    assert not alarm.promote and any(r.startswith("fail: sham_fp_rate change +0.50") for r in alarm.reasons)
    assert any(r.startswith("fail: hd95_mm change") for r in alarm.reasons), "a false alarm scores the diagonal"


def test_first_candidate_becomes_champion_on_new_animals_then_dry_run_moves_nothing(two_versions):
    root, (v1, v2) = two_versions
    acceptance = root / "data/raw/mouse-acceptance"
    log = root / "reports/promotions.jsonl"
    n_lesion = promotion.count_lesion_scans(acceptance)
    # the tiny models (1-2 epochs) are weak and the tiny cohort's few lesion scans cannot reach alpha 0.05
    rule = PromoteConfig(min_dice_first=0.0, alpha=0.2, max_looks=2)  # 0.1 per look on this cohort
    assert promotion.lesion_scans_needed(promotion.look_alpha(rule)) <= n_lesion < promotion.lesion_scans_needed(
        promotion.look_alpha(PromoteConfig()))
    decision, _ = promote(TARGET_MODEL, v1["version"], rule, acceptance, log_path=log)
    client = MlflowClient()
    assert decision.promote and str(client.get_model_version_by_alias(TARGET_MODEL, CHAMPION).version) == v1["version"]
    tags = client.get_model_version(TARGET_MODEL, v1["version"]).tags
    assert tags["promotion_decision"] == "promoted" and tags["promoted_at"] and tags["replaced_version"] == ""
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["candidate_version"] == v1["version"] and entry["data_hash"] == tags["promotion_data_hash"]
    assert entry["earlier_promotions_on_this_data"] == 0
    set_alias(TARGET_MODEL, CHALLENGER, v2["version"])
    before = log.read_text()
    decision, table = promote(TARGET_MODEL, "@challenger", PromoteConfig(alpha=1.01, min_dice_gain=-1.0,
                                                                         hd95_margin_mm=1e9),
                              acceptance, log_path=log, dry_run=True)
    assert len(table) == 6 and str(client.get_model_version_by_alias(TARGET_MODEL, CHAMPION).version) == v1["version"]
    assert log.read_text() == before
    assert "promotion_decision" not in client.get_model_version(TARGET_MODEL, v2["version"]).tags
    with pytest.raises(DataError, match=f"lesion scans needed at a level of 0.01667 .* the acceptance cohort has {n_lesion}"):
        promote(TARGET_MODEL, "@challenger", PromoteConfig(), acceptance, log_path=log)  # the defaults: too few scans
    assert log.read_text() == before
    promote(TARGET_MODEL, "@challenger", rule, acceptance, log_path=log)
    assert json.loads(log.read_text().splitlines()[1])["earlier_promotions_on_this_data"] == 1  # the dry run looked
    looks = {k: v for k, v in client.get_registered_model(TARGET_MODEL).tags.items() if k.startswith("acceptance_looks_")}
    assert list(looks.values()) == ["2"], "the dry run and the decision against a champion; the first champion none"


def test_promote_refuses_a_models_own_training_data_even_renamed(two_versions, tmp_path):
    import shutil

    root, (v1, _) = two_versions
    with pytest.raises(DataError, match="in the (train|val) data of lesionseg-mouse v1") as err:
        promote(TARGET_MODEL, v1["version"], PromoteConfig(), root / "data/raw/mouse", log_path=tmp_path / "p.jsonl")
    assert "\n" not in str(err.value) and "mouse-acceptance" in str(err.value)
    renamed = tmp_path / "renamed"
    shutil.copytree(root / "data/raw/mouse-acceptance", renamed)
    train_id = read_json(root / "data/splits/subsets/r0-n4.json")[0]
    shutil.copy(root / f"data/raw/mouse/imagesTr/{train_id}_0000.nii.gz", renamed / "imagesTr/mouseacc_000_0000.nii.gz")
    shutil.copy(root / f"data/raw/mouse/labelsTr/{train_id}.nii.gz", renamed / "labelsTr/mouseacc_000.nii.gz")
    (renamed / "cases.csv").unlink()  # its group/volume would describe the replaced scan
    with pytest.raises(DataError, match=r"cases \['mouseacc_000'\] are in the train data"):
        promote(TARGET_MODEL, v1["version"], PromoteConfig(), renamed, log_path=tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()


def test_failure_in_the_middle_of_promotion_leaves_aliases_unchanged(two_versions, monkeypatch):
    root, (v1, v2) = two_versions
    set_alias(TARGET_MODEL, CHAMPION, v1["version"])
    set_alias(TARGET_MODEL, CHALLENGER, v2["version"])
    lenient = PromoteConfig(alpha=1.01, min_dice_gain=-1.0, hd95_margin_mm=1e9)

    def broken(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(promotion.MlflowClient, "set_model_version_tag", broken)
    with pytest.raises(ConnectionError):
        promote(TARGET_MODEL, "@challenger", lenient, root / "data/raw/mouse-acceptance", log_path=root / "p.jsonl")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(TARGET_MODEL, CHAMPION).version) == v1["version"]
    assert str(client.get_model_version_by_alias(TARGET_MODEL, CHALLENGER).version) == v2["version"]


def _non_ras_scan(root: Path, tmp_path: Path) -> Path:
    """A raw mouse scan re-saved with flipped axes (LPI-like) and int16 + scl_slope."""
    raw = nib.load(str(root / "data/raw/mouse/imagesTr/mouse_000_0000.nii.gz"))
    flipped = np.flip(np.asarray(raw.dataobj), axis=0)
    affine = raw.affine @ np.array([[-1, 0, 0, flipped.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.round(flipped * 100).astype(np.int16), affine)
    img.header.set_slope_inter(0.01, 0.0)
    path = tmp_path / "scan.nii.gz"
    nib.save(img, str(path))
    return path


def test_champion_predicts_on_a_non_ras_nifti_in_its_own_grid(two_versions, tmp_path):
    root, (v1, _) = two_versions
    set_alias(TARGET_MODEL, CHAMPION, v1["version"])
    scan = _non_ras_scan(root, tmp_path)
    table = predict_files(load_segmenter(f"models:/{TARGET_MODEL}@champion"), [scan], tmp_path / "out",
                          progress=False)
    mask = nib.load(table["mask"][0])
    source = nib.load(str(scan))
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    volumes = pd.read_csv(tmp_path / "out" / "volumes.csv")
    assert volumes["lesion_volume_mm3"][0] == pytest.approx(table["lesion_volume_mm3"][0], rel=1e-5)  # volumes.csv keeps 6 digits


def test_predict_rejects_bad_inputs_before_writing(two_versions, tmp_path):
    root, (v1, _) = two_versions
    segmenter = load_segmenter(str(root / "models/finetune/a/model.pt"))
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), str(four_d))
    nan = tmp_path / "nan.nii.gz"
    data = np.ones((8, 8, 8), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(nan))
    for bad, message in ((tmp_path / "missing.nii.gz", "file not found"), (four_d, "expected a 3D volume"),
                         (nan, "NaN/Inf voxels")):
        with pytest.raises(DataError) as err:
            predict_files(segmenter, [_non_ras_scan(root, tmp_path), bad], tmp_path / "out", progress=False)
        assert str(bad) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_pyfunc_predict_takes_any_size_and_batches(two_versions):
    _, (v1, _) = two_versions
    model = mlflow.pyfunc.load_model(f"models:/{TARGET_MODEL}/{v1['version']}")
    rng = np.random.default_rng(0)
    one = model.predict({"volume": rng.random((20, 10, 18)).astype(np.float32), "spacing": [0.8, 1.0, 0.8]})
    assert one.shape == (20, 10, 18) and one.dtype == np.uint8
    batch = model.predict({"volume": rng.random((2, 12, 9, 14)).astype(np.float32), "spacing": [0.5, 1.0, 0.5]})
    assert batch.shape == (2, 12, 9, 14)


def test_mlflow_models_serve_round_trip(two_versions):
    _, (v1, _) = two_versions
    set_alias(TARGET_MODEL, CHAMPION, v1["version"])
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{TARGET_MODEL}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    try:
        get_when_up(f"http://127.0.0.1:{port}/ping", server, timeout_s=90)
        volume = np.random.default_rng(1).random((16, 8, 12)).round(3).tolist()
        body = json.dumps({"inputs": {"volume": volume, "spacing": [0.8, 1.0, 0.8]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        mask = np.asarray(answer["predictions"])
        assert mask.shape == (16, 8, 12) and set(np.unique(mask)) <= {0, 1}
    finally:
        stop(server, timeout_s=20)


def test_reproduce_plan_names_commit_stage_and_data(two_versions):
    """The plan comes from the version's lineage: its run's commit and experiment, the stage that dvc.lock says
    wrote the run's output, and each recorded data hash against the workspace's dvc.lock."""
    import yaml

    root, (v1, _) = two_versions
    client = MlflowClient()
    version = client.get_model_version(TARGET_MODEL, v1["version"])
    for key, value in {"git_commit": "0123abc", "dvc_out": "models/finetune/a", "dvc_exp_name": "exp-7"}.items():
        client.set_tag(version.run_id, key, value)
    client.set_model_version_tag(TARGET_MODEL, v1["version"], "data_hash.data/processed/mouse", "aaa")
    client.set_model_version_tag(TARGET_MODEL, v1["version"], "data_hash.data/splits/mouse.json", "bbb")
    stage = "finetune@unet-scratch-4-noaug-0"
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        stage: {"outs": [{"path": "models/finetune/a", "md5": "m1"}]},
        "prepare@target": {"outs": [{"path": "data/processed/mouse", "md5": "aaa"}]},
        "split@target": {"outs": [{"path": "data/splits/mouse.json", "md5": "ccc"}]}}}))
    plan = reproduce_plan(f"models:/{TARGET_MODEL}/{v1['version']}", root)
    workdir = f"../lesionseg-{TARGET_MODEL}-v{v1['version']}"
    assert (plan.commit, plan.stage, plan.exp_name) == ("0123abc", stage, "exp-7")
    assert plan.commands == [f"git worktree add {workdir} 0123abc", f"cd {workdir}", "dvc exp apply exp-7",
                             "dvc pull", f"dvc repro {stage}"]
    checks = {path: (recorded, current) for path, recorded, current in plan.data_checks}
    assert checks["data/processed/mouse"] == ("aaa", "aaa") and checks["data/splits/mouse.json"] == ("bbb", "ccc")
    text = plan.render()
    assert text.splitlines()[0] == f"# models:/{TARGET_MODEL}/{v1['version']}: trained at git commit 0123abc"
    assert "# data data/processed/mouse: aaa matches" in text
    assert "# data data/splits/mouse.json: bbb DIFFERS (now ccc)" in text
