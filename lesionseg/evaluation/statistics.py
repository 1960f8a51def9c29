"""Statistics over repeated trainings for the report (pure).

Input is a long table with one row per arm x sample size x repeat x test case; column names default
to ``arm``, ``sample_size``, ``repeat``, ``case_id`` and the metric (e.g. ``dice``). Filter it first
(e.g. lesion scans only for Dice; the penalised HD95 rather than one with inf).

Primary analysis: :func:`compare_arms`. Every declared comparison (treatment arm vs control arm) gets a
pre-declared primary endpoint (the difference averaged over the declared sample sizes) and a row per sample
size; each is estimated, tested and given a confidence interval by one analysis in which both the trained model
and the test case are sources of variation, from that row's own repeats only, and ends in one of four verdicts
(:data:`VERDICTS`). The array functions (:func:`cell_tests`, :func:`holm`, :func:`adjusted_ci`,
:func:`verdicts`) are the same ones the calibration simulation (``benchmarks/inference_calibration.py``) runs on
thousands of studies at once.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import ndtr

ARM, SIZE, REPEAT, CASE = "arm", "sample_size", "repeat", "case_id"


def holm(pvalues: Iterable[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values along the last axis; NaN entries stay NaN and are not counted.

    Written out because statsmodels' ``multipletests(method="holm")`` runs ``gc.collect()`` on every call and
    takes one family at a time, and the calibration simulation adjusts thousands of families at once; the tests
    check it equals statsmodels.
    """
    p = np.asarray(pvalues if isinstance(pvalues, np.ndarray) else list(pvalues), dtype=float)
    if p.size == 0:
        return p.copy()
    nan = np.isnan(p)
    m = np.sum(~nan, axis=-1, keepdims=True)
    order = np.argsort(np.where(nan, np.inf, p), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    steps = ranked * (m - np.arange(p.shape[-1]))
    steps = np.minimum(np.fmax.accumulate(np.where(np.isnan(steps), -np.inf, steps), axis=-1), 1.0)
    out = np.empty_like(p)
    np.put_along_axis(out, order, steps, axis=-1)
    out[nan] = math.nan
    return out


# --- Run-level inference: the trained model and the case as sources of variation -------------------------------

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
SKIPPED = "skipped"
PRIMARY, PER_SIZE = "primary", "per size"
POWER = 0.8
DICE_RANGE = (-1.0, 1.0)  # a difference of two Dice values
ARMS_COLUMNS = (
    "comparison", "endpoint", "treatment", "control", "sample_size", "sizes", "estimate", "se", "df", "ci_low_adj",
    "ci_high_adj", "ci_level_adj", "p_value", "p_holm", "verdict", "mdd_80", "equivalence_needs",
    "n_models_treatment", "n_models_control", "n_repeats_paired", "n_cases", "run_var", "case_var", "res_var",
    "method", "note",
)
SATTERTHWAITE_MIN_REPEATS = 4  # below: df = R - 1 (see cell_tests)
_QUANTILES = (np.arange(1000) + 0.5) / 1000  # midpoint rule on the probability scale, for _detectable


@dataclass(frozen=True)
class CellTests:
    """One analysis of ``(..., R, n)`` paired differences (treatment - control; repeats x cases), per leading index.

    ``run_var``: variance over repeats of the per-repeat mean difference (df ``R - 1``); ``case_var``: the case x
    arm variance component (truncated at 0); ``res_var``: the residual mean square (df ``(R - 1)(n - 1)``).
    """

    estimate: np.ndarray
    se: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    run_var: np.ndarray
    case_var: np.ndarray
    res_var: np.ndarray
    n_repeats: int
    n_cases: int


def cell_tests(diff: np.ndarray) -> CellTests:
    """The crossed random-effects analysis of :func:`compare_arms` on every ``(R, n)`` matrix of ``diff``.

    ``d[r, c] = delta + a_r + g_c + e_rc``; the estimate is the mean of ``d`` and its variance
    ``var(a)/R + var(g)/n + var(e)/(R n)`` is estimated without bias by ``v_run / R + (v_case - ms_res / R) / n``
    from the two-way ANOVA mean squares (Searle, Casella & McCulloch 1992, ch. 4), the case part truncated at 0.
    Degrees of freedom: Satterthwaite (1946) over the three mean squares, never below the smallest df of the
    components used (so a barely positive case part cannot push df under 1); ``R - 1`` when the case part is 0.
    With fewer than :data:`SATTERTHWAITE_MIN_REPEATS` repeats the df is the between-model term's own, R - 1
    (conservative: exact when that term dominates): Satterthwaite's df, estimated from a term with 1 or 2 df, is
    too large exactly when that term happens to be small, and the tests rejected 6.6-8.5% at a nominal 5% with
    R = 2-3 and 30 cases (benchmarks/results_inference.md). Needs R >= 2 and n >= 2: the cell's own repeats estimate its between-model variance, nothing is pooled.
    Written out (closed form of the balanced layout) because statsmodels fits one OLS per call, too slow for the
    calibration simulation; the tests check both agree.
    """
    d = np.asarray(diff, dtype=float)
    r, n = d.shape[-2:]
    if r < 2 or n < 2:
        raise ValueError(f"cell_tests needs >= 2 repeats and >= 2 cases, got {r} x {n}")
    grand = d.mean(axis=(-2, -1))
    rows, cols = d.mean(axis=-1), d.mean(axis=-2)
    v_run, v_case = rows.var(axis=-1, ddof=1), cols.var(axis=-1, ddof=1)
    resid = d - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]
    df_run, df_case, df_res = r - 1, n - 1, (r - 1) * (n - 1)
    ms_res = np.sum(resid**2, axis=(-2, -1)) / df_res
    run_part, case_part = v_run / r, np.maximum(0.0, v_case - ms_res / r) / n
    var = run_part + case_part
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (run_part**2 / df_run + (v_case / n) ** 2 / df_case + (ms_res / (r * n)) ** 2 / df_res)
        satt = np.where(terms > 0, var**2 / terms, math.inf)
    df = np.where(case_part > 0, np.maximum(satt, min(df_run, df_case, df_res)), float(df_run))
    if r < SATTERTHWAITE_MIN_REPEATS:
        df = np.full_like(grand, float(df_run))
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(grand) / se
    p = np.where(se > 0, 2 * stats.t.sf(t, df), np.where(grand == 0, 1.0, 0.0))
    return CellTests(estimate=grand, se=se, df=df, p_value=p, run_var=v_run, case_var=case_part * n,
                     res_var=ms_res, n_repeats=r, n_cases=n)


