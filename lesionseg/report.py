"""The study report: per-case native-space test results of every trained model -> per-arm summary, the
pre-declared comparisons with run-level inference and four verdicts, volumetry per trained model, figures and a
generated README.

Input: the evaluate stage's per-case CSVs (``metrics/test/<name>.csv``) and each model's ``run.json``, whose
arm fields (model, strategy, freeze_depth, augment) say what it is; nothing is read from directory names. The
comparisons are declared in params.yaml (``report.comparisons``) before any result exists; nothing here picks
an arm by its test numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lesionseg.arm import ARM_COLUMNS, Arm  # noqa: E402
from lesionseg.config import Comparison  # noqa: E402
from lesionseg.data.io import atomic_path, read_json, write_json, write_text  # noqa: E402
from lesionseg.evaluation.statistics import PRIMARY, compare_arms  # noqa: E402
from lesionseg.evaluation.summary import (ARM_VOLUME_KEYS, VOLUME_KEYS, arm_volume_agreement,  # noqa: E402
                                          lesion_volume_errors, summarize)

CELL = [*ARM_COLUMNS, "sample_size"]
MODEL = [*CELL, "repeat"]
TRANSFER = ("partial", "full", "tuned")
VOLUMETRY = [k for k in VOLUME_KEYS if k != "n_lesion"]  # per trained model, lesion scans only
ARM_VOLUMETRY = [k for k in ARM_VOLUME_KEYS if k != "n_models"]  # a new model of the arm on a new scan
SUMMARY_COLUMNS = ["arm", *CELL, "freeze_depth", "n_repeats", "n_converged", "budget_steps", "dice_lesion_mean",
                   "dice_lesion_sd_between_models", "sham_fp_rate", "sham_fp_volume_mm3_mean", "detection_rate",
                   "hd95_mm_mean", "volume_icc_mean", "volume_icc_sd_between_models", *ARM_VOLUMETRY,
                   "n_lesion_cases", "n_sham_scans", "val_dice_mean"]


@dataclass(frozen=True)
class Evaluated:
    """One evaluated model: its arm and run record (run.json), per-case table and training history."""

    name: str
    info: Mapping
    per_case: pd.DataFrame
    history: pd.DataFrame | None

    @property
    def arm(self) -> Arm:
        return Arm.from_fields(self.info)


def collect(metrics_dir: str | Path, model_dirs: Sequence[tuple[str, Path]]) -> list[Evaluated]:
    """Every (name, model directory) that has a per-case CSV in ``metrics_dir``; the rest are skipped (e.g. a
    combination not run yet), so the report works on whatever the pipeline produced."""
    found = []
    for name, model_dir in model_dirs:
        csv = Path(metrics_dir) / f"{name}.csv"
        if not csv.exists() or not (Path(model_dir) / "run.json").exists():
            continue
        history = Path(model_dir) / "history.tsv"
        found.append(Evaluated(name, read_json(Path(model_dir) / "run.json"), pd.read_csv(csv),
                               pd.read_csv(history, sep="\t") if history.exists() else None))
    return found


def long_table(evaluated: Sequence[Evaluated]) -> pd.DataFrame:
    """One row per trained model x test case: the arm's fields, its label, sample size, repeat, convergence."""
    frames = []
    for ev in evaluated:
        info = ev.info
        frames.append(ev.per_case.assign(**ev.arm.fields(), arm=ev.arm.label, sample_size=int(info["sample_size"]),
                                         repeat=int(info.get("repeat", 0)), converged=bool(info.get("converged")),
                                         name=ev.name, val_dice=float(info["best_val_dice"]),
                                         budget_steps=int(info.get("budget_steps", 0))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def model_table(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per trained model: its named test metrics (:func:`summarize`, the same function whose values go to
    MLflow, the registry and metrics/test.json), volumetry per model on lesion scans only."""
    rows = []
    for key, scans in cases.groupby([*MODEL, "freeze_depth"], sort=True):
        named = summarize(scans)
        rows.append({**dict(zip([*MODEL, "freeze_depth"], key)), "arm": scans["arm"].iloc[0],
                     "converged": bool(scans["converged"].iloc[0]), "budget_steps": int(scans["budget_steps"].max()),
                     "val_dice": float(scans["val_dice"].iloc[0]),
                     **{k: named[k] for k in ("dice_lesion", "sham_fp_rate", "detection_rate", "hd95_mm", "n_lesion",
                                              "n_sham", "sham_fp_volume_mm3", *VOLUMETRY)}})
    return pd.DataFrame(rows)


def summary_table(models: pd.DataFrame, cases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per arm x sample size: each metric computed per trained model, then averaged over the models
    (never over averaged predictions); ``n_converged`` of ``n_repeats`` models converged. The arm's volumetry
    (``arm_volume_*``, :func:`arm_volume_agreement`, from ``cases``) models the models and the scans together:
    limits for a new model on a new scan, never averaged CI bounds."""
    rows = []
    for key, cell in models.groupby(CELL, sort=True):
        depths = cell["freeze_depth"].unique()
        rows.append({**dict(zip(CELL, key)), "arm": cell["arm"].iloc[0],
                     "freeze_depth": int(depths[0]) if len(depths) == 1 else np.nan,  # a tuned arm's may differ
                     "n_repeats": int(len(cell)), "n_converged": int(cell["converged"].sum()),
                     "budget_steps": int(cell["budget_steps"].max()),
                     "dice_lesion_mean": cell["dice_lesion"].mean(),
                     "dice_lesion_sd_between_models": cell["dice_lesion"].std(ddof=1) if len(cell) > 1 else np.nan,
                     "sham_fp_rate": cell["sham_fp_rate"].mean(),
                     "sham_fp_volume_mm3_mean": cell["sham_fp_volume_mm3"].mean(),
                     "detection_rate": cell["detection_rate"].mean(), "hd95_mm_mean": cell["hd95_mm"].mean(),
                     "volume_icc_mean": cell["volume_icc"].mean(),
                     "volume_icc_sd_between_models": cell["volume_icc"].std(ddof=1) if len(cell) > 1 else np.nan,
                     **_arm_volumetry(cases, dict(zip(CELL, key))),
                     "n_lesion_cases": int(cell["n_lesion"].max()),
                     "n_sham_scans": int(cell["n_sham"].max()), "val_dice_mean": cell["val_dice"].mean()})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _arm_volumetry(cases: pd.DataFrame | None, cell: Mapping) -> dict:
    """:func:`arm_volume_agreement` of one arm x size: its models x lesion scans matrix of predicted - manual."""
    if cases is None or cases.empty:
        return {k: np.nan for k in ARM_VOLUMETRY}
    mine = cases[np.logical_and.reduce([cases[k] == v for k, v in cell.items()])]
    out = arm_volume_agreement(lesion_volume_errors(mine))
    return {k: out[k] for k in ARM_VOLUMETRY}


def _settings_of(cases: pd.DataFrame, comparison: Comparison) -> list[bool]:
    """The augmentation settings a comparison that names none runs within: those its control arm was trained
    in (a baseline trained only with augmentation does not make every comparison run at both settings)."""
    control = comparison.control
    trained = cases.loc[(cases["model"] == control.model) & (cases["strategy"] == control.strategy), "augment"]
    return sorted(trained.unique()) if len(trained) else [False]


def paired_tests(cases: pd.DataFrame, comparisons: Sequence[Comparison], *, alpha: float,
                 margin: float, primary_sizes: Sequence[int] | None = None) -> pd.DataFrame:
    """The declared comparisons on lesion-scan Dice at every sample size where both arms were trained (a
    comparison with none is one skipped row):
    run-level inference (:func:`compare_arms`: trained models and cases crossed; the pre-declared primary
    endpoint, the mean over ``primary_sizes``, first), Holm p, Bonferroni-adjusted CIs and a verdict in {better,
    worse, equivalent, inconclusive} (``skipped`` when an arm is missing)."""
    lesion = cases[cases["group"] == "MCAo"]
    pairs = [pair for c in comparisons for pair in c.within(_settings_of(cases, c))]
    tests = compare_arms(lesion, [(t.label, c.label) for t, c in pairs], value="dice", alpha=alpha, margin=margin,
                         primary_sizes=primary_sizes)
    arms = {a.label: a for pair in pairs for a in pair}
    tests["treatment_strategy"] = [arms[t].strategy for t in tests["treatment"]]
    return tests


def findings(summary: pd.DataFrame, tests: pd.DataFrame, *, alpha: float, margin: float) -> list[str]:
    """Generated sentences: how the study was run, then each declared comparison's verdict, primary first."""
    if summary.empty:
        return ["No model has been evaluated yet, so the report makes no comparison."]
    budget = int(summary["budget_steps"].max())
    repeats = summary.groupby("arm")["n_repeats"].max()
    counted = (f"each cell was repeated {int(repeats.iloc[0])} times" if repeats.nunique() == 1 else
               "repeats differ by arm (" + ", ".join(f"{arm} R = {int(r)}" for arm, r in repeats.items()) + ")")
    tested = tests[tests["verdict"] != "skipped"] if len(tests) else tests
    n_primary = int((tested["endpoint"] == PRIMARY).sum()) if len(tested) else 0
    order = (f"the {n_primary} pre-declared primary endpoint(s) (the difference averaged over the declared sizes) "
             f"are tested first at alpha {alpha} (Holm), the {len(tested) - n_primary} per-size rows (Holm among "
             "themselves) only if every primary endpoint was significant" if n_primary else
             f"no primary endpoint was declared (report.primary_sizes), so the {len(tested)} per-size rows are one "
             f"Holm family at alpha {alpha}")
    out = [f"Every arm trained for at most {budget} optimizer steps; {counted}, each repeat with its own seed and "
           f"subset draw. Comparisons treat trained models and test cases as crossed sources of variation, each "
           f"row from its own repeats (nothing pooled over sizes); {order}; CIs Bonferroni-adjusted within each "
           f"family, clipped to [-1, 1]; equivalence margin +-{margin} Dice."]
    for _, t in tests.iterrows():
        out.append(_comparison_sentence(t))
    if (summary["strategy"] == "tuned").any():
        out.append("The tuned arm had an Optuna search of freeze_depth and lr at its size; the other arms used the "
                   "declared per-strategy learning rates, i.e. they did not get the same tuning budget.")
    for _, row in summary[summary["n_converged"] < summary["n_repeats"]].iterrows():
        out.append(f"{row['arm']} at n={row['sample_size']}: {int(row['n_converged'])} of {int(row['n_repeats'])} "
                   "models converged at this budget.")
    return out


def _comparison_sentence(t: pd.Series) -> str:
    where = f"mean over n = {t['sizes']} (primary endpoint)" if t["endpoint"] == PRIMARY else f"n={t['sizes']}"
    head = f"{t['treatment']} vs {t['control']}, {where}"
    if t["verdict"] == "skipped":
        return f"{head}: {t['note']}."
    verdict = "worse (negative transfer)" if t["verdict"] == "worse" and t["treatment_strategy"] in TRANSFER \
        else t["verdict"]
    mdd = f"{t['mdd_80']:.3f}" if pd.notna(t["mdd_80"]) else "not estimable"
    note = f" ({t['note']})" if isinstance(t["note"], str) and t["note"] else ""
    return (f"{head}: Dice difference {t['estimate']:+.3f}, adjusted CI [{t['ci_low_adj']:+.3f}, "
            f"{t['ci_high_adj']:+.3f}], Holm p = {t['p_holm']:.3g}; {int(t['n_repeats_paired'])} paired repeats, "
            f"{int(t['n_cases'])} lesion scans; detectable with 80% power: {mdd}: **{verdict}**{note}. "
            f"{t['equivalence_needs'][:1].upper()}{t['equivalence_needs'][1:]}.")


def build_report(metrics_dir: str | Path, model_dirs: Sequence[tuple[str, Path]], out_dir: str | Path, *,
                 comparisons: Sequence[Comparison], alpha: float = 0.05, margin: float = 0.03,
                 primary_sizes: Sequence[int] | None = None) -> dict:
    """Write summary.csv, models.csv, paired_tests.csv, learning_curve.csv (for `dvc plots`), the figures,
    README.md and headline.json into ``out_dir``; returns the headline and the findings."""
    out_dir = Path(out_dir)
    evaluated = collect(metrics_dir, model_dirs)
    cases = long_table(evaluated)
    models = model_table(cases) if len(cases) else pd.DataFrame()
    summary = summary_table(models, cases) if len(models) else pd.DataFrame(columns=SUMMARY_COLUMNS)
    tests = paired_tests(cases, comparisons, alpha=alpha, margin=margin, primary_sizes=primary_sizes) \
        if len(cases) else pd.DataFrame()
    _write_tables(out_dir, summary, models, tests)
    figures = _figures(evaluated, models, summary, tests, margin, out_dir) if evaluated else {}
    sentences = findings(summary, tests, alpha=alpha, margin=margin)
    write_text(out_dir / "README.md", readme(summary, tests, sentences, figures))
    headline = headline_metrics(summary, tests)
    write_json(out_dir / "headline.json", headline)
    return {"headline": headline, "findings": sentences, "figures": figures}


def _write_tables(out_dir: Path, summary: pd.DataFrame, models: pd.DataFrame, tests: pd.DataFrame) -> None:
    write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    write_text(out_dir / "models.csv", models.to_csv(index=False, float_format="%.6g"))
    write_text(out_dir / "paired_tests.csv", tests.to_csv(index=False, float_format="%.6g"))
    curve = summary[["arm", "sample_size", "dice_lesion_mean", "hd95_mm_mean"]]
    write_text(out_dir / "learning_curve.csv", curve.to_csv(index=False, float_format="%.6g"))


def readme(summary: pd.DataFrame, tests: pd.DataFrame, sentences: Sequence[str], figures: Mapping[str, str]) -> str:
    """The report as Markdown: findings, the arms, the comparisons, the figures."""
    columns = ["arm", "sample_size", "n_repeats", "n_converged", "dice_lesion_mean", "dice_lesion_sd_between_models",
               "sham_fp_rate", "sham_fp_volume_mm3_mean", "detection_rate", "hd95_mm_mean", "volume_icc_mean",
               "arm_volume_bias_mm3", "arm_volume_loa_low_mm3", "arm_volume_loa_high_mm3", "val_dice_mean"]
    parts = ["# lesionseg study report", "", "Generated by the `report` stage from native-space test evaluations. "
             "Metric definitions and the statistics: README, \"Metrics\" and \"The study's verdict\".", "",
             "## Findings", "", *[f"- {s}" for s in sentences], "",
             "## Arms (test split; each metric per trained model, then the mean over models)", "",
             summary[columns].round(3).to_markdown(index=False) if len(summary) else "(no evaluated models)", "",
             "Volumetry is per trained model on lesion scans only (`volume_*` in models.csv, MLflow and the "
             "registry); shams are reported apart (`sham_fp_volume_mm3`). `arm_volume_bias_mm3` and the limits "
             "`arm_volume_loa_*_mm3` model the arm's models and scans together: 95% limits for a new model of the "
             "arm on a new scan, including how much models differ in bias (coverage 0.92-0.95 by simulation, "
             "README \"The study's verdict\").", ""]
    if len(tests):
        shown = ["endpoint", "treatment", "control", "sizes", "estimate", "ci_low_adj", "ci_high_adj", "p_value",
                 "p_holm", "verdict", "mdd_80", "n_repeats_paired", "n_cases"]
        parts += ["## Pre-declared comparisons (lesion Dice; primary endpoint first; CIs adjusted, Bonferroni; "
                  "p Holm-adjusted)", "", tests[shown].round(4).to_markdown(index=False), "",
                  f"Method: {_methods(tests)}", "", "## What `equivalent` would need", "",
                  *[f"- {t['treatment']} vs {t['control']} ({t['endpoint']}, n = {t['sizes']}): "
                    f"{t['equivalence_needs']}" for _, t in tests[tests["verdict"] != "skipped"].iterrows()], ""]
    parts += ["## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    return "\n".join(parts)


def _methods(tests: pd.DataFrame) -> str:
    methods = tests.loc[tests["method"].fillna("") != "", "method"].unique()
    return " | ".join(methods) if len(methods) else "no comparison could be tested"


def headline_metrics(summary: pd.DataFrame, tests: pd.DataFrame) -> dict:
    """Numbers for `dvc metrics show` / `dvc exp show`: per sample size and arm, the named test metrics;
    per comparison, the estimate and its adjusted CI."""
    out: dict = {"n_arms": int(summary["arm"].nunique()) if len(summary) else 0}
    for _, row in summary.iterrows():
        key = "_".join([row["model"], row["strategy"], "aug" if row["augment"] else "noaug"])
        out.setdefault(f"n{int(row['sample_size'])}", {})[key] = {
            "dice_lesion": round(float(row["dice_lesion_mean"]), 4), "sham_fp_rate": float(row["sham_fp_rate"]),
            "hd95_mm": round(float(row["hd95_mm_mean"]), 3)}
    for _, t in tests[tests["verdict"] != "skipped"].iterrows() if len(tests) else []:
        where = f"primary n{t['sizes'].replace(', ', '+')}" if t["endpoint"] == PRIMARY else f"n{t['sizes']}"
        out.setdefault("comparisons", {})[f"{t['treatment']} vs {t['control']} {where}"] = {
            "estimate": round(float(t["estimate"]), 4), "ci_low_adj": round(float(t["ci_low_adj"]), 4),
            "ci_high_adj": round(float(t["ci_high_adj"]), 4)}
    return out


def _figures(evaluated: Sequence[Evaluated], models: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame,
             margin: float, out_dir: Path) -> dict[str, str]:
    return {"Learning curves": plot_learning_curves(models, summary, tests, margin,
                                                    out_dir / "learning_curve.png").name,
            "Per-case Dice": plot_dice_boxes(evaluated, out_dir / "dice_boxplot.png").name,
            "False-positive volume on shams": plot_sham_volumes(models, out_dir / "sham_fp_volume.png").name,
            "Training curves": plot_training_curves(evaluated, out_dir / "training_curves.png").name}


def plot_learning_curves(models: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame, margin: float,
                         out_png: str | Path) -> Path:
    """Left: lesion Dice vs n per arm (line: mean over models; dots: each trained model). Right: each declared
    comparison's difference vs n with its adjusted CI, the equivalence band shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for label, rows in summary.groupby("arm"):
        rows = rows.sort_values("sample_size")
        line, = axes[0].plot(rows["sample_size"], rows["dice_lesion_mean"], marker="o", label=label)
        dots = models[models["arm"] == label]
        axes[0].scatter(dots["sample_size"], dots["dice_lesion"], s=12, alpha=0.5, color=line.get_color())
    axes[0].set(xlabel="training scans (n)", ylabel="test Dice (lesion scans)", ylim=(0, 1),
                title="Dice per arm (dots: trained models)")
    tested = tests[(tests["verdict"] != "skipped") & (tests["endpoint"] != PRIMARY)] if len(tests) else tests
    for i, ((t, c), rows) in enumerate(tested.groupby(["treatment", "control"], sort=False) if len(tested) else []):
        x = rows["sample_size"].astype(float) * (1 + 0.03 * (i - 1))  # dodge overlapping comparisons
        axes[1].errorbar(x, rows["estimate"], yerr=[rows["estimate"] - rows["ci_low_adj"],
                                                    rows["ci_high_adj"] - rows["estimate"]],
                         marker="o", capsize=3, label=f"{t} - {c}")
    axes[1].axhspan(-margin, margin, color="grey", alpha=0.2, label=f"equivalence +-{margin}")
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set(xlabel="training scans (n)", ylabel="Dice difference (adjusted CI)",
                title="declared comparisons, CIs adjusted for the family")
    for ax in axes:
        if len(summary):
            ax.set_xticks(sorted(summary["sample_size"].unique()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_png)


def plot_sham_volumes(models: pd.DataFrame, out_png: str | Path) -> Path:
    """Mean predicted lesion volume on the sham scans (there is none), one dot per trained model."""
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = sorted(models["arm"].unique()) if len(models) else []
    for i, label in enumerate(labels):
        rows = models[models["arm"] == label]
        ax.scatter(np.full(len(rows), i) + 0.05 * (rows["sample_size"].rank(method="dense") - 1),
                   rows["sham_fp_volume_mm3"], label=label)
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set(ylabel="predicted volume on shams (mm3)", title="false-positive volume per trained model")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_png)


def plot_dice_boxes(evaluated: Sequence[Evaluated], out_png: str | Path) -> Path:
    """Per-case test Dice on lesion scans at each sample size, one box per arm (all repeats)."""
    cases = long_table(evaluated)
    cases = cases[cases["group"] == "MCAo"]
    sizes = sorted(cases["sample_size"].unique())
    fig, axes = plt.subplots(1, max(len(sizes), 1), figsize=(6 * max(len(sizes), 1), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        groups = cases[cases["sample_size"] == size].groupby("arm")["dice"]
        ax.boxplot([g.dropna() for _, g in groups], tick_labels=[a for a, _ in groups])
        ax.set(title=f"n = {size}", ylabel="test Dice per lesion scan", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_png)


def plot_training_curves(evaluated: Sequence[Evaluated], out_png: str | Path) -> Path:
    """Train loss and validation Dice (raw, and the smoothed curve that picks the checkpoint) against steps."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ev in evaluated:
        if ev.history is None or ev.history.empty:
            continue
        x = ev.history["step"] if "step" in ev.history else ev.history["epoch"]
        axes[0].plot(x, ev.history["train_loss"], label=ev.name)
        line, = axes[1].plot(x, ev.history["val_dice"], alpha=0.3, lw=0.8)
        if "val_dice_ema" in ev.history:
            axes[1].plot(x, ev.history["val_dice_ema"], color=line.get_color(), label=ev.name)
    axes[0].set(xlabel="optimizer step", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="optimizer step", ylabel="validation Dice", ylim=(0, 1),
                title="validation Dice (faint: raw; solid: smoothed, picks the checkpoint)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="best")
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out_png)
