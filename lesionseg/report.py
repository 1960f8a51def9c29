"""The study report: per-case native-space test results over repeats -> summary, pre-declared paired tests
with Holm's correction, a mixed model, figures and a generated README.

Input: the evaluate stage's per-case CSVs (``metrics/test/<name>.csv``) and each model's ``run.json``.
The comparisons are declared in params.yaml (``report.comparisons``) before any result exists; nothing here
picks an arm by its test numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lesionseg.data.io import atomic_path, read_json, write_json, write_text  # noqa: E402
from lesionseg.evaluation.statistics import (bootstrap_mean_ci, compare_declared, mixed_model,  # noqa: E402
                                             per_case_over_repeats)
from lesionseg.evaluation.summary import summarize_over_repeats  # noqa: E402

CELL = ["arm", "sample_size"]


@dataclass(frozen=True)
class Evaluated:
    """One evaluated model: its identity (from run.json), per-case table and training history."""

    name: str
    info: Mapping
    per_case: pd.DataFrame
    history: pd.DataFrame | None


def arm_of(info: Mapping, tuned: bool) -> str:
    """The arm a run belongs to: ``model/strategy/aug`` (``model/tuned/...`` for a tuned run)."""
    strategy = "tuned" if tuned else info["strategy"]
    return f"{info['model']}/{strategy}/{'aug' if info['augment'] else 'noaug'}"


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
    """One row per model x repeat x test case, with its arm, sample size, repeat and convergence."""
    frames = []
    for ev in evaluated:
        info = ev.info
        frames.append(ev.per_case.assign(arm=arm_of(info, ev.name.startswith("tuned-")),
                                         sample_size=int(info["sample_size"]), repeat=int(info.get("repeat", 0)),
                                         converged=bool(info.get("converged", False)), name=ev.name,
                                         val_dice=float(info["best_val_dice"]),
                                         budget_steps=int(info.get("budget_steps", 0))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_table(cases: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """One row per arm x sample size, over repeats: named metrics averaged over repeats (CIs and volume
    agreement count each scan once), the Dice of each case averaged over repeats with a BCa CI over cases,
    and the between-repeat SD."""
    rows = []
    for (arm, n), cell in cases.groupby(CELL, sort=True):
        named = summarize_over_repeats(cell)
        lesion = cell[cell["group"] == "MCAo"]
        per_case = lesion.groupby("case_id")["dice"].mean()
        low, high = bootstrap_mean_ci(per_case.to_numpy(), seed=seed)
        repeats = cell.groupby("repeat")
        rows.append({"arm": arm, "sample_size": n, "n_repeats": repeats.ngroups,
                     "converged": f"{int(repeats['converged'].first().sum())}/{repeats.ngroups}",
                     "budget_steps": int(cell["budget_steps"].max()),
                     "dice_lesion_mean": named["dice_lesion"], "dice_lesion_ci_low": low, "dice_lesion_ci_high": high,
                     "dice_lesion_between_repeat_sd": float(repeats.apply(
                         lambda r: r.loc[r["group"] == "MCAo", "dice"].mean()).std()),
                     "sham_fp_rate": named["sham_fp_rate"], "sham_fp_ci_low": named["sham_fp_ci_low"],
                     "sham_fp_ci_high": named["sham_fp_ci_high"], "detection_rate": named["detection_rate"],
                     "hd95_mm_mean": named["hd95_mm"], "volume_error_mm3_mean": named["volume_error_mm3"],
                     "volume_bias_mm3": named["volume_bias_mm3"], "volume_icc": named["volume_icc"],
                     "n_lesion_cases": int(per_case.size), "n_sham_scans": named["n_sham"],
                     "val_dice_mean": float(repeats["val_dice"].first().mean())})
    return pd.DataFrame(rows)


def declared(comparisons: Sequence[Mapping], sizes: Sequence[int],
             augments: Sequence[str] = ("noaug",)) -> list[tuple[str, str, int]]:
    """Each declared ``{treatment, control}`` at every sample size of the study. An arm written
    ``MODEL/STRATEGY`` (no augmentation part) is compared within each augmentation setting of the study."""
    out = []
    for c in comparisons:
        treatment, control = c["treatment"], c["control"]
        pairs = ([(f"{treatment}/{a}", f"{control}/{a}") for a in augments]
                 if treatment.count("/") == 1 and control.count("/") == 1 else [(treatment, control)])
        out += [(t, k, int(n)) for t, k in pairs for n in sorted(set(sizes))]
    return out


def paired_tests(cases: pd.DataFrame, comparisons: Sequence[Mapping], *, alpha: float, seed: int) -> pd.DataFrame:
    """Two-sided paired Wilcoxon per declared comparison on lesion cases' Dice averaged over repeats, Holm
    across all of them, and the paired mean difference with a BCa CI over cases."""
    lesion = cases[cases["group"] == "MCAo"]
    per_case = per_case_over_repeats(lesion, value="dice", by=CELL)
    augments = sorted(set(cases["arm"].str.rsplit("/", n=1).str[1]), reverse=True)  # noaug first
    return compare_declared(per_case, declared(comparisons, cases["sample_size"].unique(), augments),
                            value="dice", alpha=alpha, seed=seed)


def findings(summary: pd.DataFrame, tests: pd.DataFrame, *, alpha: float) -> list[str]:
    """Generated sentences: every declared comparison, significant only after Holm's correction."""
    if summary.empty:
        return ["No model has been evaluated yet, so the report makes no comparison."]
    budget = int(summary["budget_steps"].max())
    repeats = summary.groupby("arm")["n_repeats"].max()
    counted = (f"each cell was repeated {int(repeats.iloc[0])} times" if repeats.nunique() == 1 else
               "repeats differ by arm (" + ", ".join(f"{arm} R = {int(r)}" for arm, r in repeats.items()) + ")")
    out = [f"Every arm trained for at most {budget} optimizer steps; {counted}, each repeat with its own seed and "
           "subset draw; test Dice is over lesion scans, averaged per case over repeats."]
    for _, t in tests.iterrows():
        if t["direction"] == "skipped":
            out.append(f"{t['comparison']}: {t['note']}.")
            continue
        transfer = t["treatment"].split("/")[1] in ("partial", "full", "tuned")
        verdict = {"better": "significantly better",
                   "worse": "significantly worse (negative transfer)" if transfer else "significantly worse"}.get(
                       t["direction"], "no significant difference")
        out.append(f"{t['treatment']} vs {t['control']} at n={t['sample_size']}: paired mean Dice difference "
                   f"{t['mean_diff']:+.3f} [{t['diff_ci_low']:+.3f}, {t['diff_ci_high']:+.3f}] over {int(t['n_cases'])} "
                   f"lesion cases, Wilcoxon p = {t['p_value']:.3g}, Holm p = {t['p_holm']:.3g} (alpha {alpha}): {verdict}.")
    if summary["arm"].str.contains("/tuned/").any():
        out.append("The tuned arm had an Optuna search of freeze_depth and lr at its size; the other arms used the "
                   "declared per-strategy learning rates, i.e. they did not get the same tuning budget.")
    unconverged = summary[summary["converged"].str.split("/").str[0] != summary["n_repeats"].astype(str)]
    for _, row in unconverged.iterrows():
        out.append(f"{row['arm']} at n={row['sample_size']} converged in {row['converged']} repeats at this budget.")
    return out


