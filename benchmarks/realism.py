"""Realism of the synthetic rats, judged by a model trained on real scans: the authors' published RatLesNetV2.

Synthetic rats are generated at the published geometry (256x256 in-plane, 18 slices) with the package's
generator (:func:`lesionseg.data.synthetic.synthesize_dataset`, what ``lesionseg synth`` calls) and fed to the
published weights exactly as the authors fed real scans (jmlipman/RatLesNetv2, ``lib/DataWrapper.py`` and
``eval.py``): the stored voxel array of the NIfTI file, z-scored over the whole volume, the slice axis moved
first, shaped ``(1, 1, 18, 256, 256)``; argmax of the 2-channel output; islands and holes under 20 voxels
removed (26-connectivity, as their ``removeSmallIslands``). The authors' in-plane orientation is not published,
so every case is run in all 8 in-plane orientations (transpose and flips of the two in-plane axes).

Reported: per-case lesion Dice, the predicted volume (mm3) and the part of it inside the brain, the mean Dice of
each orientation (the best one is named), and overlays of the predictions (best orientation) on two lesion scans and
a sham. Several ``--weights`` make several judges: the first is the primary (issue 26's "published model", the
authors' heterogeneous model-1); the others are reported beside it, and so is their majority vote as the authors'
``eval.py`` forms it (a voxel is lesion where more than half of the post-processed masks say so; islands and holes
are then removed again).

    python benchmarks/realism.py --seed 5309          # 8 lesion + 4 sham rats, 8 orientations
    python benchmarks/realism.py --out benchmarks/results_realism_before.md --label before
    python benchmarks/realism.py --seed S --weights ../shared/pretrained/ratlesnetv2-heterogeneous-model-1 \
        RatLesNetv2/trained_models/Table2-3/RatLesNetv2/heterogeneous/model-{2,3}   # three judges and their vote

One forward pass at 18x256x256 took about 5.5 s on 2 CPU threads (2026-12-07, a Xeon without AMX: 3 judges x 8
orientations x 24 rats, 576 passes, in 3142 s with generation); the default run makes 96 of them.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lesionseg.data.synthetic import generate_cases, synthesize_dataset  # noqa: E402
from lesionseg.evaluation.metrics import dice  # noqa: E402
from lesionseg.evaluation.overlays import render_slices  # noqa: E402
from lesionseg.networks import load_pretrained  # noqa: E402
from lesionseg.networks.ratlesnetv2 import RatLesNetV2  # noqa: E402

WEIGHTS = ROOT.parent / "shared" / "pretrained" / "ratlesnetv2-heterogeneous-model-1"
RESULTS = ROOT / "benchmarks" / "results_realism.md"
ISLAND_VOXELS = 20  # the authors' eval.py: removeSmallIslands_thr = 20
TARGET_DICE = 0.7  # issue 26, item 5: mean lesion Dice in the best orientation
TARGET_SHAM_MM3 = 10.0  # ... and every sham's predicted volume below this
COLUMNS = ["case_id", "group", "stage", "territory", "orientation", "dice", "predicted_mm3", "in_brain_mm3",
           "true_mm3"]
MAJORITY = "majority vote"


@dataclass(frozen=True)
class Orientation:
    """One of the 8 in-plane orientations of the model's (rows, columns) plane: transpose, then flips."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool

    @property
    def name(self) -> str:
        parts = ["T" if self.transpose else "", "fr" if self.flip_rows else "", "fc" if self.flip_cols else ""]
        return "+".join(p for p in parts if p) or "stored"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Reorient the last two axes of ``x``."""
        if self.transpose:
            x = np.swapaxes(x, -1, -2)
        if self.flip_rows:
            x = np.flip(x, -2)
        if self.flip_cols:
            x = np.flip(x, -1)
        return np.ascontiguousarray(x)

    def undo(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`apply`."""
        if self.flip_cols:
            x = np.flip(x, -1)
        if self.flip_rows:
            x = np.flip(x, -2)
        if self.transpose:
            x = np.swapaxes(x, -1, -2)
        return np.ascontiguousarray(x)

    def describe(self, affine: np.ndarray) -> str:
        """Where the model's rows (down) and columns (right) point in the subject, e.g. ``rows->I cols->L``."""
        rows, cols = (1, 0) if self.transpose else (0, 1)  # stored array axes shown as rows / columns
        words = []
        for what, axis, flipped in (("rows", rows, self.flip_rows), ("cols", cols, self.flip_cols)):
            direction = affine[:3, axis] * (-1 if flipped else 1)
            k = int(np.argmax(np.abs(direction)))
            words.append(f"{what}->{'RAS'[k] if direction[k] > 0 else 'LPI'[k]}")
        return " ".join(words)


