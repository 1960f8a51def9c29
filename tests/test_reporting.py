"""Report aggregation on fixed per-case tables with numbers worked out by hand."""
import json

import numpy as np
import pandas as pd
import pytest

from lesionseg.data.io import write_json
from lesionseg.reporting import bootstrap_ci, build_report, collect, paired_tests, summary_table


def _case_rows(dices, hd95s, shams=()):
    rows = [{"case_id": f"c{i}", "group": "MCAo", "lesion_volume_mm3": 10.0, "dice": d, "hd95_mm": h,
             "pred_volume_mm3": 9.0, "outcome": "detected"} for i, (d, h) in enumerate(zip(dices, hd95s))]
    rows += [{"case_id": f"s{i}", "group": "sham", "lesion_volume_mm3": 0.0,
              "dice": np.nan if outcome == "true_empty" else 0.0,
              "hd95_mm": np.nan if outcome == "true_empty" else np.inf, "pred_volume_mm3": 0.0, "outcome": outcome}
             for i, outcome in enumerate(shams)]
    return pd.DataFrame(rows)


def _model(tmp_path, name, info, table, history=True):
    model_dir = tmp_path / "models" / ("tuned" if name.startswith("tuned-") else "finetune") / name.removeprefix("tuned-")
    model_dir.mkdir(parents=True)
    write_json(model_dir / "run.json", {"run_id": f"run-{name}", "best_val_dice": 0.5, **info})
    if history:
        (model_dir / "history.tsv").write_text("epoch\ttrain_loss\tval_dice\tlr\n1\t0.9\t0.2\t0.001\n2\t0.7\t0.4\t0.001\n")
    (tmp_path / "metrics").mkdir(exist_ok=True)
    table.to_csv(tmp_path / "metrics" / f"{name}.csv", index=False)
    return name, model_dir


INFO = {"model": "ratlesnetv2", "freeze_depth": 0, "sample_size": 8, "augment": False}


@pytest.fixture
def study(tmp_path):
    dirs = [
        _model(tmp_path, "ratlesnetv2-scratch-n8-noaug", {**INFO, "strategy": "scratch"},
               _case_rows([0.2, 0.4, 0.6, 0.8], [4.0, 3.0, np.inf, 1.0], shams=("true_empty", "false_alarm"))),
        _model(tmp_path, "ratlesnetv2-partial-n8-noaug", {**INFO, "strategy": "partial", "freeze_depth": 5},
               _case_rows([0.5, 0.6, 0.7, 0.9], [2.0, 2.0, 2.0, 1.0], shams=("true_empty", "true_empty"))),
    ]
    return tmp_path, dirs


def test_summary_means_sd_median_and_sham_counts_by_hand(study):
    root, dirs = study
    summary = summary_table(collect(root / "metrics", dirs), n_boot=500, seed=1).set_index("name")
    scratch = summary.loc["ratlesnetv2-scratch-n8-noaug"]
    assert scratch["dice_mean"] == pytest.approx(0.5)
    assert scratch["dice_sd"] == pytest.approx(np.std([0.2, 0.4, 0.6, 0.8], ddof=1))
    assert scratch["dice_median"] == pytest.approx(0.5)
    assert scratch["hd95_mm_mean"] == pytest.approx(8.0 / 3)  # inf excluded: (4 + 3 + 1) / 3
    assert scratch["hd95_mm_median"] == pytest.approx(3.0)
    assert (scratch["n_sham"], scratch["sham_correct_empty"]) == (2, 1)
    assert scratch["n_lesion"] == 4, "the false alarm on a sham (Dice 0) is not a lesion case"
    assert scratch["run_id"] == "run-ratlesnetv2-scratch-n8-noaug"
    partial = summary.loc["ratlesnetv2-partial-n8-noaug"]
    assert partial["dice_mean"] == pytest.approx(0.675) and partial["sham_correct_empty"] == 2
    assert partial["dice_ci_low"] <= 0.675 <= partial["dice_ci_high"]


def test_bootstrap_ci_is_seeded_and_matches_a_hand_computation():
    values = np.array([0.2, 0.4, 0.6, 0.8])
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 4, size=(1000, 4))].mean(axis=1)
    expected = (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert bootstrap_ci(values, n_boot=1000, seed=3) == pytest.approx(expected)
    assert bootstrap_ci(values, n_boot=1000, seed=3) == bootstrap_ci(values, n_boot=1000, seed=3)
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_paired_wilcoxon_transfer_vs_scratch(study):
    root, dirs = study
    tests = paired_tests(collect(root / "metrics", dirs))
    assert len(tests) == 1
    row = tests.iloc[0]
    assert row["n_pairs"] == 4 and row["dice_gain"] == pytest.approx(0.175)
    # all four differences positive: the exact one-sided signed-rank p is 1/2**4
    assert row["wilcoxon_p"] == pytest.approx(1 / 16)


def test_build_report_writes_figures_and_readme_and_skips_missing(study):
    root, dirs = study
    missing = root / "models" / "finetune" / "unet-scratch-n8-aug"  # never evaluated: skipped, not an error
    missing.mkdir()
    report = build_report(root / "metrics", [*dirs, (missing.name, missing)], root / "reports", n_boot=200)
    out = root / "reports"
    for png in ("learning_curve.png", "dice_boxplot.png", "training_curves.png"):
        assert (out / png).stat().st_size > 10_000
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2
    text = (out / "README.md").read_text()
    assert "At n=8, ratlesnetv2 partial d5 reaches Dice 0.68" in text and "vs 0.50" in text
    headline = json.loads((out / "headline.json").read_text())
    assert headline["n8"]["ratlesnetv2_partial_d5"]["dice"] == pytest.approx(0.675)
    assert report["findings"]


def test_report_with_nothing_evaluated_yet(tmp_path):
    report = build_report(tmp_path / "metrics", [], tmp_path / "reports")
    assert "No transfer/scratch pair" in report["findings"][0]
    assert (tmp_path / "reports" / "README.md").exists()
