"""Named summary quantities of one model's test set, computed from its per-case table (pure).

Input: one row per test scan with ``case_id``; the lesion status as a boolean ``has_lesion`` or a
``group`` of ``"MCAo"`` (lesion) / ``"sham"`` (no lesion); ``dice``; ``hd95_mm`` (inf when exactly
one mask is empty, NaN when both are); ``pred_volume_mm3``; ``true_volume_mm3`` (``gt_volume_mm3``
is accepted too); and the image diagonal in mm, as an argument or a ``diagonal_mm`` column.

Definitions (one per reported quantity):

- ``dice_lesion``: mean Dice over lesion (MCAo) scans only.
- ``sham_fp_rate``: shams with any predicted lesion voxel / all shams; ``sham_fp_ci_low`` and
  ``sham_fp_ci_high`` are its exact (Clopper-Pearson) 95% confidence interval.
- ``detection_rate``: lesion scans whose prediction overlaps the manual lesion (Dice > 0) / lesion scans.
- ``hd95_mm``: mean per-case HD95 in mm, where a miss (lesion scan, empty prediction) and a false
  alarm (sham, non-empty prediction) each score a penalty equal to the image diagonal in mm (BraTS
  convention) and are counted, never dropped; a sham left empty has no boundary and is excluded.
- Volumetry (``volume_*``), always per trained model and on lesion (MCAo) scans only: shams at (0, 0) would
  flatter every agreement statistic. Bland-Altman bias ``volume_bias_mm3`` (mean of predicted minus manual) with
  its t CI (``volume_bias_ci_low_mm3``, ``volume_bias_ci_high_mm3``); 95% limits of agreement
  (``volume_loa_low_mm3``, ``volume_loa_high_mm3``: bias -/+ 1.96 SD of the differences) with the approximate CIs
  of Bland & Altman (1999) (``volume_loa_*_ci_*_mm3``); ``volume_icc``: ICC(2,1) of Shrout & Fleiss (two-way
  random effects, absolute agreement, single measurement), so a systematic over- or under-segmentation lowers
  it; ``volume_pearson_r``; ``volume_rel_error`` (mean of (predicted - manual) / manual) and
  ``volume_abs_rel_error``. One implementation, :func:`volume_agreement`, serves MLflow, the registry tags,
  metrics/test.json and the report.
- Shams apart: ``sham_fp_volume_mm3``, the mean predicted (false-positive) volume over shams, and
  ``sham_fp_volume_max_mm3``, its largest.
- ``n_lesion``, ``n_sham``: numbers of lesion scans and shams.

A quantity with nothing to compute it from (e.g. no shams) is NaN.

Several trainings of one arm (the study report): every quantity above is computed per trained model, on that
model's own predictions; the arm's volumetry (:func:`arm_volume_agreement`) models the models and the scans
together, so its limits of agreement are for a new model of the arm on a new scan.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

VOLUME_KEYS = (
    "n_lesion", "volume_bias_mm3", "volume_bias_ci_low_mm3", "volume_bias_ci_high_mm3", "volume_loa_low_mm3",
    "volume_loa_high_mm3", "volume_loa_low_ci_low_mm3", "volume_loa_low_ci_high_mm3", "volume_loa_high_ci_low_mm3",
    "volume_loa_high_ci_high_mm3", "volume_icc", "volume_pearson_r", "volume_rel_error", "volume_abs_rel_error",
)
SHAM_KEYS = ("n_sham", "sham_fp_rate", "sham_fp_volume_mm3", "sham_fp_volume_max_mm3")
SUMMARY_KEYS = (
    "dice_lesion", "sham_fp_rate", "sham_fp_ci_low", "sham_fp_ci_high", "sham_fp_volume_mm3", "sham_fp_volume_max_mm3",
    "detection_rate", "hd95_mm", *VOLUME_KEYS[1:], "n_lesion", "n_sham",
)
LOA_Z = 1.96
_GROUPS = {"mcao": True, "sham": False}


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the image's diagonal: ``sqrt(sum((shape * spacing) ** 2))``."""
    extent = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)
    return float(np.sqrt(np.sum(extent**2)))


def hd95_with_penalty(hd95: float | np.ndarray, diagonal_mm: float | np.ndarray) -> float | np.ndarray:
    """HD95 with a miss or false alarm (inf) replaced by ``diagonal_mm``; NaN (both empty) stays NaN."""
    h, d = np.asarray(hd95, dtype=float), np.asarray(diagonal_mm, dtype=float)
    if np.any(~(d > 0)):
        raise ValueError(f"diagonal_mm must be > 0, got {diagonal_mm!r}")
    out = np.where(np.isinf(h), d, h)
    return float(out) if out.ndim == 0 else out