ORIENTATIONS = [Orientation(*flags) for flags in itertools.product((False, True), repeat=3)]


def load_model(weights: Path = WEIGHTS, threads: int = 2) -> RatLesNetV2:
    """The published network (32 filters) with the authors' weights, loaded strictly with ``weights_only=True``."""
    torch.set_num_threads(threads)
    model = RatLesNetV2(in_channels=1, out_channels=2, filters=32)
    load_pretrained(model, weights, strict=True)
    return model.eval()


def judge_name(weights: Path) -> str:
    """A judge's name from its weights file: ``heterogeneous/model-2`` from ``.../heterogeneous/model-2``; the
    shared copy ``ratlesnetv2-heterogeneous-model-1`` reads ``heterogeneous/model-1``."""
    weights = Path(weights)
    if weights.name.startswith("ratlesnetv2-"):
        kind, _, model = weights.name.removeprefix("ratlesnetv2-").partition("-")
        return f"{kind}/{model}"
    return f"{weights.parent.name}/{weights.name}"


def load_judges(weights: list[Path], threads: int = 2) -> dict[str, RatLesNetV2]:
    """The published models by name, in the order given (the first is the primary judge)."""
    judges = {judge_name(w): load_model(w, threads) for w in weights}
    if len(judges) != len(weights):
        raise SystemExit(f"--weights: two files share a judge name ({[judge_name(w) for w in weights]}); "
                         "pass each published model once")
    return judges


def majority_vote(masks: list[np.ndarray]) -> np.ndarray:
    """The authors' ``eval.py`` majority vote: lesion where more than half of the masks say so, islands removed."""
    return remove_small_islands(np.sum(masks, axis=0) > len(masks) / 2)


def authors_input(stored: np.ndarray) -> np.ndarray:
    """The authors' preprocessing: whole-volume z-score, slice (last) axis first: (H, W, D) -> (D, H, W)."""
    x = stored.astype(np.float32)
    x = (x - x.mean()) / x.std()
    return np.moveaxis(x, -1, 0)


def remove_small_islands(mask: np.ndarray, threshold: int = ISLAND_VOXELS) -> np.ndarray:
    """Drop lesion components and fill holes smaller than ``threshold`` voxels (26-connectivity)."""
    mask = mask.astype(bool).copy()
    structure = np.ones((3, 3, 3), bool)
    for value in (True, False):
        labels, n = ndimage.label(mask == value, structure)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = np.flatnonzero(sizes < threshold)
        small = small[small > 0]
        mask[np.isin(labels, small)] = not value
    return mask


