"""The study report: aggregate per-case test results, statistics, figures and a generated README.

Input: the evaluate stage's per-case CSVs (``metrics/test/<name>.csv``) and each model's ``run.json``.
Output: ``summary.csv`` (one row per model x strategy x freeze_depth x sample size x augmentation),
the learning-curve, box-plot and training-curve figures, ``README.md`` and ``headline.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from lesionseg.data.io import atomic_path, read_json, write_json, write_text  # noqa: E402

GROUP_KEYS = ["model", "strategy", "freeze_depth", "sample_size", "augment", "tuned"]


@dataclass(frozen=True)
class Evaluated:
    """One evaluated model: its identity (from run.json), per-case table and training history."""

    name: str
    info: Mapping
    per_case: pd.DataFrame
    history: pd.DataFrame | None


def collect(metrics_dir: str | Path, model_dirs: Sequence[tuple[str, Path]]) -> list[Evaluated]:
    """Every (name, model directory) that has a per-case CSV in ``metrics_dir``; the rest are skipped (e.g. a
    combination not run yet), so the report works on whatever the pipeline produced."""
    found = []
    for name, model_dir in model_dirs:
        model_dir = Path(model_dir)
        csv = Path(metrics_dir) / f"{name}.csv"
        if not csv.exists() or not (model_dir / "run.json").exists():
            continue
        history = model_dir / "history.tsv"
        found.append(Evaluated(name, read_json(model_dir / "run.json"), pd.read_csv(csv),
                               pd.read_csv(history, sep="\t") if history.exists() else None))
    return found


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (seeded); NaN bounds when there are no values."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _describe(values: np.ndarray, prefix: str, n_boot: int, seed: int) -> dict[str, float]:
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    empty = values.size == 0
    return {
        f"{prefix}_mean": float(np.mean(values)) if not empty else float("nan"),
        f"{prefix}_sd": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
        f"{prefix}_median": float(np.median(values)) if not empty else float("nan"),
        f"{prefix}_ci_low": low, f"{prefix}_ci_high": high,
    }


def summarize_model(ev: Evaluated, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """One summary row: Dice and HD95 over the lesion (MCAo) test cases (a missed lesion scores Dice 0 and
    has no finite HD95), and, separately, how many shams were correctly left empty. (The evaluate stage's
    summary.json follows nnU-Net instead: its mean Dice also counts a false alarm on a sham as 0.)"""
    table = ev.per_case
    shams = table["group"] == "sham"
    lesions = table[~shams]
    dice = lesions["dice"].to_numpy(dtype=float)
    hd = lesions["hd95_mm"].to_numpy(dtype=float)
    hd = hd[np.isfinite(hd)]
    row = {
        "name": ev.name, "model": ev.info["model"], "strategy": ev.info["strategy"],
        "freeze_depth": int(ev.info["freeze_depth"]), "sample_size": int(ev.info["sample_size"]),
        "augment": bool(ev.info["augment"]), "tuned": ev.name.startswith("tuned-"),
        "n_test": int(len(table)), "n_lesion": int(len(lesions)), "n_missed": int((lesions["outcome"] == "missed").sum()),
        **_describe(dice, "dice", n_boot, seed), **_describe(hd, "hd95_mm", n_boot, seed),
        "n_sham": int(shams.sum()), "sham_correct_empty": int((table.loc[shams, "outcome"] == "true_empty").sum()),
        "val_dice": float(ev.info["best_val_dice"]), "run_id": ev.info["run_id"],
    }
    return row


def summary_table(evaluated: Sequence[Evaluated], *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """All summary rows, ordered by model, sample size, strategy."""
    if not evaluated:
        return pd.DataFrame(columns=["name", *GROUP_KEYS])
    rows = [summarize_model(ev, n_boot=n_boot, seed=seed) for ev in evaluated]
    return pd.DataFrame(rows).sort_values(["model", "sample_size", "tuned", "strategy", "augment"],
                                          ignore_index=True)


def paired_tests(evaluated: Sequence[Evaluated]) -> pd.DataFrame:
    """Transfer (partial/full/tuned) vs scratch, same model, sample size and augmentation: one-sided paired
    Wilcoxon signed-rank test over the lesion (MCAo) test cases (transfer Dice greater)."""
    by_name = {ev.name: ev for ev in evaluated}
    rows = []
    for ev in evaluated:
        if ev.info["strategy"] == "scratch" and not ev.name.startswith("tuned-"):
            continue
        aug = "aug" if ev.info["augment"] else "noaug"
        scratch = by_name.get(f"{ev.info['model']}-scratch-n{ev.info['sample_size']}-{aug}")
        if scratch is None:
            continue
        pair = ev.per_case.merge(scratch.per_case, on="case_id", suffixes=("", "_scratch"))
        pair = pair[pair["group"] != "sham"]
        diff = pair["dice"] - pair["dice_scratch"]
        p = (float(wilcoxon(pair["dice"], pair["dice_scratch"], alternative="greater").pvalue)
             if len(pair) and np.any(diff != 0) else 1.0)
        rows.append({"transfer": ev.name, "scratch": scratch.name, "sample_size": int(ev.info["sample_size"]),
                     "n_pairs": int(len(pair)), "dice_transfer": float(pair["dice"].mean()),
                     "dice_scratch": float(pair["dice_scratch"].mean()), "dice_gain": float(diff.mean()),
                     "wilcoxon_p": p})
    return pd.DataFrame(rows)


def _label(row: Mapping) -> str:
    if row["tuned"]:
        return f"{row['model']} tuned"
    depth = f" d{row['freeze_depth']}" if row["strategy"] == "partial" else ""
    return f"{row['model']} {row['strategy']}{depth}{' +aug' if row['augment'] else ''}"


def plot_learning_curves(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """Dice and HD95 vs sample size, one line per model/strategy with 95% bootstrap CI bands."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    lines = summary.assign(label=summary.apply(_label, axis=1)).groupby("label")
    for label, rows in lines:
        rows = rows.sort_values("sample_size")
        for ax, metric in zip(axes, ("dice", "hd95_mm")):
            ax.plot(rows["sample_size"], rows[f"{metric}_mean"], marker="o", label=label)
            ax.fill_between(rows["sample_size"], rows[f"{metric}_ci_low"], rows[f"{metric}_ci_high"], alpha=0.15)
    axes[0].set(xlabel="training scans (n)", ylabel="test Dice (lesion cases)", title="Dice vs sample size",
                ylim=(0, 1))
    axes[1].set(xlabel="training scans (n)", ylabel="test HD95 (mm)", title="HD95 vs sample size")
    for ax in axes:
        ax.set_xticks(sorted(summary["sample_size"].unique()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    return _save(fig, out_png)


def plot_dice_boxes(evaluated: Sequence[Evaluated], out_png: str | Path) -> Path:
    """Per-case test Dice at each sample size, one box per model/strategy."""
    sizes = sorted({int(ev.info["sample_size"]) for ev in evaluated})
    fig, axes = plt.subplots(1, max(len(sizes), 1), figsize=(5 * max(len(sizes), 1), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        group = [ev for ev in evaluated if int(ev.info["sample_size"]) == size]
        labels = [_label({**ev.info, "tuned": ev.name.startswith("tuned-")}) for ev in group]
        ax.boxplot([ev.per_case["dice"].dropna() for ev in group], tick_labels=labels)
        ax.set(title=f"n = {size}", ylabel="test Dice per case", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_png)


def plot_training_curves(evaluated: Sequence[Evaluated], out_png: str | Path) -> Path:
    """Train loss and validation Dice per epoch for every run in the report."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ev in evaluated:
        if ev.history is None or ev.history.empty:
            continue
        axes[0].plot(ev.history["epoch"], ev.history["train_loss"], label=ev.name)
        axes[1].plot(ev.history["epoch"], ev.history["val_dice"], label=ev.name)
    axes[0].set(xlabel="epoch", ylabel="train loss (soft Dice)", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out_png)


def findings(summary: pd.DataFrame, tests: pd.DataFrame) -> list[str]:
    """Sentences with the numbers: the best transfer setting vs scratch at each sample size."""
    if tests.empty:
        return ["No transfer/scratch pair has been evaluated yet, so the report makes no comparison."]
    sentences = []
    for _, test in tests.sort_values(["sample_size", "dice_gain"], ascending=[True, False]).groupby("sample_size"):
        best = test.iloc[0]
        row = summary.set_index("name").loc[best["transfer"]]
        base = summary.set_index("name").loc[best["scratch"]]
        verdict = "significantly better" if best["wilcoxon_p"] < 0.05 else "not significantly better"
        sentences.append(
            f"At n={int(best['sample_size'])}, {_label(row.to_dict() | {'model': row['model']})} reaches Dice "
            f"{row['dice_mean']:.2f} [{row['dice_ci_low']:.2f}, {row['dice_ci_high']:.2f}] vs "
            f"{base['dice_mean']:.2f} [{base['dice_ci_low']:.2f}, {base['dice_ci_high']:.2f}] from scratch "
            f"(HD95 {row['hd95_mm_mean']:.2f} vs {base['hd95_mm_mean']:.2f} mm); paired Wilcoxon over "
            f"{int(best['n_pairs'])} lesion cases p = {best['wilcoxon_p']:.3g}: {verdict}."
        )
    return sentences


def readme(summary: pd.DataFrame, tests: pd.DataFrame, sentences: Sequence[str], figures: Mapping[str, str]) -> str:
    """The report as Markdown: findings, the table, the paired tests, the figures."""
    columns = ["name", "sample_size", "dice_mean", "dice_ci_low", "dice_ci_high", "dice_median", "hd95_mm_mean",
               "hd95_mm_median", "sham_correct_empty", "n_sham", "val_dice"]
    parts = ["# lesionseg study report", "", "Generated by the `report` stage from the test-split evaluations.", "",
             "## Findings", "", *[f"- {s}" for s in sentences], "", "## Models (test split)", "",
             summary[columns].round(3).to_markdown(index=False) if len(summary) else "(no evaluated models)", ""]
    if len(tests):
        parts += ["## Transfer vs scratch (one-sided paired Wilcoxon over lesion test cases)", "",
                  tests.round(4).to_markdown(index=False), ""]
    parts += ["## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    return "\n".join(parts)


def build_report(metrics_dir: str | Path, model_dirs: Sequence[tuple[str, Path]], out_dir: str | Path, *,
                 n_boot: int = 2000, seed: int = 0) -> dict:
    """Write summary.csv, paired_tests.csv, learning_curve.csv (for `dvc plots`), the figures, README.md and
    headline.json into ``out_dir``; returns the headline numbers."""
    out_dir = Path(out_dir)
    evaluated = collect(metrics_dir, model_dirs)
    summary = summary_table(evaluated, n_boot=n_boot, seed=seed)
    tests = paired_tests(evaluated)
    write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    write_text(out_dir / "paired_tests.csv", tests.to_csv(index=False, float_format="%.6g"))
    curve = summary.assign(series=summary.apply(_label, axis=1) if len(summary) else [])
    write_text(out_dir / "learning_curve.csv",
               curve[["series", "sample_size", "dice_mean", "hd95_mm_mean"]].to_csv(index=False, float_format="%.6g")
               if len(summary) else "series,sample_size,dice_mean,hd95_mm_mean\n")
    figures = {}
    if evaluated:
        figures = {"Learning curves": plot_learning_curves(summary, out_dir / "learning_curve.png").name,
                   "Per-case Dice": plot_dice_boxes(evaluated, out_dir / "dice_boxplot.png").name,
                   "Training curves": plot_training_curves(evaluated, out_dir / "training_curves.png").name}
    sentences = findings(summary, tests)
    write_text(out_dir / "README.md", readme(summary, tests, sentences, figures))
    write_json(out_dir / "headline.json", headline_metrics(summary))
    return {"headline": headline_metrics(summary), "findings": sentences, "figures": figures}


def headline_metrics(summary: pd.DataFrame) -> dict:
    """Numbers for `dvc metrics show` / `dvc exp show`: test Dice and HD95 per setting, keyed by sample size."""
    out: dict = {"n_models": int(len(summary))}
    for _, row in summary.iterrows():
        key = _label(row).replace(" ", "_").replace("+", "")
        out.setdefault(f"n{int(row['sample_size'])}", {})[key] = {
            "dice": round(float(row["dice_mean"]), 4), "hd95_mm": round(float(row["hd95_mm_mean"]), 3)}
    return json.loads(json.dumps(out).replace("NaN", "null"))
