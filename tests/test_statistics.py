"""Statistics over repeats: Holm, paired Wilcoxon + BCa, declared comparisons, mixed model (pure, fast)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap, wilcoxon
from statsmodels.stats.multitest import multipletests

from lesionseg.evaluation import statistics as T

NR = 999  # bootstrap resamples in tests
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy on empty or undefined input; not a leak from an earlier test


def _cases(n: int = 30, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.uniform(0.4, 0.8, n), index=[f"c{i}" for i in range(n)])


def _study(effect: float = 0.08, case_sd: float = 0.1, seed: int = 1) -> pd.DataFrame:
    """30 cases x 2 arms x 2 sizes x 3 repeats; finetune adds ``effect``, n=8 adds 0.05."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(30):
        u = rng.normal(0, case_sd)
        for arm, a_eff in (("scratch", 0.0), ("finetune", effect)):
            for n, n_eff in ((4, 0.0), (8, 0.05)):
                for r in range(3):
                    rows.append({"case_id": f"c{c}", "arm": arm, "sample_size": n, "repeat": r,
                                 "dice": 0.6 + u + a_eff + n_eff + rng.normal(0, 0.03)})
    return pd.DataFrame(rows)


def test_holm_matches_statsmodels_and_textbook() -> None:
    p = [0.001, 0.2, 0.03, 0.04, 0.5, 0.012]
    np.testing.assert_allclose(T.holm(p), multipletests(p, method="holm")[1])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    np.testing.assert_allclose(T.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_skips_nan_and_empty() -> None:
    out = T.holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])
    assert T.holm([]).size == 0


def test_per_case_over_repeats() -> None:
    df = pd.DataFrame({"arm": ["a"] * 4, "sample_size": [4] * 4, "case_id": ["x", "x", "y", "y"],
                       "repeat": [0, 1, 0, 1], "dice": [0.2, 0.4, 0.6, math.nan]})
    out = T.per_case_over_repeats(df)
    assert out["dice"].tolist() == pytest.approx([0.3, 0.6])
    assert out["n_repeats"].tolist() == [2, 1]


def test_paired_comparison_recovers_shift_and_sign() -> None:
    b = _cases()
    a = b + 0.1 + np.random.default_rng(2).normal(0, 0.03, b.size)
    res = T.paired_comparison(a, b.sample(frac=1.0, random_state=3), n_resamples=NR)  # aligned by case id
    assert res["n_cases"] == 30
    assert res["diff_ci_low"] < 0.1 < res["diff_ci_high"]
    assert res["diff_ci_low"] > 0 and res["mean_diff"] > 0 and res["p_value"] < 1e-3
    rev = T.paired_comparison(b, a, n_resamples=NR)
    assert rev["mean_diff"] == pytest.approx(-res["mean_diff"]) and rev["diff_ci_high"] < 0
    assert rev["p_value"] == pytest.approx(res["p_value"])  # two-sided
    assert res["p_value"] == pytest.approx(wilcoxon((a - b).to_numpy()).pvalue)
    assert T.paired_comparison(a, b, n_resamples=NR) == T.paired_comparison(a, b, n_resamples=NR)


def test_paired_comparison_degenerate_and_missing() -> None:
    b = _cases(8)
    same = T.paired_comparison(b, b, n_resamples=NR)
    assert (same["mean_diff"], same["diff_ci_low"], same["diff_ci_high"], same["p_value"]) == (0, 0, 0, 1)
    shift = T.paired_comparison(b + 0.25, b, n_resamples=NR)
    assert (shift["diff_ci_low"], shift["diff_ci_high"]) == pytest.approx((0.25, 0.25))
    partial = T.paired_comparison(b.iloc[:5].where(b.index[:5] != "c0"), b, n_resamples=NR)
    assert partial["n_cases"] == 4
    empty = T.paired_comparison(b.iloc[:0], b, n_resamples=NR)
    assert empty["n_cases"] == 0 and math.isnan(empty["p_value"])
    with pytest.raises(ValueError, match="repeated case ids"):
        T.paired_comparison(pd.concat([b, b]), b)


