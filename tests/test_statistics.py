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


def test_cell_tests_equal_statsmodels_two_way_anova() -> None:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    d = np.random.default_rng(7).normal(0, 1, (4, 6)) + np.arange(6) * 0.3
    long = pd.DataFrame({"d": d.ravel(), "r": np.repeat(np.arange(4), 6), "c": np.tile(np.arange(6), 4)})
    table = anova_lm(smf.ols("d ~ C(r) + C(c)", long).fit())
    ms = table["sum_sq"] / table["df"]
    cs = T.cell_tests(d)
    assert cs.run_var * 6 == pytest.approx(ms["C(r)"]) and cs.res_var == pytest.approx(ms["Residual"])
    assert cs.case_var == pytest.approx(max(0.0, (ms["C(c)"] - ms["Residual"]) / 4))
    assert cs.estimate == pytest.approx(d.mean())
    batch = T.cell_tests(np.stack([d, d + 1.0, 2 * d]))  # many studies at once, as the calibration runs it
    assert batch.p_value[0] == pytest.approx(float(cs.p_value)) and batch.se[2] == pytest.approx(2 * float(cs.se))


def test_holm_over_many_families_at_once_equals_one_at_a_time() -> None:
    p = np.random.default_rng(4).uniform(0, 0.1, (50, 5))
    p[3, 2] = np.nan
    rows = T.holm(p)
    for i in range(50):
        np.testing.assert_allclose(rows[i], T.holm(p[i]))


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
    out = T.compare_arms(_long({8: np.tile(g, (4, 1))}), [("T", "C")]).iloc[0]
    assert out["p_value"] == pytest.approx(ttest_1samp(g, 0).pvalue) and out["df"] == pytest.approx(6)
    assert out["se"] == pytest.approx(g.std(ddof=1) / np.sqrt(7))


def test_one_collapsed_case_does_not_make_an_arm_worse() -> None:
    """14 of 15 cases gain 0.02 and one loses 0.5 in every repeat: a case-level Wilcoxon (the old, removed analysis)
    calls that significantly worse (sign of the mean, significance of the ranks); the crossed analysis does not."""
    rng = np.random.default_rng(11)
    g = np.r_[np.full(14, 0.02), -0.5]
    diff = g + rng.normal(0, 0.005, (3, 15)) + rng.normal(0, 0.005, (3, 1))
    df = _long({8: diff}, base=rng.uniform(0.55, 0.9, 15))
    out = T.compare_arms(df, [("T", "C")]).iloc[0]
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


def test_each_size_uses_its_own_repeats_and_a_crashed_run_changes_no_method() -> None:
    """Run SD 0.10 at n=4 and 0.01 at n=16: nothing is pooled, and when one run crashes the other sizes keep their
    repeats, the primary endpoint drops that repeat, and the notes say so; the method is the same in every row."""
    rng = np.random.default_rng(9)
    sizes = {n: rng.normal(0, sd, (4, 1)) + rng.normal(0, 0.03, (4, 12)) for n, sd in ((4, 0.1), (8, 0.03), (16, 0.01))}
    full = T.compare_arms(_long(sizes), [("T", "C")], primary_sizes=[4, 8, 16])
    crashed = _long(sizes)
    crashed = crashed[~((crashed.arm == "T") & (crashed.sample_size == 4) & (crashed.repeat == 0))]
    out = T.compare_arms(crashed, [("T", "C")], primary_sizes=[4, 8, 16]).set_index("sizes")
    assert out["endpoint"].tolist() == [T.PRIMARY, T.PER_SIZE, T.PER_SIZE, T.PER_SIZE]
    assert out.loc["4, 8, 16", "n_repeats_paired"] == 3 and "dropped from the primary endpoint" in out.loc["4, 8, 16", "note"]
    assert out.loc["4", "n_repeats_paired"] == 3 and "repeats [0] dropped at n=4" in out.loc["4", "note"]
    assert out.loc[["8", "16"], "n_repeats_paired"].tolist() == [4, 4] 
    assert not out.loc[["8", "16"], "note"].str.contains("dropped").any()
    assert not out["method"].str.contains("pool").any() and not full["method"].str.contains("pool").any()
    for frame in (full.set_index("sizes"), out):  # each size's run variance is its own
        assert frame.loc["4", "run_var"] > 10 * frame.loc["16", "run_var"]
    assert (full.set_index("sizes").loc[["8", "16"], ["estimate", "se", "df"]].to_numpy()
            == out.loc[["8", "16"], ["estimate", "se", "df"]].to_numpy()).all()