def adjusted_ci(estimate: np.ndarray, se: np.ndarray, df: np.ndarray, level: float,
                bounds: tuple[float, float] | None = DICE_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided t interval at ``level``, clipped to ``bounds`` (the range a difference can take)."""
    crit = stats.t.isf((1 - level) / 2, df)
    low, high = estimate - crit * se, estimate + crit * se
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def verdicts(estimate: np.ndarray, ci_low: np.ndarray, ci_high: np.ndarray, p_holm: np.ndarray, alpha: float,
             margin: float, higher_is_better: bool = True) -> np.ndarray:
    """``better``/``worse`` when Holm-significant (by the estimate's sign), else ``equivalent`` when the adjusted CI
    lies inside ``[-margin, margin]`` (two one-sided tests, Schuirmann 1987), else ``inconclusive``."""
    est = np.asarray(estimate, dtype=float)
    good = (est > 0) == higher_is_better
    inside = (np.asarray(ci_low) >= -margin) & (np.asarray(ci_high) <= margin)
    return np.where(np.asarray(p_holm) < alpha, np.where(good, "better", "worse"),
                    np.where(inside, "equivalent", "inconclusive"))


def satterthwaite_df(terms: Sequence[tuple[float, float]]) -> float:
    """Satterthwaite (1946) degrees of freedom of ``sum(c_i * M_i)`` given ``(c_i * M_i, df_i)`` pairs."""
    total = sum(v for v, _ in terms)
    denom = sum(v * v / df for v, df in terms if df > 0)
    return total * total / denom if denom > 0 else math.inf


def _detectable(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest |difference| a two-sided t-test (``df``, level ``alpha``) detects with ``power``, given ``se``.

    Power = P(|Z + d/se| > c * S), S^2 ~ chi2_df / df, averaged over a quantile grid of S. Hand-written because
    statsmodels' ``TTestPower.solve_power`` caps the effect size at 10 (silently wrong at df ~ 1) and scipy's
    noncentral t returns NaN for df near 1 with a large noncentrality.
    """
    if not (se > 0 and df > 0 and math.isfinite(se)):
        return math.nan
    crit = float(stats.t.isf(alpha / 2, df)) if math.isfinite(df) else float(stats.norm.isf(alpha / 2))
    s = crit * (np.sqrt(stats.chi2.ppf(_QUANTILES, df) / df) if math.isfinite(df) else np.ones(1))

    def short(lam: float) -> float:
        return float(np.mean(ndtr(lam - s) + ndtr(-s - lam))) - power

    high = 2.0 * (crit + 1.0)
    while short(high) < 0:
        high *= 2.0
    return float(optimize.brentq(short, 0.0, high, xtol=1e-9)) * se


def detectable_difference(se: float, df: float, level_alpha: float, bounds: tuple[float, float] | None = DICE_RANGE
                          ) -> tuple[float, str]:
    """``(mdd_80, "")`` or ``(NaN, reason)`` where it cannot be estimated or exceeds any possible difference."""
    if not (math.isfinite(se) and se > 0):
        return math.nan, "detectable difference not estimable: no variation between the paired differences"
    mdd = _detectable(se, df, level_alpha)
    if bounds is not None and mdd > bounds[1]:
        return math.nan, (f"detectable difference not estimable: at df {df:.1f} even a difference of {bounds[1]:g} "
                          "(the largest possible) has < 80% power")
    return mdd, ""


def equivalence_needs(row: Mapping, margin: float, level: float, power: float = POWER) -> str:
    """What ``equivalent`` within ``+-margin`` would need at a true difference of 0, from this row's variance
    components: repeats R at its number of test scans, or test scans at its R (normal approximation with the
    adjusted level; at few repeats the t quantile makes it a little more)."""
    if margin <= 0:
        return "no equivalence margin declared"
    r, n = int(row["n_repeats_paired"]), int(row["n_cases"])
    res = float(row["res_var"])
    run = max(0.0, float(row["run_var"]) - res / n)  # sigma_a^2
    case = float(row["case_var"])  # sigma_g^2
    target = (margin / (stats.norm.isf((1 - level) / 2) + stats.norm.isf((1 - power) / 2))) ** 2

    def variance(rr: float, nn: float) -> float:
        return run / rr + case / nn + res / (rr * nn)

    if variance(r, n) <= target:
        return f"this design can show equivalence within +-{margin:g} at a true difference of 0"
    left = target - case / n
    need_r = math.ceil((run + res / n) / left) if left > 0 else None
    left = target - run / r
    need_n = math.ceil((case + res / r) / left) if left > 0 else None
    parts = [f"R >= {need_r} repeats with {n} test scans" if need_r else f"more than {n} test scans whatever R (at "
             f"{n} the case term alone exceeds the margin)", f">= {need_n} test scans at R = {r}" if need_n else
             f"more than R = {r} repeats whatever the test scans (at R = {r} the between-model term alone exceeds "
             "the margin)"]
    return f"equivalent within +-{margin:g} (80% at a true 0) would need " + " or ".join(parts)


# --- The report's analysis over a long table ---------------------------------------------------------------------

def compare_arms(
    cases: pd.DataFrame, comparisons: Sequence[tuple[object, object]], *, value: str = "dice", alpha: float = 0.05,
    margin: float = 0.03, higher_is_better: bool = True, sample_sizes: Sequence[object] | None = None,
    primary_sizes: Sequence[object] | None = None, bounds: tuple[float, float] | None = DICE_RANGE,
    arm: str = ARM, size: str = SIZE, repeat: str = REPEAT, case: str = CASE, detectable: bool = True,
) -> pd.DataFrame:
    """Each declared ``(treatment, control)``: its primary endpoint, then each sample size; estimate, adjusted CI,
    p, Holm p, verdict.

    ``cases`` has one row per arm x sample size x repeat x case (one trained model = arm x size x repeat)
    with the metric in ``value``; repeats with the same label share their subset draw and seed across arms.
    Sample sizes: ``sample_sizes``, else every size where both arms were trained (where none, one skipped row
    that says where each arm was trained).

    Method (one analysis gives estimate, CI and p; :func:`cell_tests`). At one sample size, the paired differences
    ``d[r, c] = treatment - control`` over the R repeats both arms have and the n cases all those models scored
    follow the crossed random-effects model of Clark (1973, "The language-as-fixed-effect fallacy"), trained
    models in the role of subjects and test cases in the role of items; when case effects are 0 this is the
    run-level t-test paired by repeat. Each row uses only its own repeats: run-to-run variance shrinks as n grows,
    so no variance is pooled over sizes, and a size with fewer than 2 paired repeats is skipped with the reason.

    Primary endpoint (pre-declared, ``primary_sizes``; none when None; only for a comparison whose arms were both
    trained at every one of those sizes): per repeat and case, the difference
    averaged over those sizes, analysed by the same model; its run variance is that of the per-repeat average,
    estimated by the repeats themselves whatever the variance at each size. It uses the repeats that have both
    arms at every primary size: a crashed run drops its repeat from the primary endpoint and only from the
    sizes it is missing at, and ``note`` says so; the method never changes.

    One family: the primary endpoints and every per-size row are Holm-adjusted together (Holm 1979); CIs are
    Bonferroni (level ``1 - alpha/m``), clipped to ``bounds``. ``verdict``: :func:`verdicts`. ``mdd_80``: the
    smallest |difference| the row's SE and df detect with 80% power at the Bonferroni level, NaN with the reason
    in ``note`` where it cannot be estimated. ``equivalence_needs``: :func:`equivalence_needs`. A row that cannot
    be estimated has verdict ``skipped`` and the reason in ``note``; it does not count in m.

    Calibrated by simulation (``benchmarks/inference_calibration.py``, results in ``results_inference.md``).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    data = cases[[arm, size, repeat, case, value]]
    if data.duplicated([arm, size, repeat, case]).any():
        raise ValueError(f"cases has several rows per {arm} x {size} x {repeat} x {case}; one row per model and case")
    sizes = list(sample_sizes) if sample_sizes is not None else None
    rows = []
    for treatment, control in comparisons:
        rows += _one_comparison(data, treatment, control, sizes, primary_sizes, value, arm, size, repeat, case)
    _adjust(rows, alpha, margin, higher_is_better, detectable, bounds)
    return pd.DataFrame(rows, columns=list(ARMS_COLUMNS))


def _sort_key(v: object) -> tuple:
    return (str(type(v)), v)


# Why a repeat has no partner: the other arm may not declare it (the tuned arm's R = 1) or its run failed.
_UNPAIRED = "in one arm only: not declared in the other, e.g. tune.repeats, or missing or crashed"


def _one_comparison(data: pd.DataFrame, treatment: object, control: object, sizes: list | None,
                    primary_sizes: Sequence[object] | None, value: str, arm: str, size: str, repeat: str,
                    case: str) -> list[dict]:
    """Rows (before adjustment): the primary endpoint where both arms were trained at all its sizes, then each
    sample size."""
    mine = data[data[arm].isin([treatment, control])]
    wide = mine.set_index([size, arm, repeat, case])[value].unstack(case)
    models: dict[tuple, dict[object, np.ndarray]] = {}
    for (n, a, r), values in zip(wide.index, wide.to_numpy(dtype=float)):
        models.setdefault((n, a), {})[r] = values
    trained = sorted({n for n, _ in models}, key=_sort_key)
    both = [n for n in trained if (n, treatment) in models and (n, control) in models]
    base = {"treatment": treatment, "control": control, "n_models_treatment": 0, "n_models_control": 0,
            "n_repeats_paired": 0, "n_cases": 0, "method": "", "note": ""}
    if sizes is None and not both:  # one row, not one per size of the arm that was trained
        where = {a: [n for n in trained if (n, a) in models] for a in (treatment, control)}
        return [{**base, "comparison": f"{treatment} vs {control}", "endpoint": PER_SIZE, "sample_size": math.nan,
                 "sizes": "", "note": "skipped: no sample size where both arms were trained (" + "; ".join(
                     f"{a!s} at n = {', '.join(map(str, v)) or 'none'}" for a, v in where.items()) + ")"}]
    sizes = sizes if sizes is not None else both
    out = []
    primary = list(primary_sizes) if primary_sizes is not None else []
    if primary and all((n, a) in models for n in primary for a in (treatment, control)):
        out.append(_primary_row(models, treatment, control, primary, base))
    for n in sizes:
        row = {**base, "comparison": f"{treatment} vs {control} @ n={n}", "endpoint": PER_SIZE, "sample_size": n,
               "sizes": str(n)}
        missing = [a for a in (treatment, control) if (n, a) not in models]
        if missing:
            row["note"] = f"skipped: no results for {', '.join(map(repr, missing))} at n={n}"
        else:
            t_models, c_models = models[(n, treatment)], models[(n, control)]
            row.update(n_models_treatment=len(t_models), n_models_control=len(c_models))
            shared = [r for r in t_models if r in c_models]
            unpaired = sorted(set(t_models).symmetric_difference(c_models), key=str)
            notes = [f"repeats {unpaired} dropped at n={n} ({_UNPAIRED})"] if unpaired else []
            diff = np.array([t_models[r] - c_models[r] for r in shared]).reshape(len(shared), -1)
            row.update(_cell_row(diff, notes))
        out.append(row)
    return out


def _primary_row(models: Mapping, treatment: object, control: object, primary: list, base: dict) -> dict:
    """The pre-declared primary endpoint: per repeat and case, the difference averaged over ``primary`` sizes."""
    repeats = [set(models[(n, a)]) for n in primary for a in (treatment, control)]
    shared = sorted(set.intersection(*repeats), key=str)
    dropped = sorted(set.union(*repeats) - set(shared), key=str)
    notes = [f"repeats {dropped} dropped from the primary endpoint (at some size {_UNPAIRED})"] \
        if dropped else []
    per_size = [np.array([models[(n, treatment)][r] - models[(n, control)][r] for r in shared])
                .reshape(len(shared), -1) for n in primary]
    diff = np.mean(per_size, axis=0) if len({d.shape for d in per_size}) == 1 else np.empty((0, 0))
    label = ", ".join(map(str, primary))
    row = {**base, "comparison": f"{treatment} vs {control}, mean over n = {label}", "endpoint": PRIMARY,
           "sample_size": math.nan, "sizes": label,
           "n_models_treatment": sum(len(models[(n, treatment)]) for n in primary),
           "n_models_control": sum(len(models[(n, control)]) for n in primary)}
    row.update(_cell_row(diff, notes))
    return row


def _cell_row(diff: np.ndarray, notes: list[str]) -> dict:
    """Estimate, SE, df, two-sided p and the method text of one row, or the reason it is skipped."""
    complete = np.isfinite(diff).all(axis=0) if diff.size else np.zeros(diff.shape[1] if diff.ndim == 2 else 0, bool)
    if diff.shape[0] and not complete.all():
        notes = [*notes, f"{int((~complete).sum())} cases dropped (missing, NaN or inf for some model)"]
    diff = diff[:, complete] if diff.ndim == 2 else diff
    r, n = diff.shape if diff.ndim == 2 else (0, 0)
    out = {"n_repeats_paired": r, "n_cases": n}
    if r < 2 or n < 2:
        reason = ("the between-model variance needs >= 2 paired repeats" if r < 2 else
                  "needs >= 2 cases scored by all its models")
        return {**out, "note": "; ".join([*notes, f"skipped: {r} paired repeats, {n} cases ({reason}; nothing "
                                          "is pooled from other sizes)"])}
    res = cell_tests(diff)
    df = float(res.df)
    method = (f"paired by repeat; trained models and cases crossed random (Clark 1973), this row's own {r} repeats; "
              + (f"t, Satterthwaite df {df:.1f} (floor {min(r - 1, n - 1)})" if r >= SATTERTHWAITE_MIN_REPEATS else
               f"t, df {df:.0f} (R - 1: too few repeats for Satterthwaite)") + "; Holm p; Bonferroni CI")
    return {**out, "estimate": float(res.estimate), "se": float(res.se), "df": df, "p_value": float(res.p_value),
            "run_var": float(res.run_var), "case_var": float(res.case_var), "res_var": float(res.res_var),
            "method": method, "note": "; ".join(notes)}


def _adjust(rows: list[dict], alpha: float, margin: float, higher_is_better: bool, detectable: bool,
            bounds: tuple[float, float] | None) -> None:
    """Fill in Holm p, adjusted CIs, verdicts, detectable differences and equivalence needs (in place)."""
    tested = [r for r in rows if "p_value" in r]
    if tested:
        arrays = {k: np.array([[r[k] for r in tested]], dtype=float) for k in ("estimate", "se", "df", "p_value")}
        primary = np.array([r["endpoint"] == PRIMARY for r in tested])
        fam = family_verdicts(**arrays, primary=primary, alpha=alpha, margin=margin,
                              higher_is_better=higher_is_better, bounds=bounds)
        for i, row in enumerate(tested):
            row.update(p_holm=float(fam["p_holm"][0, i]), ci_level_adj=float(fam["level"][i]),
                       ci_low_adj=float(fam["ci_low"][0, i]), ci_high_adj=float(fam["ci_high"][0, i]),
                       verdict=str(fam["verdict"][0, i]))
            if row["endpoint"] == PER_SIZE and primary.any() and not fam["gate_open"][0]:
                row["note"] = "; ".join(filter(None, [row["note"], "not tested for a difference: the primary "
                                                      "endpoint(s) not all significant (serial gatekeeping)"]))
            row["equivalence_needs"] = equivalence_needs(row, margin, row["ci_level_adj"])
            if detectable:
                row["mdd_80"], why = detectable_difference(row["se"], row["df"], 1 - row["ci_level_adj"], bounds)
                if why:
                    row["note"] = "; ".join(filter(None, [row["note"], why]))
    for row in rows:
        row.setdefault("verdict", SKIPPED)


def family_verdicts(estimate: np.ndarray, se: np.ndarray, df: np.ndarray, p_value: np.ndarray, primary: np.ndarray,
                    alpha: float, margin: float, higher_is_better: bool = True,
                    bounds: tuple[float, float] | None = DICE_RANGE) -> dict[str, np.ndarray]:
    """Verdicts of every study's rows (arrays ``(studies, rows)``; ``primary``: which rows are primary endpoints;
    a NaN p is a skipped row, not counted).

    Serial gatekeeping (Dmitrienko & Tamhane 2007), which holds the family-wise error at ``alpha``: the primary
    endpoints are Holm-adjusted among themselves at ``alpha`` with Bonferroni CIs (level ``1 - alpha/m1``); the
    per-size rows are Holm-adjusted among themselves, CIs at ``1 - alpha/m2``, and may be called ``better`` or
    ``worse`` only when every primary endpoint was. ``equivalent`` needs the row's adjusted CI inside the margin.
    Without primary rows the per-size rows are the one family. Returns ``p_holm``, ``ci_low``, ``ci_high``,
    ``level`` (per row), ``verdict`` and ``gate_open`` (per study).
    """
    p = np.asarray(p_value, dtype=float)
    primary = np.asarray(primary, dtype=bool)
    p_holm = np.full(p.shape, math.nan)
    level = np.full(p.shape[-1], math.nan)
    for part in (primary, ~primary):
        if part.any():
            p_holm[..., part] = holm(p[..., part])
            m = max(int(np.sum(~np.isnan(p[0, part]))), 1)
            level[part] = 1 - alpha / m
    low, high = adjusted_ci(np.asarray(estimate, dtype=float), np.asarray(se, dtype=float),
                            np.asarray(df, dtype=float), level, bounds)
    gate_open = np.all((p_holm < alpha) | ~primary | np.isnan(p), axis=-1) if primary.any() else \
        np.ones(p.shape[:-1], dtype=bool)
    significant = (p_holm < alpha) & (primary | gate_open[..., None])
    verdict = verdicts(estimate, low, high, np.where(significant, 0.0, 1.0), alpha, margin, higher_is_better)
    verdict = np.where(np.isnan(p), SKIPPED, verdict)
    return {"p_holm": p_holm, "ci_low": low, "ci_high": high, "level": level, "verdict": verdict,
            "gate_open": gate_open}