def test_bootstrap_mean_ci() -> None:
    x = np.random.default_rng(4).normal(0.5, 0.1, 40)
    low, high = T.bootstrap_mean_ci(x, n_resamples=NR)
    assert low < x.mean() < high and high - low < 0.15
    ref = bootstrap((x,), np.mean, method="BCa", random_state=0, n_resamples=NR).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert T.bootstrap_mean_ci(x, n_resamples=NR, seed=1) == T.bootstrap_mean_ci(x, n_resamples=NR, seed=1)
    assert T.bootstrap_mean_ci([0.3, 0.3, math.nan]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in T.bootstrap_mean_ci([]))


def test_arm_means() -> None:
    out = T.arm_means(T.per_case_over_repeats(_study()), n_resamples=NR)
    assert len(out) == 4 and (out["n_cases"] == 30).all()
    assert (out["ci_low"] < out["mean"]).all() and (out["mean"] < out["ci_high"]).all()


def test_compare_declared() -> None:
    pc = T.per_case_over_repeats(_study())
    noise = pc[pc.arm == "scratch"].assign(arm="noise")
    noise["dice"] += np.random.default_rng(5).normal(0, 0.02, len(noise))
    pc = pd.concat([pc, noise], ignore_index=True)
    declared = [("finetune", "scratch", 4), ("noise", "scratch", 4), ("finetune", "scratch", 16),
                ("unetr", "scratch", 8)]
    out = T.compare_declared(pc, declared, n_resamples=NR)
    assert list(out.columns) == list(T.COMPARISON_COLUMNS)
    assert out["direction"].tolist() == ["better", "no difference", "skipped", "skipped"]
    assert "'unetr'" in out["note"].iloc[3] and out["n_cases"].iloc[2] == 0
    np.testing.assert_allclose(out["p_holm"].iloc[:2], multipletests(out["p_value"].iloc[:2], method="holm")[1])
    assert out["significant"].tolist() == [True, False, False, False]
    assert out["diff_ci_low"].iloc[0] < 0.08 < out["diff_ci_high"].iloc[0]
    lower_better = T.compare_declared(pc, declared[:1], higher_is_better=False, n_resamples=NR)
    assert lower_better["direction"].tolist() == ["worse"]
    with pytest.raises(ValueError, match="per_case_over_repeats"):
        T.compare_declared(_study(), declared)


def test_between_repeat_sd_known_numbers() -> None:
    df = pd.DataFrame({"arm": ["a"] * 4 + ["b"] * 2, "sample_size": [4] * 6, "repeat": [0, 0, 1, 1, 0, 0],
                       "case_id": ["x", "y"] * 3, "dice": [0.4, 0.6, 0.6, 0.8, 0.5, 0.5]})
    out = T.between_repeat_sd(df).set_index("arm")
    assert out.loc["a", "mean"] == pytest.approx(0.6)
    assert out.loc["a", "between_repeat_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert out.loc["b", "n_repeats"] == 1 and math.isnan(out.loc["b", "between_repeat_sd"])


def test_mixed_model_recovers_arm_effect() -> None:
    res = T.mixed_model(_study(effect=0.08), reference="scratch")
    assert res.converged and res.note == ""
    eff = res.table.set_index("term").loc["arm[T.finetune]"]
    assert eff["coef"] == pytest.approx(0.08, abs=0.02)
    assert eff["ci_low"] < 0.08 < eff["ci_high"] and eff["p_value"] < 1e-6
    size = res.table.set_index("term").loc["sample_size[T.8]"]
    assert size["coef"] == pytest.approx(0.05, abs=0.02)
    assert res.case_var == pytest.approx(0.01, rel=0.6)


def test_mixed_model_degenerate_inputs_give_notes() -> None:
    one_arm = T.mixed_model(_study().query("arm == 'scratch'"))
    assert not one_arm.converged and "2 arms" in one_arm.note and one_arm.table.empty
    bad_ref = T.mixed_model(_study(), reference="unetr")
    assert "unetr" in bad_ref.note
    singular = T.mixed_model(_study(case_sd=0.0).assign(dice=0.5))  # no variance at all
    assert not singular.converged and singular.note