def _has_lesion(table: pd.DataFrame) -> pd.Series:
    if "has_lesion" in table:
        return table["has_lesion"].astype(bool)
    if "group" not in table:
        raise ValueError("the per-case table needs a 'has_lesion' or a 'group' ('MCAo'/'sham') column")
    mapped = table["group"].astype(str).str.lower().map(_GROUPS)
    if mapped.isna().any():
        bad = sorted(table.loc[mapped.isna(), "group"].astype(str).unique())
        raise ValueError(f"group must be 'MCAo' or 'sham', found {bad}")
    return mapped.astype(bool)


def _true_volume(table: pd.DataFrame) -> pd.Series:
    for col in ("true_volume_mm3", "gt_volume_mm3"):
        if col in table:
            return table[col].astype(float)
    raise ValueError("the per-case table needs a 'true_volume_mm3' (or 'gt_volume_mm3') column")


def case_metrics(table: pd.DataFrame, diagonal_mm: float | None = None) -> pd.DataFrame:
    """``table`` copy adding ``has_lesion``, ``hd95_mm_penalised``, ``detected``, ``false_alarm``, ``volume_error_mm3``.

    ``diagonal_mm`` None reads a per-row ``diagonal_mm`` column.
    """
    out = table.copy()
    if diagonal_mm is None:
        if "diagonal_mm" not in out:
            raise ValueError("give diagonal_mm or a 'diagonal_mm' column for the HD95 penalty")
        diagonal_mm = out["diagonal_mm"].to_numpy(dtype=float)
    lesion = _has_lesion(out)
    predicted = out["pred_volume_mm3"].astype(float) > 0
    out["has_lesion"] = lesion
    out["hd95_mm_penalised"] = hd95_with_penalty(out["hd95_mm"].to_numpy(dtype=float), diagonal_mm)
    out["detected"] = lesion & (out["dice"].astype(float) > 0)
    out["false_alarm"] = ~lesion & predicted
    out["volume_error_mm3"] = out["pred_volume_mm3"].astype(float) - _true_volume(out)
    return out


