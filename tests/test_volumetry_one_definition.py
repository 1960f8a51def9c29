"""One name, one definition (issue 27, item 5): the volume_* numbers MLflow, the registry, metrics/test.json and
the report give for one trained model are the same, per model and on lesion scans only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lesionseg.data.io import write_json
from lesionseg.evaluation import evaluate as E
from lesionseg.evaluation.summary import case_metrics
from lesionseg.layout import Layout
from lesionseg.report import collect, long_table, model_table
from lesionseg.tracking import scores


def _per_case() -> pd.DataFrame:
    """8 lesion scans segmented with uneven volume errors and 3 shams, two with a false-positive volume."""
    rng = np.random.default_rng(2)
    true = rng.uniform(20, 120, 8)
    rows = [{"case_id": f"c{i}", "group": "MCAo", "dice": 0.7, "hd95_mm": 2.0, "outcome": "detected",
             "true_volume_mm3": t, "pred_volume_mm3": t * rng.uniform(0.7, 1.3) + 5, "diagonal_mm": 30.0}
            for i, t in enumerate(true)]
    rows += [{"case_id": f"s{i}", "group": "sham", "dice": 0.0 if v else np.nan, "hd95_mm": np.inf if v else np.nan,
              "outcome": "false_alarm" if v else "true_empty", "true_volume_mm3": 0.0, "pred_volume_mm3": v,
              "diagonal_mm": 30.0} for i, v in enumerate((40.0, 0.0, 25.0))]
    return case_metrics(pd.DataFrame(rows))[E.PER_CASE_COLUMNS]


def test_volume_icc_in_mlflow_the_registry_and_test_json_equals_the_report(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    client.create_registered_model("lesionseg-mouse")
    version = client.create_model_version("lesionseg-mouse", f"runs:/{run_id}/model", run_id=run_id).version
    model_dir = tmp_path / "models" / "full-n8-r0"
    model_dir.mkdir(parents=True)
    run = {"run_id": run_id, "registered_model": "lesionseg-mouse", "version": str(version), "best_val_dice": 0.6,
           "budget_steps": 10, "converged": True, "sample_size": 8, "repeat": 0, "model": "ratlesnetv2",
           "strategy": "full", "freeze_depth": 0, "augment": False}
    write_json(model_dir / "run.json", run)
    table = _per_case()
    # no network needed: the predictions folder is "written" and scored as this table
    monkeypatch.setattr(scores, "predict_cases", lambda segmenter, raw_dir, ids, out: out)
    monkeypatch.setattr(E, "score_folder", lambda pred_dir, ref_dir, case_ids=None: (table, {}))
    monkeypatch.setattr(scores.Segmenter, "from_file", classmethod(lambda cls, path: None))
    layout = Layout.at(tmp_path)
    headline, _ = scores.evaluate_and_log([("full-n8-r0", model_dir)], tmp_path, list(table["case_id"]), layout,
                                          n_overlays=0)

    report = model_table(long_table(collect(layout.test_metrics_dir, [("full-n8-r0", model_dir)]))).iloc[0]
    logged = client.get_run(run_id).data.metrics
    tags = client.get_model_version("lesionseg-mouse", version).tags
    lesion = table[table["group"] == "MCAo"]
    assert report["n_lesion"] == 8
    for key in ("volume_icc", "volume_bias_mm3"):
        assert logged[key] == pytest.approx(report[key], rel=1e-5)  # the CSV keeps 6 significant digits
        assert float(tags[key]) == pytest.approx(report[key], rel=1e-3)  # the tag keeps 4
        assert headline["full-n8-r0"][key] == pytest.approx(report[key], rel=1e-5)
    assert logged["volume_bias_mm3"] == pytest.approx((lesion["pred_volume_mm3"] - lesion["true_volume_mm3"]).mean())
    assert logged["sham_fp_volume_mm3"] == pytest.approx(65.0 / 3) == report["sham_fp_volume_mm3"]
    assert "volume_error_mm3" not in logged and "volume_error_lesion_mm3" not in logged