def build_report(metrics_dir: str | Path, model_dirs: Sequence[tuple[str, Path]], out_dir: str | Path, *,
                 comparisons: Sequence[Mapping], alpha: float = 0.05, seed: int = 0) -> dict:
    """Write summary.csv, paired_tests.csv, mixed_model.csv, learning_curve.csv (for `dvc plots`), the
    figures, README.md and headline.json into ``out_dir``; returns the headline and the findings."""
    out_dir = Path(out_dir)
    evaluated = collect(metrics_dir, model_dirs)
    cases = long_table(evaluated)
    summary = summary_table(cases, seed=seed) if len(cases) else pd.DataFrame(columns=["arm", "sample_size"])
    tests = paired_tests(cases, comparisons, alpha=alpha, seed=seed) if len(cases) else pd.DataFrame()
    model = _mixed_model(cases, comparisons)
    _write_tables(out_dir, summary, tests, model)
    figures = _figures(evaluated, summary, out_dir) if evaluated else {}
    sentences = findings(summary, tests, alpha=alpha)
    write_text(out_dir / "README.md", readme(summary, tests, model, sentences, figures))
    headline = headline_metrics(summary)
    write_json(out_dir / "headline.json", headline)
    return {"headline": headline, "findings": sentences, "figures": figures}


def _mixed_model(cases: pd.DataFrame, comparisons: Sequence[Mapping]):
    """The secondary analysis, with the first declared control arm (if present) as the reference."""
    if cases.empty:
        return None
    lesion = cases[cases["group"] == "MCAo"]
    controls = [c["control"] for c in comparisons if c["control"] in set(lesion["arm"])]
    return mixed_model(lesion, value="dice", reference=controls[0] if controls else None)