def clopper_pearson(k: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial CI of ``k / n``; NaN bounds when ``n == 0``.

    Written with the beta quantiles rather than ``scipy.stats.binomtest`` because ``k`` may be an effective,
    non-integer count (a sham flagged in half its repeats counts 0.5); for integer ``k`` the two agree.
    """
    if n == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low = 0.0 if k <= 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def bland_altman(pred: np.ndarray, true: np.ndarray, z: float = LOA_Z) -> tuple[float, float, float]:
    """Bias (mean of ``pred - true``) and limits ``bias -/+ z * SD`` (SD with ddof=1; NaN for n < 2)."""
    diff = np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)
    if diff.size == 0:
        return math.nan, math.nan, math.nan
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    return bias, bias - z * sd, bias + z * sd


# Hand-written: neither scipy nor statsmodels ships an ICC and pingouin is not a dependency;
# the two-way ANOVA mean squares below are Shrout & Fleiss (1979), checked against their Table 2.
def icc(ratings: np.ndarray, kind: str = "2,1") -> float:
    """Shrout-Fleiss ICC of an (n targets x k raters) matrix: ``"2,1"`` absolute agreement, ``"3,1"`` consistency.

    NaN with fewer than 2 targets or raters, or no variance at all.
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"ratings must be a 2-D (targets x raters) array, got shape {y.shape}")
    n, k = y.shape
    if n < 2 or k < 2:
        return math.nan
    grand = y.mean()
    ss_rows = k * np.sum((y.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((y.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((y - grand) ** 2) - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    if kind == "2,1":
        denom = msr + (k - 1) * mse + k * (msc - mse) / n
    elif kind == "3,1":
        denom = msr + (k - 1) * mse
    else:
        raise ValueError(f"kind must be '2,1' or '3,1', got {kind!r}")
    return float((msr - mse) / denom) if denom > 0 else math.nan


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN for fewer than 2 pairs or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.pearsonr(x, y).statistic)


def _mean(values: pd.Series) -> float:
    return float(np.mean(values.to_numpy(dtype=float))) if len(values) else math.nan


def summarize(table: pd.DataFrame, diagonal_mm: float | None = None) -> dict[str, float]:
    """The :data:`SUMMARY_KEYS` quantities of the module docstring, NaN where undefined.

    A table already holding ``hd95_mm_penalised`` (from :func:`case_metrics`) is used as is when
    ``diagonal_mm`` is None.
    """
    cases = table if "hd95_mm_penalised" in table and diagonal_mm is None else case_metrics(table, diagonal_mm)
    lesion = _has_lesion(cases)
    les, sham = cases[lesion], cases[~lesion]
    n_fp = int(sham["false_alarm"].sum())
    ci_low, ci_high = clopper_pearson(n_fp, len(sham))
    hd = cases["hd95_mm_penalised"].astype(float)
    out = {
        "dice_lesion": _mean(les["dice"]),
        "sham_fp_ci_low": ci_low,
        "sham_fp_ci_high": ci_high,
        "detection_rate": float(les["detected"].mean()) if len(les) else math.nan,
        "hd95_mm": _mean(hd[hd.notna()]),
        **volume_agreement(cases),
        **sham_volume(cases),
    }
    return {key: out[key] for key in SUMMARY_KEYS}


# --- Volumetry: per trained model, lesion scans only --------------------------------------------------------

def loa_confidence(diff: np.ndarray, z: float = LOA_Z, level: float = 0.95) -> dict[str, float]:
    """Bias with its t CI and the limits ``bias -/+ z SD`` with the approximate CIs of Bland & Altman (1999,
    Stat Methods Med Res 8:135, section 2.1): SE(limit) = SD * sqrt(1/n + z^2 / (2 (n - 1))), t quantile
    with n - 1 df. NaN where n < 2 (a CI) or n < 1.

    Hand-written: neither scipy nor statsmodels (``mean_diff_plot`` draws the limits only) gives their CIs.
    """
    d = np.asarray(diff, dtype=float)
    n = d.size
    bias, low, high = bland_altman(d, np.zeros(n), z)
    out = {"bias": bias, "bias_ci_low": math.nan, "bias_ci_high": math.nan, "loa_low": low, "loa_high": high,
           "loa_low_ci_low": math.nan, "loa_low_ci_high": math.nan, "loa_high_ci_low": math.nan,
           "loa_high_ci_high": math.nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    half_bias, half_loa = t * sd / math.sqrt(n), t * sd * math.sqrt(1 / n + z * z / (2 * (n - 1)))
    out.update(bias_ci_low=bias - half_bias, bias_ci_high=bias + half_bias, loa_low_ci_low=low - half_loa,
               loa_low_ci_high=low + half_loa, loa_high_ci_low=high - half_loa, loa_high_ci_high=high + half_loa)
    return out


def volume_agreement(table: pd.DataFrame) -> dict[str, float]:
    """:data:`VOLUME_KEYS` of one trained model's per-case table, lesion scans only (shams ignored)."""
    lesion = table[_has_lesion(table).to_numpy()]
    pred = lesion["pred_volume_mm3"].to_numpy(dtype=float)
    true = _true_volume(lesion).to_numpy()
    ba = loa_confidence(pred - true)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(true > 0, (pred - true) / true, np.nan)
    rel = rel[~np.isnan(rel)]
    out = {"n_lesion": int(pred.size), "volume_icc": icc(np.column_stack([pred, true]), "2,1"),
           "volume_pearson_r": pearson_r(pred, true),
           "volume_rel_error": float(rel.mean()) if rel.size else math.nan,
           "volume_abs_rel_error": float(np.abs(rel).mean()) if rel.size else math.nan}
    for key, value in ba.items():
        out[f"volume_{key}_mm3"] = value
    return {key: out[key] for key in VOLUME_KEYS}


def sham_volume(table: pd.DataFrame) -> dict[str, float]:
    """:data:`SHAM_KEYS` of one trained model: shams with any predicted voxel / shams, and the predicted
    (false-positive) volume over shams, mean and max in mm3."""
    vol = table.loc[~_has_lesion(table).to_numpy(), "pred_volume_mm3"].to_numpy(dtype=float)
    if vol.size == 0:
        return {"n_sham": 0, "sham_fp_rate": math.nan, "sham_fp_volume_mm3": math.nan,
                "sham_fp_volume_max_mm3": math.nan}
    return {"n_sham": int(vol.size), "sham_fp_rate": float(np.mean(vol > 0)),
            "sham_fp_volume_mm3": float(vol.mean()), "sham_fp_volume_max_mm3": float(vol.max())}


def lesion_volume_errors(cases: pd.DataFrame, model: str = "repeat") -> np.ndarray:
    """(models x lesion scans) matrix of predicted - manual volume (mm3) of one arm's models (``model`` column),
    over the lesion scans every model scored."""
    lesion = cases[_has_lesion(cases).to_numpy()]
    error = lesion.assign(_error=lesion["pred_volume_mm3"].astype(float) - _true_volume(lesion))
    matrix = error.pivot_table(index=model, columns="case_id", values="_error", aggfunc="first")
    return matrix.dropna(axis=1).to_numpy(dtype=float)


def arm_volume_agreement(differences: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """An arm's volumetry from its models' differences (predicted - manual, mm3) on the same lesion scans, a
    (models x scans) matrix: the arm's bias with its CI, and limits of agreement for a new model of the arm on a
    new scan, which include how much models differ in bias.

    Model: ``d[m, c] = mu + b_m + s_c + e_mc`` (model bias, scan, rest; crossed random effects, two-way ANOVA
    variance components truncated at 0). ``arm_volume_bias_mm3`` = mean of ``d``, CI with Satterthwaite df;
    ``arm_volume_loa_*_mm3`` = bias -/+ t * sqrt(var(b) + var(s) + var(e) + var(bias)), the prediction interval
    of one new model's error on one new scan (a ``level`` interval: the t quantile at the Satterthwaite df, floored
    at the smallest df used, takes the place of 1.96). Coverage measured by simulation
    (tests/test_summary.py): within 0.93-0.97 at 3 models x 30 scans when the between-model SD equals the
    within-model SD, where the average of the per-model limits covers about 0.75-0.8. NaN with fewer than 2
    models or 2 scans. Hand-written: no library gives the crossed-design prediction interval.
    """
    d = np.asarray(differences, dtype=float)
    nan = {k: math.nan for k in ARM_VOLUME_KEYS}
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2 or not np.isfinite(d).all():
        return {**nan, "n_models": int(d.shape[0]) if d.ndim == 2 else 0}
    m, n = d.shape
    grand, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms = {"model": n * rows.var(ddof=1), "scan": m * cols.var(ddof=1),
          "rest": float(np.sum((d - rows[:, None] - cols[None, :] + grand) ** 2) / ((m - 1) * (n - 1)))}
    dfs = {"model": m - 1, "scan": n - 1, "rest": (m - 1) * (n - 1)}
    var_b, var_s = max(0.0, (ms["model"] - ms["rest"]) / n), max(0.0, (ms["scan"] - ms["rest"]) / m)
    mean_var, mean_df = _combination(ms, dfs, var_b > 0, var_s > 0, 1 / m, 1 / n, 1 / (m * n), m, n)
    new_var, new_df = _combination(ms, dfs, var_b > 0, var_s > 0, 1 + 1 / m, 1 + 1 / n, 1 + 1 / (m * n), m, n)
    t_mean = float(stats.t.ppf(0.5 + level / 2, mean_df))
    t_new = float(stats.t.ppf(0.5 + level / 2, new_df))
    return {"n_models": m, "arm_volume_bias_mm3": float(grand),
            "arm_volume_bias_ci_low_mm3": grand - t_mean * math.sqrt(mean_var),
            "arm_volume_bias_ci_high_mm3": grand + t_mean * math.sqrt(mean_var),
            "arm_volume_loa_low_mm3": grand - t_new * math.sqrt(new_var),
            "arm_volume_loa_high_mm3": grand + t_new * math.sqrt(new_var),
            "arm_volume_sd_between_models_mm3": math.sqrt(var_b),
            "arm_volume_sd_within_model_mm3": math.sqrt(var_s + ms["rest"])}


def _combination(ms: dict, dfs: dict, model: bool, scan: bool, w_model: float, w_scan: float, w_rest: float,
                 m: int, n: int) -> tuple[float, float]:
    """``w_model var(b) + w_scan var(s) + w_rest var(e)`` as a combination of the mean squares (a truncated
    component drops out), and its Satterthwaite df, floored at the smallest df of the mean squares used."""
    coef = {"model": w_model / n if model else 0.0, "scan": w_scan / m if scan else 0.0}
    coef["rest"] = w_rest - coef["model"] - coef["scan"]
    terms = [(coef[k] * ms[k], dfs[k]) for k in ms if coef[k] != 0]
    var = sum(v for v, _ in terms)
    denom = sum(v * v / df for v, df in terms)
    df = var * var / denom if denom > 0 else math.inf
    return var, max(df, min(df for _, df in terms))


ARM_VOLUME_KEYS = ("n_models", "arm_volume_bias_mm3", "arm_volume_bias_ci_low_mm3", "arm_volume_bias_ci_high_mm3",
                   "arm_volume_loa_low_mm3", "arm_volume_loa_high_mm3", "arm_volume_sd_between_models_mm3",
                   "arm_volume_sd_within_model_mm3")


