"""The report over trained models on fixed per-case tables, with numbers worked out by hand."""
import numpy as np
import pandas as pd
import pytest

from lesionseg.arm import Arm
from lesionseg.config import ArmRef, Comparison
from lesionseg.data.io import write_json
from lesionseg.evaluation.summary import case_metrics
from lesionseg.report import (build_report, collect, long_table, model_table, paired_tests,
                              summary_table)

DIAGONAL = 20.0


def _cases(dices, shams=(), volume=10.0):
    """Lesion cases c0.. with the given Dice (0 = a miss) and shams s0.. (True = a 3 mm3 false alarm)."""
    rows = [{"case_id": f"c{i}", "group": "MCAo", "dice": d, "hd95_mm": np.inf if d == 0 else 2.0,
             "true_volume_mm3": volume + i, "pred_volume_mm3": 0.0 if d == 0 else volume + i - 1.0,
             "outcome": "missed" if d == 0 else "detected", "diagonal_mm": DIAGONAL} for i, d in enumerate(dices)]
    rows += [{"case_id": f"s{i}", "group": "sham", "dice": 0.0 if fa else np.nan, "hd95_mm": np.inf if fa else np.nan,
              "true_volume_mm3": 0.0, "pred_volume_mm3": 3.0 if fa else 0.0,
              "outcome": "false_alarm" if fa else "true_empty", "diagonal_mm": DIAGONAL} for i, fa in enumerate(shams)]
    return case_metrics(pd.DataFrame(rows))


def _model(root, name, arm: Arm, table, *, repeat=0, sample_size=8, converged=True):
    model_dir = root / "models" / name
    model_dir.mkdir(parents=True)
    write_json(model_dir / "run.json", {"run_id": f"run-{name}", "best_val_dice": 0.5, "budget_steps": 200,
                                        "converged": converged, "sample_size": sample_size, "repeat": repeat,
                                        **arm.fields()})
    (model_dir / "history.tsv").write_text("epoch\tstep\ttrain_loss\tval_dice\tval_dice_ema\n"
                                           "1\t10\t0.9\t0.2\t0.2\n2\t20\t0.7\t0.4\t0.3\n")
    (root / "metrics").mkdir(exist_ok=True)
    table.to_csv(root / "metrics" / f"{name}.csv", index=False)
    return name, model_dir


SCRATCH, FULL = Arm("ratlesnetv2", "scratch", False), Arm("ratlesnetv2", "full", False)
UNET = Arm("unet", "scratch", False)
COMPARISONS = [Comparison(ArmRef("ratlesnetv2", "full"), ArmRef("ratlesnetv2", "scratch")),
               Comparison(ArmRef("unet", "scratch"), ArmRef("ratlesnetv2", "scratch"))]
LOW = [0.2, 0.3, 0.0, 0.4, 0.3, 0.2, 0.5, 0.1]
HIGH = [0.8, 0.7, 0.6, 0.9, 0.8, 0.7, 0.9, 0.6]


@pytest.fixture
def study(tmp_path):
    dirs = []
    for r, shift in ((0, 0.0), (1, 0.1)):
        dirs.append(_model(tmp_path, f"scratch-r{r}", SCRATCH, _cases([LOW[0] + shift, *LOW[1:]], shams=(True, r == 1)),
                           repeat=r, converged=r == 0))
        dirs.append(_model(tmp_path, f"full-r{r}", FULL, _cases([HIGH[0], HIGH[1] + shift, *HIGH[2:]],
                                                                shams=(False, False)), repeat=r))
    return tmp_path, dirs


def _tables(root, dirs):
    cases = long_table(collect(root / "metrics", dirs))
    return cases, model_table(cases)


