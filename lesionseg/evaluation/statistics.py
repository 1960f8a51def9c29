"""Statistics over repeated trainings for the report (pure).

Input is a long table with one row per arm x sample size x repeat x test case; column names default
to ``arm``, ``sample_size``, ``repeat``, ``case_id`` and the metric (e.g. ``dice``). Filter it first
(e.g. lesion scans only for Dice; the penalised HD95 rather than one with inf).

Primary analysis: :func:`compare_arms`. Every declared comparison (treatment arm vs control arm) at every
sample size is estimated, tested and given a confidence interval by one analysis in which both the
trained model (arm x sample size x repeat) and the test case are sources of variation, and ends in one of
four verdicts (:data:`VERDICTS`). See its docstring for the method and what it follows.
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


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted.

    Written out (three lines) because statsmodels' ``multipletests(method="holm")`` runs ``gc.collect()`` on every
    call, 0.1 s in a process with many objects, and the calibration simulation calls this thousands of times;
    the tests check it equals statsmodels.
    """
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    steps = p[order] * np.arange(order.size, 0, -1)
    out[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return out


# --- Run-level inference: the trained model and the case as sources of variation -------------------------------

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
SKIPPED = "skipped"
POWER = 0.8
ARMS_COLUMNS = (
    "comparison", "treatment", "control", "sample_size", "estimate", "se", "df", "ci_low_adj", "ci_high_adj",
    "ci_level_adj", "p_value", "p_holm", "verdict", "mdd_80", "n_models_treatment", "n_models_control",
    "n_repeats_paired", "n_cases", "run_var", "case_var", "method", "note",
)
_QUANTILES = (np.arange(1000) + 0.5) / 1000  # midpoint rule on the probability scale, for _detectable


@dataclass(frozen=True)
class CellStats:
    """Paired differences (treatment - control) of one comparison at one sample size, as a repeats x cases
    table, reduced to the mean squares of its two-way layout (Searle, Casella & McCulloch 1992, ch. 4).

    ``v_run``: variance over repeats of the per-repeat mean difference (``df_run = R - 1``);
    ``v_case``: variance over cases of the per-case mean difference (``n - 1``); ``ms_res``: residual mean
    square (``(R - 1)(n - 1)``). NaN where the degrees of freedom are 0.
    """

    estimate: float
    n_repeats: int
    n_cases: int
    v_run: float
    df_run: int
    v_case: float
    ms_res: float
    df_res: int


def cell_stats(diff: np.ndarray) -> CellStats:
    """:class:`CellStats` of a complete (repeats x cases) matrix of paired differences.

    Written out because it is the closed form of a balanced two-way ANOVA (statsmodels' ``anova_lm`` fits an
    OLS per call, too slow for the calibration simulation; the tests check both agree).
    """
    d = np.asarray(diff, dtype=float)
    r, n = d.shape
    grand, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    resid = d - rows[:, None] - cols[None, :] + grand
    df_res = (r - 1) * (n - 1)
    return CellStats(
        estimate=float(grand), n_repeats=r, n_cases=n,
        v_run=float(rows.var(ddof=1)) if r > 1 else math.nan, df_run=r - 1,
        v_case=float(cols.var(ddof=1)) if n > 1 else math.nan,
        ms_res=float(np.sum(resid**2) / df_res) if df_res > 0 else math.nan, df_res=df_res,
    )


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


def _paired_matrix(models: np.ndarray, treatment: Mapping[object, int], control: Mapping[object, int]
                   ) -> tuple[np.ndarray, list[str]]:
    """Repeats x cases differences over the repeats both arms have and the cases every one of those models
    scored (``models``: the case values of each model row; arms: repeat -> row); notes on what was dropped."""
    shared = [r for r in treatment if r in control]
    notes = []
    unpaired = sorted(set(treatment).symmetric_difference(control), key=str)
    if unpaired:
        notes.append(f"repeats {unpaired} dropped (trained for one arm only)")
    diff = np.array([models[treatment[r]] - models[control[r]] for r in shared]).reshape(len(shared), -1)
    complete = np.isfinite(diff).all(axis=0)
    if len(shared) and not complete.all():
        notes.append(f"{int((~complete).sum())} cases dropped (missing, NaN or inf for some model)")
    return diff[:, complete], notes


def _pooled(cells: Sequence[CellStats], value: str, df: str) -> tuple[float, int]:
    """df-weighted mean of a mean square over the cells that have degrees of freedom for it."""
    used = [(getattr(c, value), getattr(c, df)) for c in cells if getattr(c, df) > 0]
    total = sum(d for _, d in used)
    return (sum(v * d for v, d in used) / total if total else math.nan), total


def _cell_variance(cell: CellStats, pooled_run: tuple[float, int], pooled_res: tuple[float, int],
                   min_repeats: int) -> tuple[float, float, float, float, bool]:
    """``(var of the estimate, its df, run part, case part, pooled?)``.

    var = v_run / R + max(0, v_case - ms_res / R) / n: the between-model part of the mean difference plus the
    case x arm part (a case that one arm segments differently in every repeat is not a new case per repeat).
    """
    pool = cell.n_repeats < min_repeats or cell.df_run == 0
    v_run, df_run = pooled_run if pool else (cell.v_run, cell.df_run)
    ms_res, df_res = (cell.ms_res, cell.df_res) if cell.df_res > 0 else pooled_res
    r, n = cell.n_repeats, cell.n_cases
    run_part = v_run / r
    case_part = max(0.0, cell.v_case - ms_res / r) / n
    if case_part > 0:
        df = satterthwaite_df([(run_part, df_run), (cell.v_case / n, n - 1), (-ms_res / (r * n), df_res)])
    else:
        df = float(df_run)
    return run_part + case_part, df, v_run, case_part * n, pool


def _verdict(row: Mapping, alpha: float, margin: float, higher_is_better: bool) -> str:
    if row["p_holm"] < alpha:
        return "better" if (row["estimate"] > 0) == higher_is_better else "worse"
    if -margin <= row["ci_low_adj"] and row["ci_high_adj"] <= margin:
        return "equivalent"
    return "inconclusive"


def compare_arms(
    cases: pd.DataFrame, comparisons: Sequence[tuple[object, object]], *, value: str = "dice", alpha: float = 0.05,
    margin: float = 0.03, higher_is_better: bool = True, min_repeats: int = 5,
    sample_sizes: Sequence[object] | None = None, arm: str = ARM, size: str = SIZE, repeat: str = REPEAT,
    case: str = CASE, detectable: bool = True,
) -> pd.DataFrame:
    """Each declared ``(treatment, control)`` at each sample size: estimate, adjusted CI, p, Holm p, verdict.

    ``cases`` has one row per arm x sample size x repeat x case (one trained model = arm x size x repeat)
    with the metric in ``value``; repeats with the same label share their subset draw and seed across arms.
    Sample sizes: ``sample_sizes``, else every size where either arm was trained.

    Method (one analysis gives estimate, CI and p). At one sample size, the paired differences
    ``d[r, c] = treatment - control`` over the R repeats both arms have and the n cases all those models
    scored follow the crossed random-effects model ``d = delta + a_r + g_c + e_rc``: ``a_r`` the luck of
    the two trained models of repeat r, ``g_c`` how differently the arms treat case c, ``e`` the rest.
    The estimate is the mean of ``d``; its variance ``var(a)/R + var(g)/n + var(e)/(R n)`` is estimated by
    the two-way ANOVA mean squares (variance components truncated at 0) and referred to a t distribution with
    Satterthwaite (1946) degrees of freedom: the quasi-F treatment of two crossed random factors of Clark
    (1973, "The language-as-fixed-effect fallacy"), with trained models in the role of subjects and test cases
    in the role of items. When case effects are 0 this is the run-level t-test paired by repeat. A cell with
    fewer than ``min_repeats`` paired repeats uses the between-model variance pooled over the comparison's
    sample sizes (df-weighted; it assumes one between-model variance across sizes) and says so in ``method``.
    p-values are Holm-adjusted (Holm 1979) over every comparison x size tested; ``ci_*_adj`` are
    Bonferroni-adjusted (level ``1 - alpha/m``, simultaneous over the m tests), so a CI that excludes 0 implies
    Holm significance (Holm can also reject where that CI touches 0; the verdict follows Holm).
    ``verdict``: significant after Holm -> ``better``/``worse`` from the estimate's sign (``higher_is_better``);
    else ``equivalent`` if the adjusted CI lies within ``[-margin, margin]`` (CI inclusion, i.e. two one-sided
    tests, Schuirmann 1987); else ``inconclusive``. ``mdd_80``: the smallest |difference| this design, with
    its estimated SE and df, detects with 80% power at the Bonferroni level. A comparison that cannot be
    estimated (an arm missing, < 2 cases, no between-model variance anywhere) is a row with verdict
    ``skipped`` and the reason in ``note``; it does not count in m.

    Calibrated by simulation (``benchmarks/inference_calibration.py``): no effect, run SD 0.02, rejects <= 5%
    at the demo design (9 cases, R = 2, 3 sizes) and the full study's (14 cases, R = 5, 5 sizes).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be >= 2 (a cell's own between-model variance needs 2 repeats), "
                         f"got {min_repeats}")
    data = cases[[arm, size, repeat, case, value]]
    if data.duplicated([arm, size, repeat, case]).any():
        raise ValueError(f"cases has several rows per {arm} x {size} x {repeat} x {case}; one row per model and case")
    sizes = list(sample_sizes) if sample_sizes is not None else None
    rows = []
    for treatment, control in comparisons:
        rows += _one_comparison(data, treatment, control, sizes, value, min_repeats, arm, size, repeat, case)
    _adjust(rows, alpha, margin, higher_is_better, detectable)
    return pd.DataFrame(rows, columns=list(ARMS_COLUMNS))


def _one_comparison(data: pd.DataFrame, treatment: object, control: object, sizes: list | None, value: str,
                    min_repeats: int, arm: str, size: str, repeat: str, case: str) -> list[dict]:
    """Rows (before adjustment) of one comparison at each of its sample sizes."""
    mine = data[data[arm].isin([treatment, control])]
    wide = mine.set_index([size, arm, repeat, case])[value].unstack(case)
    values = wide.to_numpy(dtype=float)
    rows_of: dict[tuple, dict[object, int]] = {}
    for i, (n, a, r) in enumerate(wide.index):
        rows_of.setdefault((n, a), {})[r] = i
    if sizes is None:
        sizes = sorted({n for n, _ in rows_of}, key=lambda v: (str(type(v)), v))
    cells: dict[object, CellStats] = {}
    rows: dict[object, dict] = {}
    for n in sizes:
        row = {"comparison": f"{treatment} vs {control} @ n={n}", "treatment": treatment, "control": control,
               "sample_size": n, "n_models_treatment": 0, "n_models_control": 0, "n_repeats_paired": 0,
               "n_cases": 0, "method": "", "note": ""}
        rows[n] = row
        missing = [a for a in (treatment, control) if (n, a) not in rows_of]
        if missing:
            row["note"] = f"skipped: no results for {', '.join(map(repr, missing))} at n={n}"
            continue
        t_rows, c_rows = rows_of[(n, treatment)], rows_of[(n, control)]
        diff, notes = _paired_matrix(values, t_rows, c_rows)
        row.update(n_models_treatment=len(t_rows), n_models_control=len(c_rows), n_repeats_paired=diff.shape[0],
                   n_cases=diff.shape[1], note="; ".join(notes))
        if diff.shape[0] == 0 or diff.shape[1] < 2:
            row["note"] = "; ".join([*notes, f"skipped: {diff.shape[0]} paired repeats, {diff.shape[1]} cases "
                                     "scored by all their models (needs >= 1 and >= 2)"])
            continue
        cells[n] = cell_stats(diff)
    pooled_run = _pooled(list(cells.values()), "v_run", "df_run")
    pooled_res = _pooled(list(cells.values()), "ms_res", "df_res")
    donors = [n for n, c in cells.items() if c.df_run > 0]
    for n, stat in cells.items():
        if pooled_run[1] == 0:
            rows[n]["note"] = "; ".join(filter(None, [rows[n]["note"], "skipped: no sample size of this comparison "
                                                      "has 2 paired repeats to estimate the between-model variance"]))
            continue
        rows[n].update(_cell_result(stat, pooled_run, pooled_res, donors, min_repeats))
    return list(rows.values())


def _cell_result(stat: CellStats, pooled_run: tuple[float, int], pooled_res: tuple[float, int], donors: list,
                 min_repeats: int) -> dict:
    """Estimate, SE, df, two-sided p and the method text of one cell."""
    var, df, v_run, case_var, pooled = _cell_variance(stat, pooled_run, pooled_res, min_repeats)
    se = math.sqrt(var)
    if se > 0:
        p = float(2 * stats.t.sf(abs(stat.estimate) / se, df))
    else:  # every difference identical: no variation left to test against
        p = 1.0 if stat.estimate == 0 else 0.0
    method = (f"paired by repeat; trained models and cases crossed random (Clark 1973); t, Satterthwaite df "
              f"{df:.1f}; Holm p; Bonferroni CI")
    if pooled and len(donors) > 1:
        method += (f"; between-model variance pooled over n = {', '.join(map(str, donors))} (df {pooled_run[1]}), "
                   f"as this cell has R = {stat.n_repeats} < {min_repeats}")
    elif pooled:
        method += f"; between-model variance from R = {stat.n_repeats} only (df {pooled_run[1]}): no other size to pool"
    return {"estimate": stat.estimate, "se": se, "df": df, "p_value": p, "run_var": v_run, "case_var": case_var,
            "method": method}


def _adjust(rows: list[dict], alpha: float, margin: float, higher_is_better: bool, detectable: bool) -> None:
    """Fill in Holm p, Bonferroni CIs, verdicts and detectable differences over the tested rows (in place)."""
    tested = [r for r in rows if "p_value" in r]
    m = len(tested)
    level = alpha / m if m else math.nan
    for row, p_holm in zip(tested, holm([r["p_value"] for r in tested])):
        crit = float(stats.t.isf(level / 2, row["df"]))
        row.update(p_holm=float(p_holm), ci_level_adj=1 - level, ci_low_adj=row["estimate"] - crit * row["se"],
                   ci_high_adj=row["estimate"] + crit * row["se"],
                   mdd_80=_detectable(row["se"], row["df"], level) if detectable else math.nan)
        row["verdict"] = _verdict(row, alpha, margin, higher_is_better)
    for row in rows:
        row.setdefault("verdict", SKIPPED)
