"""Statistics over repeated trainings: Holm and compare_arms (run-level inference, trained models and cases
crossed) (pure, fast)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from lesionseg.evaluation import statistics as T

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy on empty or undefined input; not a leak from an earlier test


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


# --- compare_arms: run-level inference with trained models and cases crossed ------------------------------------

def _long(diff_by_size: dict, base: np.ndarray | None = None) -> pd.DataFrame:
    """Arms 'T' and 'C' whose per-model x case values differ by the given (repeats x cases) matrices."""
    rows = []
    for n, diff in diff_by_size.items():
        diff = np.asarray(diff, dtype=float)
        b = np.full(diff.shape[1], 0.6) if base is None else base
        for r in range(diff.shape[0]):
            for c in range(diff.shape[1]):
                rows.append({"arm": "C", "sample_size": n, "repeat": r, "case_id": f"c{c}", "dice": b[c]})
                rows.append({"arm": "T", "sample_size": n, "repeat": r, "case_id": f"c{c}", "dice": b[c] + diff[r, c]})
    return pd.DataFrame(rows)


def test_cell_stats_equal_statsmodels_two_way_anova() -> None:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    d = np.random.default_rng(7).normal(0, 1, (4, 6)) + np.arange(6) * 0.3
    long = pd.DataFrame({"d": d.ravel(), "r": np.repeat(np.arange(4), 6), "c": np.tile(np.arange(6), 4)})
    table = anova_lm(smf.ols("d ~ C(r) + C(c)", long).fit())
    ms = table["sum_sq"] / table["df"]
    cs = T.cell_stats(d)
    assert cs.v_run * 6 == pytest.approx(ms["C(r)"]) and cs.v_case * 4 == pytest.approx(ms["C(c)"])
    assert cs.ms_res == pytest.approx(ms["Residual"]) and cs.df_res == table.loc["Residual", "df"]
    assert cs.estimate == pytest.approx(d.mean())


def test_without_case_effects_it_is_the_run_level_paired_t_test() -> None:
    """Column means of the residual pattern are 0, so only the repeats vary: scipy's paired t on per-model means."""
    from scipy.stats import ttest_rel

    shifts = np.array([0.03, 0.05, -0.01, 0.04, 0.02])
    pattern = np.tile([0.01, -0.01, 0.02, -0.02], (5, 1)) * np.array([1, -1, 1, -1, 0])[:, None]
    df = _long({8: shifts[:, None] + pattern})
    out = T.compare_arms(df, [("T", "C")]).iloc[0]
    means = df.groupby(["arm", "repeat"])["dice"].mean()
    ref = ttest_rel(means["T"], means["C"])
    assert out["p_value"] == pytest.approx(ref.pvalue) and out["df"] == 4
    assert out["estimate"] == pytest.approx(shifts.mean()) and out["case_var"] == 0


def test_without_model_variation_it_is_the_one_sample_t_over_cases() -> None:
    """Every repeat gives the same per-case differences: the case x arm term alone, a t-test over cases."""
    from scipy.stats import ttest_1samp

    g = np.array([0.05, 0.02, 0.08, -0.01, 0.04, 0.03, 0.06])
    out = T.compare_arms(_long({8: np.tile(g, (3, 1))}), [("T", "C")], min_repeats=2).iloc[0]
    assert out["p_value"] == pytest.approx(ttest_1samp(g, 0).pvalue) and out["df"] == pytest.approx(6)
    assert out["se"] == pytest.approx(g.std(ddof=1) / np.sqrt(7))


def test_one_collapsed_case_does_not_make_an_arm_worse() -> None:
    """14 of 15 cases gain 0.02 and one loses 0.5 in every repeat: a case-level Wilcoxon (the old, removed analysis)
    calls that significantly worse (sign of the mean, significance of the ranks); the crossed analysis does not."""
    rng = np.random.default_rng(11)
    g = np.r_[np.full(14, 0.02), -0.5]
    diff = g + rng.normal(0, 0.005, (3, 15)) + rng.normal(0, 0.005, (3, 1))
    df = _long({8: diff}, base=rng.uniform(0.55, 0.9, 15))
    out = T.compare_arms(df, [("T", "C")], min_repeats=2).iloc[0]
    assert out["estimate"] < 0 and out["verdict"] == "inconclusive"


def test_verdicts_better_worse_equivalent_inconclusive() -> None:
    rng = np.random.default_rng(3)
    tiny = {n: rng.normal(0, 0.002, (6, 20)) + rng.normal(0, 0.002, (6, 1)) for n in (4, 8)}
    eq = T.compare_arms(_long(tiny), [("T", "C")], margin=0.03)
    assert eq["verdict"].tolist() == ["equivalent", "equivalent"]
    assert ((eq["ci_low_adj"] > -0.03) & (eq["ci_high_adj"] < 0.03)).all()
    noisy = {n: rng.normal(0, 0.05, (2, 9)) + rng.normal(0, 0.05, (2, 1)) for n in (4, 8, 16)}
    assert set(T.compare_arms(_long(noisy), [("T", "C")])["verdict"]) == {"inconclusive"}
    gain = {n: 0.1 + rng.normal(0, 0.01, (5, 12)) for n in (4, 8)}
    assert T.compare_arms(_long(gain), [("T", "C")])["verdict"].tolist() == ["better", "better"]
    assert T.compare_arms(_long(gain), [("C", "T")])["verdict"].tolist() == ["worse", "worse"]
    hd95 = T.compare_arms(_long(gain), [("T", "C")], higher_is_better=False)  # a larger HD95 is worse
    assert hd95["verdict"].tolist() == ["worse", "worse"]