def test_each_metric_is_computed_per_trained_model_then_averaged(study):
    cases, models = _tables(*study)
    scratch = summary_table(models).set_index("arm").loc["ratlesnetv2/scratch/noaug"]
    assert (scratch["model"], scratch["strategy"], scratch["augment"]) == ("ratlesnetv2", "scratch", False)
    assert scratch["n_repeats"] == 2 and scratch["n_converged"] == 1
    per_model = [np.mean(LOW), np.mean([LOW[0] + 0.1, *LOW[1:]])]
    assert scratch["dice_lesion_mean"] == pytest.approx(np.mean(per_model))
    assert scratch["dice_lesion_sd_between_models"] == pytest.approx(np.std(per_model, ddof=1))
    assert scratch["sham_fp_rate"] == pytest.approx(np.mean([1 / 2, 2 / 2]))
    assert scratch["sham_fp_volume_mm3_mean"] == pytest.approx(np.mean([3.0 / 2, 6.0 / 2]))
    assert scratch["n_sham_scans"] == 2 and scratch["n_lesion_cases"] == 8


def test_volume_agreement_is_per_model_on_lesion_scans_only(study):
    _, models = _tables(*study)
    full = models[models["strategy"] == "full"].iloc[0]
    # every detected lesion is predicted 1 mm3 small; shams (0 predicted, 0 true) must not enter
    assert full["volume_bias_mm3"] == pytest.approx(-1.0)
    assert full["volume_loa_low_mm3"] == pytest.approx(-1.0) and full["volume_loa_high_mm3"] == pytest.approx(-1.0)
    scratch = models[models["strategy"] == "scratch"].iloc[0]
    # the missed case c2 (true 12 mm3, predicted 0) is in the bias: (7 x -1 + -12) / 8
    assert scratch["volume_bias_mm3"] == pytest.approx((7 * -1.0 - 12.0) / 8)


def test_paired_tests_have_one_statistic_per_verdict(study):
    cases, _ = _tables(*study)
    tests = paired_tests(cases, COMPARISONS, alpha=0.05, margin=0.03)
    for column in ("estimate", "ci_low_adj", "ci_high_adj", "p_value", "p_holm", "verdict"):
        assert column in tests
    full = tests[tests["treatment"] == FULL.label].iloc[0]
    assert full["estimate"] == pytest.approx(np.mean(HIGH) - np.mean(LOW) + (0.1 - 0.1) / 16)
    assert full["ci_low_adj"] < full["estimate"] < full["ci_high_adj"]
    assert full["verdict"] in ("better", "inconclusive") and full["n_repeats_paired"] == 2
    unet = tests[tests["treatment"] == UNET.label].iloc[0]
    assert unet["verdict"] == "skipped" and "unet" in unet["note"]


def test_build_report_writes_tables_figures_and_findings(study):
    root, dirs = study
    report = build_report(root / "metrics", dirs, root / "reports", comparisons=COMPARISONS, alpha=0.05)
    for name in ("summary.csv", "models.csv", "paired_tests.csv", "README.md", "headline.json", "learning_curve.png",
                 "dice_boxplot.png", "training_curves.png", "sham_fp_volume.png"):
        assert (root / "reports" / name).exists(), name
    text = " ".join(report["findings"])
    assert "200 optimizer steps" in text and "repeated 2 times" in text and "Holm p" in text
    assert "1 of 2 models converged" in text
    assert "adjusted" in (root / "reports" / "README.md").read_text()


def test_report_of_nothing(tmp_path):
    report = build_report(tmp_path / "metrics", [], tmp_path / "reports", comparisons=COMPARISONS)
    assert report["findings"] == ["No model has been evaluated yet, so the report makes no comparison."]


def test_negative_transfer_is_named_only_for_transfer_arms(tmp_path):
    worse = [0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.2, 0.1, 0.2, 0.3]
    better = [0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 0.8]
    dirs = []
    for r in (0, 1, 2, 3):  # R = 4: with 2 repeats (df 1) even -0.6 on every scan is not decidable
        noise = [0.01 * r * (-1) ** i for i in range(10)]
        for name, arm, dices in (("scratch", SCRATCH, better), ("full", FULL, worse), ("unet", UNET, worse)):
            dirs.append(_model(tmp_path, f"{name}-r{r}", arm, _cases(np.add(dices, noise)), repeat=r))
    report = build_report(tmp_path / "metrics", dirs, tmp_path / "reports", comparisons=COMPARISONS)
    full, unet = [s for s in report["findings"] if " vs " in s]
    assert "**worse (negative transfer)**" in full
    assert "**worse**" in unet and "negative transfer" not in unet


