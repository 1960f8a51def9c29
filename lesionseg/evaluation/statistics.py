"""Statistics over repeated trainings for the report: per-case means, paired tests, Holm, mixed model (pure).

Input is a long table with one row per arm x sample size x repeat x test case; column names default
to ``arm``, ``sample_size``, ``repeat``, ``case_id`` and the metric (e.g. ``dice``). Filter it first
(e.g. lesion scans only for Dice; the penalised HD95 rather than one with inf).

Primary analysis: each case's metric is averaged over repeats (:func:`per_case_over_repeats`), then
every pre-declared comparison (treatment arm vs control arm at one sample size) is a two-sided paired
Wilcoxon signed-rank test over cases with the paired mean difference and its BCa bootstrap CI
(:func:`compare_declared`); p-values are Holm-adjusted over the comparisons that could be tested.
Secondary: :func:`mixed_model`, a linear mixed model with a random intercept per case.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

ARM, SIZE, REPEAT, CASE = "arm", "sample_size", "repeat", "case_id"
N_RESAMPLES = 9999
EQUAL_TOL = 1e-12
COMPARISON_COLUMNS = (
    "comparison", "treatment", "control", "sample_size", "n_cases", "mean_diff", "diff_ci_low",
    "diff_ci_high", "p_value", "p_holm", "significant", "direction", "note",
)
EFFECT_COLUMNS = ("term", "coef", "ci_low", "ci_high", "p_value")


def per_case_over_repeats(
    df: pd.DataFrame, value: str = "dice", by: Sequence[str] = (ARM, SIZE), case: str = CASE
) -> pd.DataFrame:
    """Mean of ``value`` per ``by`` x case over repeats (NaN skipped), with ``n_repeats`` averaged."""
    grouped = df.groupby([*by, case], sort=True)[value]
    return grouped.agg(mean="mean", n_repeats="count").reset_index().rename(columns={"mean": value})


def _all_equal(x: np.ndarray) -> bool:
    """True when the values differ by float rounding at most (BCa is undefined then)."""
    return bool(np.ptp(x) <= EQUAL_TOL * max(1.0, float(np.abs(x).max())))


def bootstrap_mean_ci(
    values: Iterable[float], *, seed: int = 0, n_resamples: int = N_RESAMPLES, level: float = 0.95
) -> tuple[float, float]:
    """BCa bootstrap CI of the mean over cases (NaN dropped); ``(mean, mean)`` if all equal, NaN if empty."""
    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    if _all_equal(x):
        return float(x.mean()), float(x.mean())
    res = stats.bootstrap((x,), np.mean, method="BCa", random_state=seed, n_resamples=n_resamples,
                          confidence_level=level)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def arm_means(
    per_case: pd.DataFrame, value: str = "dice", by: Sequence[str] = (ARM, SIZE), *, seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """Per ``by`` group: ``n_cases``, ``mean`` and its BCa CI (``ci_low``, ``ci_high``) over cases."""
    rows = []
    for key, grp in per_case.groupby(list(by), sort=True):
        x = grp[value].dropna().to_numpy(dtype=float)
        low, high = bootstrap_mean_ci(x, seed=seed, n_resamples=n_resamples)
        rows.append({**dict(zip(by, key)), "n_cases": x.size, "mean": x.mean() if x.size else math.nan,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*by, "n_cases", "mean", "ci_low", "ci_high"])


def paired_comparison(
    a: pd.Series, b: pd.Series, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, float]:
    """Paired ``a - b`` over cases (Series indexed by case_id; cases missing or NaN in either dropped).

    Returns ``n_cases``, ``mean_diff``, BCa ``diff_ci_low``/``diff_ci_high`` and the two-sided
    Wilcoxon ``p_value``; all-equal differences ``d`` (to float rounding) give a CI of ``[d, d]``,
    and p = 1 when ``d`` is 0 (a non-zero constant shift is still tested).
    """
    for name, s in (("a", a), ("b", b)):
        if not s.index.is_unique:
            raise ValueError(f"{name} has repeated case ids; average repeats first (per_case_over_repeats)")
    pair = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (pair["a"] - pair["b"]).to_numpy(dtype=float)
    if diff.size == 0:
        return {"n_cases": 0, "mean_diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
                "p_value": math.nan}
    low, high = bootstrap_mean_ci(diff, seed=seed, n_resamples=n_resamples)
    p = 1.0 if _all_equal(diff) and abs(diff.mean()) <= EQUAL_TOL else float(stats.wilcoxon(diff).pvalue)
    return {"n_cases": int(diff.size), "mean_diff": float(diff.mean()), "diff_ci_low": low,
            "diff_ci_high": high, "p_value": p}


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN and are not counted."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _arm_values(per_case: pd.DataFrame, arm_name: str, n: object, value: str, arm: str, size: str,
                case: str) -> pd.Series | None:
    sel = per_case[(per_case[arm] == arm_name) & (per_case[size] == n)]
    return None if sel.empty else sel.set_index(case)[value]


def _direction(row: pd.Series, higher_is_better: bool) -> str:
    if row["note"]:
        return "skipped"
    if not row["significant"]:
        return "no difference"
    return "better" if (row["mean_diff"] > 0) == higher_is_better else "worse"


def compare_declared(
    per_case: pd.DataFrame, comparisons: Sequence[tuple[str, str, object]], *, value: str = "dice",
    alpha: float = 0.05, higher_is_better: bool = True, arm: str = ARM, size: str = SIZE, case: str = CASE,
    seed: int = 0, n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """One row per declared ``(treatment, control, sample_size)``; Holm over the tested ones.

    ``per_case`` holds one value per arm x size x case (see :func:`per_case_over_repeats`). A
    comparison whose arm is absent is a row with ``direction == "skipped"`` and a ``note``.
    """
    if per_case.duplicated([arm, size, case]).any():
        raise ValueError("per_case has several rows per arm x sample size x case; average with per_case_over_repeats")
    rows = []
    for treatment, control, n in comparisons:
        row = {"comparison": f"{treatment} vs {control} @ n={n}", "treatment": treatment, "control": control,
               "sample_size": n, "n_cases": 0, "note": ""}
        a = _arm_values(per_case, treatment, n, value, arm, size, case)
        b = _arm_values(per_case, control, n, value, arm, size, case)
        missing = [name for name, s in ((treatment, a), (control, b)) if s is None]
        if missing:
            row["note"] = f"skipped: no results for {', '.join(map(repr, missing))} at n={n}"
        else:
            row.update(paired_comparison(a, b, seed=seed, n_resamples=n_resamples))
        rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_holm", "significant", "direction")])
    out["p_holm"] = holm(out["p_value"])
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    out["direction"] = [_direction(r, higher_is_better) for _, r in out.iterrows()] if len(out) else []
    return out[list(COMPARISON_COLUMNS)]


def between_repeat_sd(
    df: pd.DataFrame, value: str = "dice", by: Sequence[str] = (ARM, SIZE), repeat: str = REPEAT
) -> pd.DataFrame:
    """Per ``by`` group: ``n_repeats``, ``mean`` of the per-repeat mean metric, and its SD across repeats."""
    means = df.groupby([*by, repeat], sort=True)[value].mean().reset_index()
    agg = means.groupby(list(by), sort=True)[value].agg(n_repeats="count", mean="mean", between_repeat_sd="std")
    return agg.reset_index()


@dataclass(frozen=True)
class MixedModelResult:
    """Fixed effects (:data:`EFFECT_COLUMNS`), whether the fit converged cleanly, and what went wrong."""

    table: pd.DataFrame
    converged: bool
    note: str
    formula: str = ""
    case_var: float = math.nan


def _failed(note: str, formula: str = "") -> MixedModelResult:
    return MixedModelResult(pd.DataFrame(columns=list(EFFECT_COLUMNS)), False, note, formula)


def mixed_model(
    df: pd.DataFrame, value: str = "dice", *, arm: str = ARM, size: str = SIZE, case: str = CASE,
    reference: str | None = None, alpha: float = 0.05,
) -> MixedModelResult:
    """REML fit of ``value ~ C(arm) * C(sample_size)`` (size terms only if >1 size), random intercept per case.

    ``reference`` is the baseline arm (default: first in sorted order). Warnings (convergence,
    boundary/singular fit) go to ``note``; a failed fit returns an empty table and the error in ``note``.
    """
    data = df[[value, arm, size, case]].dropna().rename(columns={value: "y", arm: "arm", size: "n", case: "case"})
    arms = sorted(data["arm"].unique(), key=str)
    if len(arms) < 2 or data["case"].nunique() < 2:
        return _failed(f"needs >= 2 arms and >= 2 cases, got {len(arms)} arms, {data['case'].nunique()} cases")
    ref = arms[0] if reference is None else reference
    if ref not in arms:
        return _failed(f"reference arm {ref!r} not in data {arms}")
    data["arm"] = pd.Categorical(data["arm"], categories=[ref, *[a for a in arms if a != ref]])
    formula = "y ~ C(arm) * C(n)" if data["n"].nunique() > 1 else "y ~ C(arm)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, data, groups=data["case"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as err:
            return _failed(f"fit failed: {err}", formula)
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    names = list(fit.fe_params.index)
    ci = fit.conf_int(alpha=alpha).loc[names]
    table = pd.DataFrame({
        "term": [t.replace("C(arm)", arm).replace("C(n)", size) for t in names],
        "coef": fit.fe_params.to_numpy(), "ci_low": ci[0].to_numpy(), "ci_high": ci[1].to_numpy(),
        "p_value": fit.pvalues.loc[names].to_numpy(),
    })
    clean = bool(fit.converged) and not messages
    return MixedModelResult(table, clean, "; ".join(messages), formula, float(fit.cov_re.iloc[0, 0]))