def test_adjusted_ci_is_bonferroni_and_agrees_with_holm() -> None:
    rng = np.random.default_rng(5)
    sizes = {n: e + rng.normal(0, 0.03, (5, 10)) + rng.normal(0, 0.02, (5, 1))
             for n, e in ((4, 0.0), (8, 0.04), (16, 0.1))}
    out = T.compare_arms(_long(sizes), [("T", "C")])
    assert out["ci_level_adj"].tolist() == pytest.approx([1 - 0.05 / 3] * 3)
    for _, row in out.iterrows():  # the Bonferroni CI's half-width is the t quantile at alpha / (2 m)
        half = (row["ci_high_adj"] - row["ci_low_adj"]) / 2
        assert half == pytest.approx(row["se"] * stats.t.isf(0.05 / 6, row["df"]))
        if row["ci_low_adj"] > 0 or row["ci_high_adj"] < 0:
            assert row["p_holm"] < 0.05
    np.testing.assert_allclose(out["p_holm"], multipletests(out["p_value"], method="holm")[1])


def test_pools_between_model_variance_when_repeats_are_few() -> None:
    rng = np.random.default_rng(9)
    sizes = {n: rng.normal(0, 0.03, (2, 9)) for n in (4, 8, 16)}
    out = T.compare_arms(_long(sizes), [("T", "C")])
    assert out["method"].str.contains("pooled over n = 4, 8, 16 \\(df 3\\)").all()
    own = T.compare_arms(_long(sizes), [("T", "C")], min_repeats=2)
    assert not own["method"].str.contains("pooled").any()
    run_only = out[out["case_var"] == 0]
    assert (run_only["df"] == 3).all()


def test_unbalanced_design_skips_and_notes_without_crashing() -> None:
    rng = np.random.default_rng(2)
    df = _long({n: rng.normal(0.02, 0.03, (3, 8)) for n in (4, 8, 16)})
    df = df[~((df.arm == "T") & (df.sample_size == 16))]  # treatment never trained at 16
    df = df[~((df.arm == "C") & (df.sample_size == 8) & (df.repeat == 2))]  # one control repeat missing
    df.loc[(df.arm == "T") & (df.sample_size == 4) & (df.repeat == 0) & (df.case_id == "c3"), "dice"] = np.nan
    one = _long({32: rng.normal(0, 0.03, (1, 8))}).assign(repeat=0)
    out = T.compare_arms(pd.concat([df, one]), [("T", "C"), ("T", "unetr")], sample_sizes=[4, 8, 16, 32])
    rows = out.set_index(["control", "sample_size"])
    assert rows.loc[("C", 16), "verdict"] == "skipped" and "'T'" in rows.loc[("C", 16), "note"]
    assert "repeats [2] dropped" in rows.loc[("C", 8), "note"] and rows.loc[("C", 8), "n_repeats_paired"] == 2
    assert rows.loc[("C", 8), "n_models_treatment"] == 3 and rows.loc[("C", 8), "n_models_control"] == 2
    assert "1 cases dropped" in rows.loc[("C", 4), "note"] and rows.loc[("C", 4), "n_cases"] == 7
    assert rows.loc[("C", 32), "verdict"] in T.VERDICTS and "pooled" in rows.loc[("C", 32), "method"]
    assert (out.loc[out.control == "unetr", "verdict"] == "skipped").all()
    tested = out[out.verdict != "skipped"]
    assert tested["ci_level_adj"].tolist() == pytest.approx([1 - 0.05 / len(tested)] * len(tested))
    single = T.compare_arms(one, [("T", "C")])
    assert single["verdict"].tolist() == ["skipped"] and "2 paired repeats" in single["note"].iloc[0]
    assert T.compare_arms(one, []).columns.tolist() == list(T.ARMS_COLUMNS)
    with pytest.raises(ValueError, match="one row per model and case"):
        T.compare_arms(pd.concat([one, one]), [("T", "C")])


def test_detectable_difference_matches_statsmodels_power_and_the_normal_limit() -> None:
    from statsmodels.stats.power import TTestPower

    for df in (4.0, 12.0):
        d = TTestPower().solve_power(effect_size=None, nobs=df + 1, alpha=0.01, power=0.8)
        assert T._detectable(0.1, df, 0.01) == pytest.approx(d * np.sqrt(df + 1) * 0.1, rel=1e-3)
    assert T._detectable(1.0, 1e7, 0.05) == pytest.approx(stats.norm.isf(0.025) + stats.norm.isf(0.2), rel=1e-3)
    assert T._detectable(1.0, 1.0, 0.05) > 12.7 + 1.0  # df = 1, where statsmodels' solver stops at an effect of 10


def test_arms_are_opaque_values() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Arm:  # like lesionseg.arm.Arm: hashable, no order
        name: str

    df = _long({4: np.random.default_rng(1).normal(0.1, 0.01, (3, 6))})
    df["arm"] = df["arm"].map({"T": Arm("t"), "C": Arm("c")})
    out = T.compare_arms(df, [(Arm("t"), Arm("c"))], min_repeats=2)
    assert out["treatment"].iloc[0] == Arm("t") and out["verdict"].iloc[0] == "better"