def _write_tables(out_dir: Path, summary: pd.DataFrame, tests: pd.DataFrame, model) -> None:
    write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    write_text(out_dir / "paired_tests.csv", tests.to_csv(index=False, float_format="%.6g"))
    table = model.table if model is not None else pd.DataFrame()
    write_text(out_dir / "mixed_model.csv", table.to_csv(index=False, float_format="%.6g"))
    curve = summary[["arm", "sample_size", "dice_lesion_mean", "hd95_mm_mean"]] if len(summary) else summary
    write_text(out_dir / "learning_curve.csv", curve.to_csv(index=False, float_format="%.6g")
               if len(summary) else "arm,sample_size,dice_lesion_mean,hd95_mm_mean\n")


def readme(summary: pd.DataFrame, tests: pd.DataFrame, model, sentences: Sequence[str],
           figures: Mapping[str, str]) -> str:
    """The report as Markdown: findings, the table, the paired tests, the mixed model, the figures."""
    columns = ["arm", "sample_size", "n_repeats", "converged", "dice_lesion_mean", "dice_lesion_ci_low",
               "dice_lesion_ci_high", "dice_lesion_between_repeat_sd", "sham_fp_rate", "detection_rate",
               "hd95_mm_mean", "volume_error_mm3_mean", "volume_icc", "val_dice_mean"]
    parts = ["# lesionseg study report", "", "Generated by the `report` stage from native-space test evaluations. "
             "Metric definitions: README, \"Metrics\".", "", "## Findings", "", *[f"- {s}" for s in sentences], "",
             "## Arms (test split, over repeats)", "",
             summary[columns].round(3).to_markdown(index=False) if len(summary) else "(no evaluated models)", ""]
    if len(tests):
        parts += ["## Pre-declared comparisons (two-sided paired Wilcoxon on lesion Dice averaged over repeats; "
                  "Holm across all)", "", tests.round(4).to_markdown(index=False), ""]
    if model is not None:
        parts += [f"## Secondary: mixed model `{model.formula}`, random intercept per case", "",
                  model.table.round(4).to_markdown(index=False) if len(model.table) else "(not fitted)",
                  "", f"Note: {model.note or 'fit converged'}", ""]
    parts += ["## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    return "\n".join(parts)


def headline_metrics(summary: pd.DataFrame) -> dict:
    """Numbers for `dvc metrics show` / `dvc exp show`: per sample size and arm, the named test metrics."""
    out: dict = {"n_arms": int(len(summary))}
    for _, row in summary.iterrows():
        out.setdefault(f"n{int(row['sample_size'])}", {})[row["arm"].replace("/", "_")] = {
            "dice_lesion": round(float(row["dice_lesion_mean"]), 4), "sham_fp_rate": float(row["sham_fp_rate"]),
            "hd95_mm": round(float(row["hd95_mm_mean"]), 3)}
    return out


def _figures(evaluated: Sequence[Evaluated], summary: pd.DataFrame, out_dir: Path) -> dict[str, str]:
    return {"Learning curves": plot_learning_curves(summary, out_dir / "learning_curve.png").name,
            "Per-case Dice": plot_dice_boxes(evaluated, out_dir / "dice_boxplot.png").name,
            "Training curves": plot_training_curves(evaluated, out_dir / "training_curves.png").name}


def plot_learning_curves(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """Lesion Dice and HD95 vs sample size, one line per arm with its 95% CI band."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm, rows in summary.groupby("arm"):
        rows = rows.sort_values("sample_size")
        axes[0].plot(rows["sample_size"], rows["dice_lesion_mean"], marker="o", label=arm)
        axes[0].fill_between(rows["sample_size"], rows["dice_lesion_ci_low"], rows["dice_lesion_ci_high"], alpha=0.15)
        axes[1].plot(rows["sample_size"], rows["hd95_mm_mean"], marker="o", label=arm)
    axes[0].set(xlabel="training scans (n)", ylabel="test Dice (lesion scans)", ylim=(0, 1))
    axes[1].set(xlabel="training scans (n)", ylabel="test HD95 (mm, misses penalised)")
    for ax in axes:
        ax.set_xticks(sorted(summary["sample_size"].unique()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
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
    """Train loss and validation Dice against optimizer steps for every run in the report."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ev in evaluated:
        if ev.history is None or ev.history.empty:
            continue
        x = ev.history["step"] if "step" in ev.history else ev.history["epoch"]
        axes[0].plot(x, ev.history["train_loss"], label=ev.name)
        axes[1].plot(x, ev.history["val_dice"], label=ev.name)
    axes[0].set(xlabel="optimizer step", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="optimizer step", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="best")
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out_png)
