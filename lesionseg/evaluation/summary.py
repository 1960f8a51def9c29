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
- ``volume_error_mm3``: predicted minus manual lesion volume, mean over all scans;
  ``volume_error_lesion_mm3``: the same mean over lesion scans only.
- Agreement of predicted with manual volume over all test scans: Bland-Altman bias
  (``volume_bias_mm3``, mean of predicted minus manual) and 95% limits of agreement
  (``volume_loa_low_mm3``, ``volume_loa_high_mm3``: bias -/+ 1.96 SD of the differences);
  ``volume_icc``: ICC(2,1) of Shrout & Fleiss (two-way random effects, absolute agreement, single
  measurement), so a systematic over- or under-segmentation lowers it; ``volume_pearson_r``: Pearson r.
- ``n_lesion``, ``n_sham``: numbers of lesion scans and shams.

A quantity with nothing to compute it from (e.g. no shams) is NaN.

Volumetry per trained model (:func:`volume_agreement_per_model`), on lesion scans only (shams at (0, 0)
would flatter every agreement statistic): ``volume_bias_mm3`` with its t CI, Bland-Altman limits with the
approximate CIs of Bland & Altman (1999), ``volume_icc`` (ICC(2,1)), ``volume_rel_error`` (mean of
(predicted - manual) / manual) and ``volume_abs_rel_error``. :func:`volume_agreement_over_models` averages
those over the models of an arm (never the volumes), with their SD across models. Shams are reported apart,
per model: :func:`sham_volume_per_model` (false-positive volume in mm3).

Several trainings of one arm (the study report): every quantity is computed per trained model, on that
model's own predictions, and then averaged over the models (with their SD across models); volumes and
predictions are never averaged over models first, and volumetry is per model on lesion scans as above.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

SUMMARY_KEYS = (
    "dice_lesion", "sham_fp_rate", "sham_fp_ci_low", "sham_fp_ci_high", "detection_rate", "hd95_mm",
    "volume_error_mm3", "volume_error_lesion_mm3", "volume_bias_mm3", "volume_loa_low_mm3",
    "volume_loa_high_mm3", "volume_icc", "volume_pearson_r", "n_lesion", "n_sham",
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
    pred, true = cases["pred_volume_mm3"].to_numpy(dtype=float), _true_volume(cases).to_numpy()
    bias, loa_low, loa_high = bland_altman(pred, true)
    hd = cases["hd95_mm_penalised"].astype(float)
    out = {
        "dice_lesion": _mean(les["dice"]),
        "sham_fp_rate": n_fp / len(sham) if len(sham) else math.nan,
        "sham_fp_ci_low": ci_low,
        "sham_fp_ci_high": ci_high,
        "detection_rate": float(les["detected"].mean()) if len(les) else math.nan,
        "hd95_mm": _mean(hd[hd.notna()]),
        "volume_error_mm3": _mean(cases["volume_error_mm3"]),
        "volume_error_lesion_mm3": _mean(les["volume_error_mm3"]),
        "volume_bias_mm3": bias,
        "volume_loa_low_mm3": loa_low,
        "volume_loa_high_mm3": loa_high,
        "volume_icc": icc(np.column_stack([pred, true]), "2,1"),
        "volume_pearson_r": pearson_r(pred, true),
        "n_lesion": int(len(les)),
        "n_sham": int(len(sham)),
    }
    return {key: out[key] for key in SUMMARY_KEYS}


# --- Volumetry per trained model ---------------------------------------------------------------------------------

MODEL_KEYS = ("arm", "sample_size", "repeat")
VOLUME_KEYS = (
    "n_lesion", "volume_bias_mm3", "volume_bias_ci_low_mm3", "volume_bias_ci_high_mm3", "volume_loa_low_mm3",
    "volume_loa_high_mm3", "volume_loa_low_ci_low_mm3", "volume_loa_low_ci_high_mm3", "volume_loa_high_ci_low_mm3",
    "volume_loa_high_ci_high_mm3", "volume_icc", "volume_rel_error", "volume_abs_rel_error",
)
SHAM_KEYS = ("n_sham", "sham_fp_rate", "sham_fp_volume_mean_mm3", "sham_fp_volume_max_mm3")


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
        return {"n_sham": 0, "sham_fp_rate": math.nan, "sham_fp_volume_mean_mm3": math.nan,
                "sham_fp_volume_max_mm3": math.nan}
    return {"n_sham": int(vol.size), "sham_fp_rate": float(np.mean(vol > 0)),
            "sham_fp_volume_mean_mm3": float(vol.mean()), "sham_fp_volume_max_mm3": float(vol.max())}


def _per_model(cases: pd.DataFrame, model: Sequence[str], summary) -> pd.DataFrame:
    rows = [{**dict(zip(model, key if isinstance(key, tuple) else (key,))), **summary(grp)}
            for key, grp in cases.groupby(list(model), sort=False)]  # arms may be unorderable values
    return pd.DataFrame(rows)


def volume_agreement_per_model(cases: pd.DataFrame, model: Sequence[str] = MODEL_KEYS) -> pd.DataFrame:
    """One row per trained model (the ``model`` columns) with :data:`VOLUME_KEYS`, on its lesion scans.

    ``cases``: one row per model x test scan with ``group``/``has_lesion``, ``pred_volume_mm3`` and
    ``true_volume_mm3``. Each model is scored on its own predictions, as it would be deployed.
    """
    out = _per_model(cases, model, volume_agreement)
    return out if len(out) else pd.DataFrame(columns=[*model, *VOLUME_KEYS])


def sham_volume_per_model(cases: pd.DataFrame, model: Sequence[str] = MODEL_KEYS) -> pd.DataFrame:
    """One row per trained model with :data:`SHAM_KEYS`: false-positive volume on shams, apart from volumetry."""
    out = _per_model(cases, model, sham_volume)
    return out if len(out) else pd.DataFrame(columns=[*model, *SHAM_KEYS])


def volume_agreement_over_models(per_model: pd.DataFrame, by: Sequence[str] = ("arm", "sample_size"),
                                 model: Sequence[str] = MODEL_KEYS) -> pd.DataFrame:
    """Per ``by`` group (an arm at a sample size): ``n_models``, the mean over its models of every per-model
    quantity (same names) and the SD across models of the estimates (``<name>_sd_models``; not of CI bounds or
    counts). Volumes are never averaged over models first: an average of several models' volumes is a prediction
    no deployed model makes. ``model`` columns are identifiers, not averaged; the same summary serves
    :func:`sham_volume_per_model`'s table."""
    numeric = per_model.drop(columns=[c for c in {*model, *by} if c in per_model]).select_dtypes("number")
    grouped = per_model[list(by)].join(numeric).groupby(list(by), sort=False)[list(numeric.columns)]
    spread = [c for c in numeric.columns if "_ci_" not in c and not c.startswith("n_")]
    mean, sd = grouped.mean(), grouped.std(ddof=1)[spread].add_suffix("_sd_models")
    out = pd.concat([grouped.size().rename("n_models"), mean, sd], axis=1)
    return out.reset_index()