def predict(model: RatLesNetV2, stored: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Lesion mask (stored layout) predicted on the stored array shown to the model in ``orientation``."""
    x = orientation.apply(authors_input(stored))
    with torch.inference_mode():
        logits = model.forward_authors_order(torch.from_numpy(x)[None, None])
    mask = remove_small_islands(logits[0].argmax(0).numpy().astype(bool))
    return np.moveaxis(orientation.undo(mask), 0, -1)


def generate(out_dir: Path, n_lesion: int, n_sham: int, seed: int) -> Path:
    """Synthetic rats at the published geometry (the domain's default 256x256x18), ``n_sham`` of them shams."""
    n = n_lesion + n_sham
    return synthesize_dataset("rat", n, seed, out_dir, sham_fraction=n_sham / n, case_prefix="realism")


def brain_masks(n_lesion: int, n_sham: int, seed: int) -> dict[str, np.ndarray]:
    """The brain mask of each case :func:`generate` writes (the same draws again; the dataset stores no brain mask)."""
    n = n_lesion + n_sham
    cases = generate_cases("rat", n, seed, sham_fraction=n_sham / n, case_prefix="realism")
    return {case.case_id: case.brain_mask for case, _ in cases}


def _read_cases(dataset: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    rows = list(csv.DictReader((dataset / "cases.csv").open()))
    out = []
    for row in rows:
        image = nib.load(dataset / "imagesTr" / f"{row['case_id']}_0000.nii.gz")
        label = np.asanyarray(nib.load(dataset / "labelsTr" / f"{row['case_id']}.nii.gz").dataobj).astype(bool)
        out.append((row["case_id"], row["group"], np.asanyarray(image.dataobj), label, image.affine))
    return out


def _lesion_draws(dataset: Path) -> dict[str, dict]:
    """Each case's lesion time point and territory class, as the generator recorded them in dataset.json."""
    meta = json.loads((dataset / "dataset.json").read_text())
    return meta.get("generator", {}).get("case_lesion", {})


def evaluate(dataset: Path, judges: dict[str, RatLesNetV2], orientations: list[Orientation],
             brains: dict[str, np.ndarray]) -> tuple[list[dict], dict]:
    """One row per (case, orientation, judge), the majority vote a judge of its own where there are several; also
    the primary judge's predicted masks, keyed (case_id, orientation name)."""
    rows, masks = [], {}
    draws = _lesion_draws(dataset)
    primary = next(iter(judges))
    for case_id, group, image, label, affine in _read_cases(dataset):
        voxel_mm3 = float(np.prod(nib.affines.voxel_sizes(affine)))
        drawn = draws.get(case_id, {})
        for orientation in orientations:
            predicted = {name: predict(model, image, orientation) for name, model in judges.items()}
            if len(judges) > 1:
                predicted[MAJORITY] = majority_vote(list(predicted.values()))
            masks[case_id, orientation.name] = predicted[primary]
            for name, mask in predicted.items():
                rows.append({"judge": name, "case_id": case_id, "group": group,
                             "stage": drawn.get("time_point") or "-", "territory": drawn.get("territory") or "-",
                             "orientation": orientation.name,
                             "dice": dice(mask, label) if group == "MCAo" else float("nan"),
                             "predicted_mm3": float(mask.sum()) * voxel_mm3,
                             "in_brain_mm3": float((mask & brains[case_id]).sum()) * voxel_mm3,
                             "true_mm3": float(label.sum()) * voxel_mm3})
                print(f"{case_id} {group} {orientation.name} [{name}]: Dice {_fmt(rows[-1]['dice'])}, predicted "
                      f"{rows[-1]['predicted_mm3']:.1f} mm3 ({rows[-1]['in_brain_mm3']:.1f} in the brain)",
                      file=sys.stderr, flush=True)
    return rows, masks


def summarise(rows: list[dict], orientations: list[Orientation], judge: str | None = None) -> list[dict]:
    """Per orientation, for one judge (default: the first in ``rows``): mean and minimum lesion Dice, largest and
    mean predicted sham volume, and the largest sham volume inside the brain."""
    judge = judge or rows[0]["judge"]
    out = []
    for o in orientations:
        mine = [r for r in rows if r["judge"] == judge and r["orientation"] == o.name]
        lesion = [r["dice"] for r in mine if r["group"] == "MCAo"]
        sham = [r["predicted_mm3"] for r in mine if r["group"] == "sham"]
        sham_in_brain = [r["in_brain_mm3"] for r in mine if r["group"] == "sham"]
        out.append({"judge": judge, "orientation": o.name,
                    "mean_dice": float(np.mean(lesion)) if lesion else float("nan"),
                    "min_dice": float(np.min(lesion)) if lesion else float("nan"),
                    "max_sham_mm3": float(np.max(sham)) if sham else float("nan"),
                    "mean_sham_mm3": float(np.mean(sham)) if sham else float("nan"),
                    "max_sham_in_brain_mm3": float(np.max(sham_in_brain)) if sham_in_brain else float("nan")})
    return out


def best_orientation(summary: list[dict]) -> str:
    """The orientation with the highest mean lesion Dice."""
    return max(summary, key=lambda s: -1.0 if np.isnan(s["mean_dice"]) else s["mean_dice"])["orientation"]


def render_overlays(dataset: Path, masks: dict, best: str, out_dir: Path, prefix: str) -> list[Path]:
    """Predictions (red) and truth (green) on the first two lesion scans and the first sham."""
    cases = _read_cases(dataset)
    chosen = [c for c in cases if c[1] == "MCAo"][:2] + [c for c in cases if c[1] == "sham"][:1]
    paths = []
    for case_id, group, image, label, affine in chosen:
        path = out_dir / f"{prefix}{case_id}_{group}.png"
        render_slices(image, affine, path, label=label if label.any() else None,
                      prediction=masks[case_id, best], n_slices=5,
                      title=f"{case_id} ({group}): published RatLesNetV2, orientation {best}")
        paths.append(path)
    return paths


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _met(s: dict) -> bool:
    return s["mean_dice"] >= TARGET_DICE and s["max_sham_mm3"] < TARGET_SHAM_MM3


def write_results(out: Path, label: str, rows: list[dict], summary: list[dict], orientations: list[Orientation],
                  affine: np.ndarray, overlays: list[Path], seconds: float, seed: int,
                  others: dict[str, list[dict]] | None = None) -> Path:
    """The markdown report: the primary judge's orientations, per-case figures at its best orientation, overlays;
    then each other judge (``others``: judge name -> its :func:`summarise`) beside it."""
    best = best_orientation(summary)
    primary = summary[0]["judge"]
    mine = [r for r in rows if r["judge"] == primary]
    n_lesion = len({r["case_id"] for r in mine if r["group"] == "MCAo"})
    n_sham = len({r["case_id"] for r in mine if r["group"] == "sham"})
    lines = [
        f"# Realism of the synthetic rats ({label}): the published RatLesNetV2 as judge",
        "",
        f"Written by `benchmarks/realism.py` (seed {seed}, {n_lesion} lesion + {n_sham} sham rats at 256x256x18, "
        f"{len(orientations)} orientation(s), {seconds:.0f} s; judge `{primary}`). Input as the authors fed real "
        "scans: stored voxel array, whole-volume z-score, (1, 1, 18, 256, 256) slices first; argmax; islands and "
        f"holes < 20 voxels removed. Targets (issue 26, item 5): mean lesion Dice >= {TARGET_DICE} in the best "
        f"orientation, < {TARGET_SHAM_MM3:g} mm3 predicted in every sham. \"in brain\": the part of a prediction "
        "inside the generator's brain mask (the rest lies in skin, muscle, fat or CSF outside the brain).",
        "",
        "## Per orientation (model rows/columns in subject directions)",
        "",
        "| orientation | model sees | mean lesion Dice | min lesion Dice | max sham mm3 | mean sham mm3 "
        "| max sham mm3 in brain |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, o in zip(summary, orientations):
        mark = " **(best)**" if s["orientation"] == best else ""
        lines.append(f"| {s['orientation']}{mark} | {o.describe(affine)} | {_fmt(s['mean_dice'])} | "
                     f"{_fmt(s['min_dice'])} | {_fmt(s['max_sham_mm3'], 1)} | {_fmt(s['mean_sham_mm3'], 1)} | "
                     f"{_fmt(s['max_sham_in_brain_mm3'], 1)} |")
    best_summary = next(s for s in summary if s["orientation"] == best)
    lines += ["", f"Best orientation: **{best}**: mean lesion Dice {_fmt(best_summary['mean_dice'])}, largest sham "
              f"prediction {_fmt(best_summary['max_sham_mm3'], 1)} mm3; targets "
              f"{'met' if _met(best_summary) else 'NOT met'}.", "",
              f"## Per case, orientation {best}", "", "| " + " | ".join(COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]
    for r in mine:
        if r["orientation"] == best:
            lines.append("| " + " | ".join(_fmt(r[c], 1 if c.endswith("mm3") else 3) if isinstance(r[c], float)
                                           else str(r[c]) for c in COLUMNS) + " |")
    if others:
        lines += _other_judges(rows, summary, others)
    lines += ["", "## Overlays (green: truth, red: prediction)", ""]
    lines += [f"![{p.stem}]({Path(os.path.relpath(p, out.parent)).as_posix()})" for p in overlays]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def _other_judges(rows: list[dict], summary: list[dict], others: dict[str, list[dict]]) -> list[str]:
    """Each judge's best orientation, and every judge in the primary's best orientation; per case, Dice or sham
    volume of each judge in the primary's best orientation."""
    best = best_orientation(summary)
    judges = {summary[0]["judge"]: summary, **others}
    lines = ["", "## Every judge", "", "| judge | its best orientation | mean lesion Dice | max sham mm3 | "
             f"max sham mm3 in brain | targets | in {best}: mean lesion Dice | max sham mm3 | max in brain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, judged in judges.items():
        own = next(s for s in judged if s["orientation"] == best_orientation(judged))
        at = next(s for s in judged if s["orientation"] == best)
        lines.append(f"| {name} | {own['orientation']} | {_fmt(own['mean_dice'])} | {_fmt(own['max_sham_mm3'], 1)} | "
                     f"{_fmt(own['max_sham_in_brain_mm3'], 1)} | {'met' if _met(own) else 'NOT met'} | "
                     f"{_fmt(at['mean_dice'])} | {_fmt(at['max_sham_mm3'], 1)} | "
                     f"{_fmt(at['max_sham_in_brain_mm3'], 1)} |")
    lines += ["", f"Per case in {best}: lesion Dice, or a sham's predicted mm3 (in brain)", "",
              "| case_id | group | stage | " + " | ".join(judges) + " |", "|---|---|---|" + "---|" * len(judges)]
    cases = dict.fromkeys(r["case_id"] for r in rows)
    for case_id in cases:
        by_judge = {r["judge"]: r for r in rows if r["case_id"] == case_id and r["orientation"] == best}
        first = next(iter(by_judge.values()))
        cells = [_fmt(r["dice"]) if r["group"] == "MCAo" else f"{r['predicted_mm3']:.1f} ({r['in_brain_mm3']:.1f})"
                 for r in (by_judge[j] for j in judges)]
        lines.append(f"| {case_id} | {first['group']} | {first['stage']} | " + " | ".join(cells) + " |")
    return lines


def run(out: Path = RESULTS, *, n_lesion: int = 8, n_sham: int = 4, seed: int = 0, label: str = "after",
        orientations: list[Orientation] | None = None, weights: list[Path] | None = None, threads: int = 2,
        overlay_dir: Path | None = None, overlay_prefix: str = "") -> dict:
    """Generate, predict in each orientation with each judge (``weights``; the first is the primary), write ``out``
    (and the primary's overlays); return the primary's rows, summary and best orientation, and every judge's."""
    orientations = orientations or ORIENTATIONS
    # overlays go in realism/ beside the report, or beside it when the report is already in a realism/ folder
    overlay_dir = overlay_dir or (out.parent if out.parent.name == "realism" else out.parent / "realism")
    start = time.perf_counter()
    judges = load_judges(weights or [WEIGHTS], threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = generate(Path(tmp) / "rats", n_lesion, n_sham, seed)
        rows, masks = evaluate(dataset, judges, orientations, brain_masks(n_lesion, n_sham, seed))
        names = list(dict.fromkeys(r["judge"] for r in rows))
        summaries = {name: summarise(rows, orientations, name) for name in names}
        summary = summaries[names[0]]
        best = best_orientation(summary)
        overlays = render_overlays(dataset, masks, best, overlay_dir, overlay_prefix)
        affine = nib.load(next((dataset / "imagesTr").iterdir())).affine
    others = {name: summaries[name] for name in names[1:]}
    write_results(out, label, rows, summary, orientations, affine, overlays, time.perf_counter() - start, seed,
                  others)
    return {"rows": [r for r in rows if r["judge"] == names[0]], "summary": summary, "best": best,
            "all_rows": rows, "summaries": summaries}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--label", default="after", help="what generator this measures, e.g. before / after")
    parser.add_argument("--n-lesion", type=int, default=8)
    parser.add_argument("--n-sham", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orientations", nargs="*", default=None,
                        help=f"subset of {', '.join(o.name for o in ORIENTATIONS)} (default: all 8)")
    parser.add_argument("--weights", type=Path, nargs="+", default=[WEIGHTS],
                        help="published RatLesNetV2 weights; the first is the primary judge (default: the shared "
                             "heterogeneous model-1); two or more add their majority vote")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overlay-prefix", default="", help="prefix of the overlay PNG names")
    parser.add_argument("--overlay-dir", type=Path, default=None,
                        help="where the overlay PNGs go (default: realism/ beside --out, or --out's own realism/)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    chosen = None
    if args.orientations:
        by_name = {o.name: o for o in ORIENTATIONS}
        unknown = [n for n in args.orientations if n not in by_name]
        if unknown:
            raise SystemExit(f"--orientations: unknown {unknown}; use some of {sorted(by_name)}")
        chosen = [by_name[n] for n in args.orientations]
    result = run(args.out, n_lesion=args.n_lesion, n_sham=args.n_sham, seed=args.seed, label=args.label,
                 orientations=chosen, weights=args.weights, threads=args.threads,
                 overlay_dir=args.overlay_dir, overlay_prefix=args.overlay_prefix)
    for name, summary in result["summaries"].items():
        print(name)
        for s in summary:
            print(f"{s['orientation']:>10}  mean Dice {_fmt(s['mean_dice'])}  max sham {_fmt(s['max_sham_mm3'], 1)} mm3"
                  f" ({_fmt(s['max_sham_in_brain_mm3'], 1)} in brain)")
    print(f"best ({next(iter(result['summaries']))}): {result['best']}; wrote {args.out}")


if __name__ == "__main__":
    main()
