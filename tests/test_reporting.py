"""Report aggregation over repeats on fixed per-case tables, with numbers worked out by hand."""
import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from lesionseg.data.io import write_json
from lesionseg.evaluation.summary import case_metrics, clopper_pearson
from lesionseg.report import build_report, collect, declared, findings, long_table, paired_tests, summary_table

DIAGONAL = 20.0


def _cases(dices, shams=()):
    """Lesion cases c0.. with the given Dice (0 = a miss) and shams s0.. (True = false alarm)."""
    rows = [{"case_id": f"c{i}", "group": "MCAo", "dice": d, "hd95_mm": np.inf if d == 0 else 2.0,
             "true_volume_mm3": 10.0, "pred_volume_mm3": 0.0 if d == 0 else 9.0, "outcome": "missed" if d == 0
             else "detected", "diagonal_mm": DIAGONAL} for i, d in enumerate(dices)]
    rows += [{"case_id": f"s{i}", "group": "sham", "dice": 0.0 if fa else np.nan, "hd95_mm": np.inf if fa else np.nan,
              "true_volume_mm3": 0.0, "pred_volume_mm3": 3.0 if fa else 0.0,
              "outcome": "false_alarm" if fa else "true_empty", "diagonal_mm": DIAGONAL} for i, fa in enumerate(shams)]
    return case_metrics(pd.DataFrame(rows))


def _model(root, name, info, table):
    model_dir = root / "models" / name
    model_dir.mkdir(parents=True)
    write_json(model_dir / "run.json", {"run_id": f"run-{name}", "best_val_dice": 0.5, "budget_steps": 200,
                                        "converged": info.pop("converged", True), **info})
    (model_dir / "history.tsv").write_text("epoch\tstep\ttrain_loss\tval_dice\n1\t10\t0.9\t0.2\n2\t20\t0.7\t0.4\n")
    (root / "metrics").mkdir(exist_ok=True)
    table.to_csv(root / "metrics" / f"{name}.csv", index=False)
    return name, model_dir


INFO = {"model": "ratlesnetv2", "freeze_depth": 0, "sample_size": 8, "augment": False}
COMPARISONS = [{"treatment": "ratlesnetv2/full/noaug", "control": "ratlesnetv2/scratch/noaug"},
               {"treatment": "unet/scratch/aug", "control": "ratlesnetv2/scratch/noaug"}]


@pytest.fixture
def study(tmp_path):
    dirs = []
    for r, shift in ((0, 0.0), (1, 0.1)):
        dirs.append(_model(tmp_path, f"scratch-r{r}", {**INFO, "strategy": "scratch", "repeat": r, "converged": r == 0},
                           _cases([0.2 + shift, 0.3, 0.0, 0.4, 0.3, 0.2, 0.5, 0.1], shams=(True, False))))
        dirs.append(_model(tmp_path, f"full-r{r}", {**INFO, "strategy": "full", "repeat": r},
                           _cases([0.8, 0.7 + shift, 0.6, 0.9, 0.8, 0.7, 0.9, 0.6], shams=(False, False))))
    return tmp_path, dirs


def test_summary_aggregates_repeats_with_named_metrics(study):
    root, dirs = study
    summary = summary_table(long_table(collect(root / "metrics", dirs))).set_index("arm")
    scratch = summary.loc["ratlesnetv2/scratch/noaug"]
    assert scratch["n_repeats"] == 2 and scratch["converged"] == "1/2"
    expected = np.mean([0.2, 0.3, 0.0, 0.4, 0.3, 0.2, 0.5, 0.1] + [0.3, 0.3, 0.0, 0.4, 0.3, 0.2, 0.5, 0.1])
    assert scratch["dice_lesion_mean"] == pytest.approx(expected)
    assert scratch["dice_lesion_ci_low"] < expected < scratch["dice_lesion_ci_high"]
    assert scratch["sham_fp_rate"] == pytest.approx(0.5)  # 2 false alarms over 4 sham scans
    # s0 was flagged in both repeats: 2 sham scans, one flagged, not 4 independent trials with 2 flagged
    assert scratch["n_sham_scans"] == 2 and scratch["n_lesion_cases"] == 8
    assert (scratch["sham_fp_ci_low"], scratch["sham_fp_ci_high"]) == pytest.approx(clopper_pearson(1, 2))
    assert scratch["sham_fp_ci_high"] - scratch["sham_fp_ci_low"] > np.subtract(*clopper_pearson(2, 4)[::-1])
    assert scratch["detection_rate"] == pytest.approx(14 / 16)
    # HD95 over lesion scans and false alarms: 14 detections at 2 mm, 2 misses and 2 false alarms at the diagonal
    assert scratch["hd95_mm_mean"] == pytest.approx((14 * 2.0 + 4 * DIAGONAL) / 18)
    assert scratch["dice_lesion_between_repeat_sd"] == pytest.approx(np.std([2.0 / 8, 2.1 / 8], ddof=1))


