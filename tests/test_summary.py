"""Named summary quantities: penalties, rates with exact CIs, volume agreement (pure, fast)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lesionseg.evaluation import summary as S

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy on empty or undefined input; not a leak from an earlier test

DIAG = 100.0
# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = 0.29, ICC(3,1) = 0.71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def _table() -> pd.DataFrame:
    """Three detected lesions and three correctly empty shams."""
    return pd.DataFrame({
        "case_id": ["l1", "l2", "l3", "s1", "s2", "s3"],
        "group": ["MCAo", "MCAo", "MCAo", "sham", "sham", "sham"],
        "dice": [0.8, 0.6, 0.7, math.nan, math.nan, math.nan],
        "hd95_mm": [2.0, 4.0, 6.0, math.nan, math.nan, math.nan],
        "pred_volume_mm3": [110.0, 90.0, 60.0, 0.0, 0.0, 0.0],
        "true_volume_mm3": [100.0, 100.0, 50.0, 0.0, 0.0, 0.0],
    })


def _with_miss(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    t.loc[t.case_id == "l3", ["dice", "hd95_mm", "pred_volume_mm3"]] = [0.0, math.inf, 0.0]
    return t


def _with_false_alarm(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    t.loc[t.case_id == "s1", ["dice", "hd95_mm", "pred_volume_mm3"]] = [0.0, math.inf, 5.0]
    return t


def test_hd95_with_penalty_replaces_only_inf() -> None:
    assert S.hd95_with_penalty(math.inf, DIAG) == DIAG
    assert S.hd95_with_penalty(3.5, DIAG) == 3.5
    assert math.isnan(S.hd95_with_penalty(math.nan, DIAG))
    np.testing.assert_array_equal(S.hd95_with_penalty(np.array([1.0, math.inf]), DIAG), [1.0, DIAG])
    with pytest.raises(ValueError, match="diagonal_mm"):
        S.hd95_with_penalty(math.inf, 0.0)


def test_image_diagonal_mm() -> None:
    assert S.image_diagonal_mm((3, 4), (1.0, 1.0)) == pytest.approx(5.0)
    assert S.image_diagonal_mm((10, 10, 10), (0.1, 0.2, 0.2)) == pytest.approx(3.0)


def test_summary_hand_computed() -> None:
    s = S.summarize(_table(), DIAG)
    assert tuple(s) == S.SUMMARY_KEYS
    assert s["dice_lesion"] == pytest.approx(0.7)
    assert s["detection_rate"] == 1.0
    assert s["hd95_mm"] == pytest.approx(4.0)  # empty shams excluded
    assert s["sham_fp_rate"] == 0.0
    assert (s["sham_fp_ci_low"], s["sham_fp_ci_high"]) == pytest.approx((0.0, 0.7076), abs=1e-4)
    assert s["volume_bias_mm3"] == pytest.approx(10.0 / 3)  # lesion scans only: shams at (0, 0) do not count
    assert "volume_error_mm3" not in s and "volume_error_lesion_mm3" not in s  # one name per quantity
    assert s["sham_fp_volume_mm3"] == 0.0 and s["sham_fp_volume_max_mm3"] == 0.0
    assert (s["n_lesion"], s["n_sham"]) == (3, 3)


def test_miss_raises_hd95_and_lowers_detection() -> None:
    base, miss = S.summarize(_table(), DIAG), S.summarize(_with_miss(_table()), DIAG)
    assert miss["hd95_mm"] > base["hd95_mm"]
    assert miss["hd95_mm"] == pytest.approx((2.0 + 4.0 + DIAG) / 3)  # counted, not dropped
    assert miss["detection_rate"] < base["detection_rate"]
    assert miss["detection_rate"] == pytest.approx(2 / 3)
    assert miss["dice_lesion"] < base["dice_lesion"]


def test_false_alarm_raises_sham_fp_rate() -> None:
    base, fa = S.summarize(_table(), DIAG), S.summarize(_with_false_alarm(_table()), DIAG)
    assert fa["sham_fp_rate"] > base["sham_fp_rate"]
    assert fa["sham_fp_rate"] == pytest.approx(1 / 3)
    assert fa["hd95_mm"] == pytest.approx((2.0 + 4.0 + 6.0 + DIAG) / 4)
    assert fa["dice_lesion"] == base["dice_lesion"]
    cases = S.case_metrics(_with_false_alarm(_table()), DIAG)
    assert cases["false_alarm"].tolist() == [False, False, False, True, False, False]


def test_case_metrics_columns_and_diagonal_column() -> None:
    t = _with_miss(_table()).assign(diagonal_mm=[50.0, 60.0, 70.0, 80.0, 80.0, 80.0])
    cases = S.case_metrics(t)
    assert cases["hd95_mm_penalised"].iloc[2] == 70.0
    assert cases["detected"].tolist() == [True, True, False, False, False, False]
    assert cases["volume_error_mm3"].tolist() == [10.0, -10.0, -50.0, 0.0, 0.0, 0.0]
    assert "hd95_mm_penalised" not in t
    with pytest.raises(ValueError, match="diagonal_mm"):
        S.case_metrics(_table())


def test_has_lesion_and_gt_volume_alias() -> None:
    t = _table().drop(columns="group").assign(has_lesion=[True] * 3 + [False] * 3)
    t = t.rename(columns={"true_volume_mm3": "gt_volume_mm3"})
    assert S.summarize(t, DIAG) == pytest.approx(S.summarize(_table(), DIAG), nan_ok=True)
    with pytest.raises(ValueError, match="MCAo"):
        S.case_metrics(_table().assign(group="stroke"), DIAG)


def test_clopper_pearson_known_values() -> None:
    assert S.clopper_pearson(0, 3) == pytest.approx((0.0, 0.7076), abs=1e-4)
    assert S.clopper_pearson(3, 3) == pytest.approx((0.2924, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in S.clopper_pearson(0, 0))


def test_bland_altman_known_numbers() -> None:
    bias, low, high = S.bland_altman([10.0, 12.0, 14.0], [9.0, 10.0, 14.0])  # diffs 1, 2, 0: SD 1
    assert (bias, low, high) == pytest.approx((1.0, 1.0 - 1.96, 1.0 + 1.96))
    assert math.isnan(S.bland_altman([1.0], [0.0])[1])


def test_icc_identical_and_shrout_fleiss() -> None:
    v = np.array([1.0, 5.0, 2.0, 8.0])
    assert S.icc(np.column_stack([v, v]), "2,1") == pytest.approx(1.0)
    assert S.icc(np.column_stack([v, v]), "3,1") == pytest.approx(1.0)
    assert round(S.icc(SHROUT_FLEISS, "2,1"), 2) == 0.29
    assert round(S.icc(SHROUT_FLEISS, "3,1"), 2) == 0.71
    assert S.icc(np.column_stack([v, v + 3]), "3,1") == pytest.approx(1.0)  # consistency ignores bias
    assert S.icc(np.column_stack([v, v + 3]), "2,1") < 1.0  # absolute agreement does not
    with pytest.raises(ValueError, match="kind"):
        S.icc(SHROUT_FLEISS, "1,1")


def test_pearson_r() -> None:
    assert S.pearson_r([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) > 0.99
    assert math.isnan(S.pearson_r([1.0, 2.0], [3.0, 3.0]))


def test_empty_groups_give_nan_not_errors() -> None:
    lesions_only = S.summarize(_table().iloc[:3], DIAG)
    assert math.isnan(lesions_only["sham_fp_rate"]) and math.isnan(lesions_only["sham_fp_ci_high"])
    assert lesions_only["n_sham"] == 0
    shams_only = S.summarize(_table().iloc[3:], DIAG)
    assert math.isnan(shams_only["dice_lesion"]) and math.isnan(shams_only["detection_rate"])
    assert math.isnan(shams_only["hd95_mm"]) and math.isnan(shams_only["volume_icc"])
    empty = S.summarize(_table().iloc[:0], DIAG)
    assert tuple(empty) == S.SUMMARY_KEYS
    assert (empty["n_lesion"], empty["n_sham"]) == (0, 0)
    assert all(math.isnan(v) for k, v in empty.items() if not k.startswith("n_"))


# --- Volumetry per trained model -------------------------------------------------------------------------------

def _models(errors: np.ndarray, shams: int = 0, sham_volume: float = 0.0) -> pd.DataFrame:
    """One row per model (row of ``errors``) x scan: lesions of 40..40+10k mm3 predicted with the given errors."""
    rows = []
    for r, err in enumerate(np.atleast_2d(errors)):
        for c, e in enumerate(err):
            true = 40.0 + 10 * c
            rows.append({"arm": "a", "sample_size": 4, "repeat": r, "case_id": f"l{c}", "group": "MCAo",
                         "true_volume_mm3": true, "pred_volume_mm3": true + e})
        rows += [{"arm": "a", "sample_size": 4, "repeat": r, "case_id": f"s{c}", "group": "sham",
                  "true_volume_mm3": 0.0, "pred_volume_mm3": sham_volume * (c == r)} for c in range(shams)]
    return pd.DataFrame(rows)


def test_loa_confidence_hand_computed_and_bland_altman_1999_approximation() -> None:
    out = S.loa_confidence(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # sd = sqrt(2.5) = 1.5811; limits 3 -/+ 3.0990; t(0.975, 4) = 2.7764
    assert (out["bias"], out["loa_low"], out["loa_high"]) == pytest.approx((3.0, -0.09903, 6.09903), abs=1e-4)
    assert (out["bias_ci_low"], out["bias_ci_high"]) == pytest.approx((3 - 1.96324, 3 + 1.96324), abs=1e-4)
    # SE(limit) = 1.5811 * sqrt(1/5 + 1.96^2/8) = 1.30401; half-width 2.7764 * 1.30401 = 3.62052
    assert (out["loa_high_ci_low"], out["loa_high_ci_high"]) == pytest.approx((6.09903 - 3.62052, 6.09903 + 3.62052),
                                                                              abs=1e-3)
    big = np.random.default_rng(1).normal(2.0, 5.0, 400)
    wide = S.loa_confidence(big)
    sd = big.std(ddof=1)  # Bland & Altman's rule of thumb: SE(limit) ~ sqrt(3 sd^2 / n)
    assert (wide["loa_low_ci_high"] - wide["loa_low"]) == pytest.approx(1.96 * np.sqrt(3 * sd**2 / 400), rel=0.01)
    assert all(math.isnan(out) for k, out in S.loa_confidence(np.array([1.0])).items() if "ci" in k)


def _per_model(cases: pd.DataFrame) -> list[dict]:
    return [S.summarize(g.assign(dice=0.5, hd95_mm=1.0), DIAG) for _, g in cases.groupby("repeat")]


def test_volume_agreement_ignores_shams_and_hand_values() -> None:
    errors = np.array([[10.0, -5.0, 0.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    plain = _per_model(_models(errors))
    with_shams = _per_model(_models(errors, shams=3, sham_volume=7.0))
    for a, b in zip(plain, with_shams):
        assert {k: a[k] for k in S.VOLUME_KEYS} == pytest.approx({k: b[k] for k in S.VOLUME_KEYS}, nan_ok=True)
    first = plain[0]
    assert first["n_lesion"] == 4 and first["volume_bias_mm3"] == pytest.approx(2.5)
    assert first["volume_rel_error"] == pytest.approx(np.mean([10 / 40, -5 / 50, 0, 5 / 70]))
    assert first["volume_abs_rel_error"] == pytest.approx(np.mean([10 / 40, 5 / 50, 0, 5 / 70]))
    true = 40.0 + 10 * np.arange(4)
    assert first["volume_icc"] == pytest.approx(S.icc(np.column_stack([true + errors[0], true]), "2,1"))
    assert first["volume_pearson_r"] == pytest.approx(np.corrcoef(true + errors[0], true)[0, 1])
    second = plain[1]  # a constant offset: zero-width limits, ICC below 1 (absolute agreement)
    assert second["volume_loa_low_mm3"] == pytest.approx(2.0) and second["volume_loa_high_mm3"] == pytest.approx(2.0)
    assert second["volume_icc"] < 1.0
    shams = _per_model(_models(errors, shams=3, sham_volume=7.0))
    assert [x["n_sham"] for x in shams] == [3, 3] and [x["sham_fp_rate"] for x in shams] == pytest.approx([1 / 3] * 2)
    assert [x["sham_fp_volume_mm3"] for x in shams] == pytest.approx([7 / 3, 7 / 3])
    assert [x["sham_fp_volume_max_mm3"] for x in shams] == [7.0, 7.0]


def test_the_test_only_volumetry_helpers_are_gone() -> None:
    """One implementation (summarize -> volume_agreement) serves MLflow, the registry, metrics/test.json, report."""
    for name in ("volume_agreement_per_model", "sham_volume_per_model", "volume_agreement_over_models"):
        assert not hasattr(S, name)


def test_arm_limits_are_for_a_new_model_on_a_new_scan() -> None:
    """Models that differ in bias: the arm's limits are wider than the average of the per-model limits (which
    cover a new model's new scan about 75-80% of the time when the between-model SD equals the within-model SD)
    and cover it close to 95% (coverage measured here; stated in the docstring and the README)."""
    rng = np.random.default_rng(8)
    hits, averaged_hits = [], []
    for _ in range(400):
        d = 5.0 + rng.normal(0, 10, (3, 1)) + rng.normal(0, 10 / np.sqrt(2), (1, 30)) + rng.normal(0, 10 / np.sqrt(2),
                                                                                                     (3, 30))
        arm = S.arm_volume_agreement(d)
        new = 5.0 + rng.normal(0, 10) + rng.normal(0, 10)
        hits.append(arm["arm_volume_loa_low_mm3"] <= new <= arm["arm_volume_loa_high_mm3"])
        limits = np.array([[S.loa_confidence(x)["loa_low"], S.loa_confidence(x)["loa_high"]] for x in d]).mean(axis=0)
        averaged_hits.append(limits[0] <= new <= limits[1])
    assert 0.91 <= np.mean(hits) <= 0.98 and np.mean(averaged_hits) < 0.86
    one = S.arm_volume_agreement(np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))  # a pure model offset of 2
    assert one["arm_volume_bias_mm3"] == pytest.approx(3.0) and one["arm_volume_sd_between_models_mm3"] > 1.0
    assert one["arm_volume_bias_ci_low_mm3"] < 3.0 < one["arm_volume_bias_ci_high_mm3"]
    assert math.isnan(S.arm_volume_agreement(np.ones((1, 5)))["arm_volume_loa_low_mm3"])


def test_lesion_volume_errors_is_models_by_lesion_scans() -> None:
    errors = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_allclose(S.lesion_volume_errors(_models(errors, shams=2, sham_volume=3.0)), errors)