def test_df_is_never_below_the_smallest_components_own() -> None:
    """A barely positive case part makes Satterthwaite's df fall below 1 (the demo's UNet row read 'adjusted CI
    [-1.135, +1.191], detectable difference 1.49'); the floor is the between-model term's df, R - 1."""
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(3000):
        d = rng.normal(0, 0.05, (4, 1)) + rng.normal(0, 0.05, (4, 6))
        cs = T.cell_tests(d)
        r, n = d.shape
        run_part, case_part = cs.run_var / r, cs.case_var / n
        if case_part <= 0:
            continue
        v_case = cs.case_var + cs.res_var / r
        raw = T.satterthwaite_df([(run_part, r - 1), (v_case / n, n - 1), (-cs.res_var / (r * n), (r - 1) * (n - 1))])
        if raw < r - 1:
            found += 1
            assert float(cs.df) == r - 1
    assert found > 0, "the seed gives cells whose raw Satterthwaite df is below R - 1"
    few = T.cell_tests(rng.normal(0, 0.05, (3, 8)) + rng.normal(0, 0.05, (1, 8)))
    assert float(few.df) == 2  # R < 4: the between-model df, R - 1


def test_ci_stays_in_the_dice_range_and_an_undetectable_difference_says_why() -> None:
    rng = np.random.default_rng(1)
    noisy = {n: rng.normal(0, 0.3, (2, 1)) + rng.normal(0, 0.1, (2, 9)) for n in (4, 8, 16)}
    out = T.compare_arms(_long(noisy), [("T", "C")])
    assert (out["ci_low_adj"] >= -1).all() and (out["ci_high_adj"] <= 1).all()
    assert out["mdd_80"].isna().all() and out["note"].str.contains("detectable difference not estimable").all()
    assert out["equivalence_needs"].str.contains("would need").all()


def test_gatekeeping_per_size_rows_only_after_the_primary_endpoint() -> None:
    rng = np.random.default_rng(6)
    sizes = {4: 0.15 + rng.normal(0, 0.005, (4, 10)), 8: -0.15 + rng.normal(0, 0.005, (4, 10)),
             16: rng.normal(0, 0.005, (4, 10))}
    out = T.compare_arms(_long(sizes), [("T", "C")], primary_sizes=[4, 8, 16]).set_index("sizes")
    assert out.loc["4, 8, 16", "verdict"] != "better" and out.loc["4", "p_holm"] < 0.05
    assert out.loc["4", "verdict"] == "inconclusive" and "serial gatekeeping" in out.loc["4", "note"]
    assert out.loc["16", "verdict"] == "equivalent"
    opened = T.compare_arms(_long({4: sizes[4], 8: 0.05 + sizes[16], 16: sizes[16]}), [("T", "C")],
                            primary_sizes=[4, 8, 16]).set_index("sizes")
    assert opened.loc["4, 8, 16", "verdict"] == "better" and opened.loc["4", "verdict"] == "better"
    assert opened.loc["4, 8, 16", "ci_level_adj"] == pytest.approx(0.95)  # the primary family has one member
    assert opened.loc["4", "ci_level_adj"] == pytest.approx(1 - 0.05 / 3)


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
    assert rows.loc[("C", 32), "verdict"] == "skipped" and "nothing is pooled" in rows.loc[("C", 32), "note"]
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
    out = T.compare_arms(df, [(Arm("t"), Arm("c"))])
    assert out["treatment"].iloc[0] == Arm("t") and out["verdict"].iloc[0] == "better"