def test_paired_tests_are_two_sided_holm_corrected_with_a_ci_on_the_difference(study):
    root, dirs = study
    cases = long_table(collect(root / "metrics", dirs))
    tests = paired_tests(cases, COMPARISONS, alpha=0.05, seed=0)
    full = tests.iloc[0]
    assert full["n_cases"] == 8 and full["mean_diff"] > 0.3
    assert full["diff_ci_low"] <= full["mean_diff"] <= full["diff_ci_high"] and full["diff_ci_low"] > 0
    assert tests.iloc[1]["direction"] == "skipped"
    tested = tests["p_value"].dropna()
    assert np.allclose(tests["p_holm"].dropna(), multipletests(tested, method="holm")[1])


def test_build_report_writes_tables_figures_and_findings(study):
    root, dirs = study
    report = build_report(root / "metrics", dirs, root / "reports", comparisons=COMPARISONS, alpha=0.05)
    for name in ("summary.csv", "paired_tests.csv", "mixed_model.csv", "README.md", "headline.json",
                 "learning_curve.png", "dice_boxplot.png", "training_curves.png"):
        assert (root / "reports" / name).exists(), name
    text = " ".join(report["findings"])
    assert "200 optimizer steps" in text and "repeated 2 times" in text and "Holm p" in text
    assert "converged in 1/2 repeats" in text


def test_report_of_nothing(tmp_path):
    report = build_report(tmp_path / "metrics", [], tmp_path / "reports", comparisons=COMPARISONS)
    assert report["findings"] == ["No model has been evaluated yet, so the report makes no comparison."]


def test_negative_transfer_is_reported_only_for_transfer_arms(tmp_path):
    dirs = []
    worse = [0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.2, 0.1, 0.2, 0.3]
    better = [0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 0.8]
    for name, info, dices in (("scratch", {"strategy": "scratch"}, better), ("full", {"strategy": "full"}, worse),
                              ("unet", {"strategy": "scratch", "model": "unet", "augment": True}, worse)):
        dirs.append(_model(tmp_path, name, {**INFO, "repeat": 0, **info}, _cases(dices)))
    report = build_report(tmp_path / "metrics", dirs, tmp_path / "reports", comparisons=COMPARISONS)
    full, unet = [s for s in report["findings"] if " vs " in s]
    assert full.endswith("significantly worse (negative transfer).")
    assert unet.endswith("significantly worse.")


def test_an_arm_without_augmentation_part_is_compared_within_each_setting():
    comparisons = [{"treatment": "ratlesnetv2/full", "control": "ratlesnetv2/scratch"},
                   {"treatment": "unet/scratch/aug", "control": "ratlesnetv2/scratch/noaug"}]
    assert declared(comparisons, [16, 8], ["noaug", "aug"]) == [
        ("ratlesnetv2/full/noaug", "ratlesnetv2/scratch/noaug", 8), ("ratlesnetv2/full/noaug", "ratlesnetv2/scratch/noaug", 16),
        ("ratlesnetv2/full/aug", "ratlesnetv2/scratch/aug", 8), ("ratlesnetv2/full/aug", "ratlesnetv2/scratch/aug", 16),
        ("unet/scratch/aug", "ratlesnetv2/scratch/noaug", 8), ("unet/scratch/aug", "ratlesnetv2/scratch/noaug", 16)]


def test_findings_state_each_arms_repeats_when_they_differ(study):
    root, dirs = study
    cases = long_table(collect(root / "metrics", dirs))
    one_repeat_more = cases[~((cases["arm"] == "ratlesnetv2/full/noaug") & (cases["repeat"] == 1))]
    text = findings(summary_table(one_repeat_more), paired_tests(one_repeat_more, COMPARISONS, alpha=0.05, seed=0),
                    alpha=0.05)[0]
    assert "ratlesnetv2/full/noaug R = 1" in text and "ratlesnetv2/scratch/noaug R = 2" in text
    assert "each cell was repeated 2 times" in findings(summary_table(cases), paired_tests(
        cases, COMPARISONS, alpha=0.05, seed=0), alpha=0.05)[0]