def test_a_tuned_run_is_known_by_its_arm_not_its_folder(tmp_path):
    tuned = Arm("ratlesnetv2", "tuned", False, freeze_depth=3)
    dirs = [_model(tmp_path, "anything-at-all", tuned, _cases(HIGH))]
    cases = long_table(collect(tmp_path / "metrics", dirs))
    assert set(cases["arm"]) == {"ratlesnetv2/tuned/noaug"} and set(cases["freeze_depth"]) == {3}


def test_an_arm_without_augmentation_is_compared_within_each_setting():
    comparisons = [Comparison(ArmRef("ratlesnetv2", "full"), ArmRef("ratlesnetv2", "scratch")),
                   Comparison(ArmRef("unet", "scratch", True), ArmRef("ratlesnetv2", "scratch", False))]
    pairs = [(t.label, c.label) for comparison in comparisons for t, c in comparison.within([False, True])]
    assert pairs == [("ratlesnetv2/full/noaug", "ratlesnetv2/scratch/noaug"),
                     ("ratlesnetv2/full/aug", "ratlesnetv2/scratch/aug"),
                     ("unet/scratch/aug", "ratlesnetv2/scratch/noaug")]


def test_a_comparison_runs_within_the_settings_its_control_was_trained_in(study):
    """A baseline trained only with augmentation does not add an empty 'aug' row to every other comparison."""
    root, dirs = study
    dirs.append(_model(root, "unet-aug", Arm("unet", "scratch", True), _cases(HIGH)))
    cases, _ = _tables(root, dirs)
    tests = paired_tests(cases, COMPARISONS[:1], alpha=0.05, margin=0.03)
    assert list(tests["treatment"]) == [FULL.label]


def test_the_primary_endpoint_comes_first_and_the_report_says_what_equivalence_needs(study):
    root, dirs = study
    for r in (0, 1):  # the same arms at a second size, so the declared primary endpoint averages two sizes
        dirs.append(_model(root, f"scratch-n16-r{r}", SCRATCH, _cases([x + 0.05 * r for x in LOW]), repeat=r,
                           sample_size=16))
        dirs.append(_model(root, f"full-n16-r{r}", FULL, _cases(HIGH), repeat=r, sample_size=16))
    cases, _ = _tables(root, dirs)
    tests = paired_tests(cases, COMPARISONS[:1], alpha=0.05, margin=0.03, primary_sizes=[8, 16])
    assert tests["endpoint"].tolist() == ["primary", "per size", "per size"]
    primary = tests.iloc[0]
    assert primary["sizes"] == "8, 16" and primary["n_repeats_paired"] == 2
    assert primary["estimate"] == pytest.approx(tests.iloc[1:]["estimate"].mean())
    assert "would need" in primary["equivalence_needs"]
    build_report(root / "metrics", dirs, root / "reports", comparisons=COMPARISONS[:1], primary_sizes=[8, 16])
    readme = (root / "reports" / "README.md").read_text()
    assert "## What `equivalent` would need" in readme and "primary endpoint" in readme
    summary = pd.read_csv(root / "reports" / "summary.csv")
    assert {"arm_volume_loa_low_mm3", "arm_volume_loa_high_mm3", "volume_icc_mean"} <= set(summary.columns)
    assert not any(c.startswith("volume_") and c not in ("volume_icc_mean", "volume_icc_sd_between_models")
                   for c in summary.columns), "volume_* names are per model; the arm's have their own"


def test_a_comparison_the_study_never_trains_is_one_row_not_one_per_size(study):
    cases, _ = _tables(*study)
    tests = paired_tests(cases, COMPARISONS, alpha=0.05, margin=0.03)
    assert (tests["treatment"] == UNET.label).sum() == 1
