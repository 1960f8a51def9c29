"""Does bf16 change the answer? One fine-tuning cell's **test** Dice, fp32 against bf16, at the demo's own budget.

Issue 28 asks that one fine-tuning cell's test Dice, bf16 against fp32 with R >= 3 each, differ by less than the
run-to-run spread. This trains the cell (default: full fine-tuning of RatLesNetV2 from the project's pretrained rat
model at n = 16) exactly as its stage does (params.yaml's budget and early stopping, repeat r's seed and subset),
once with ``train.amp: false`` and once with ``true``, interleaved and seed-paired; each model (best weights, no
post-processing, predicted in its own precision) is then scored on the test split's lesion scans. Run by hand in a
project whose ``dvc repro`` has run (it needs models/pretrained, data/raw, the splits and subsets)::

    python benchmarks/precision_test_dice.py --project CLONE --repeats 3 --md benchmarks/results_precision.md
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path


def train_and_test(project: Path, strategy: str, n: int, repeat: int, amp: bool) -> dict:
    """Train one cell with ``amp`` (no MLflow); its best weights' mean test lesion Dice, sham flags, steps, seconds."""
    from lesionseg.config import load_config
    from lesionseg.data.io import read_json
    from lesionseg.data.preprocess import load_manifest
    from lesionseg.inference import Segmenter
    from lesionseg.layout import Layout
    from lesionseg.tracking.scores import score_scans
    from lesionseg.training.engine import build_loss
    from lesionseg.training.fit import BEST, fit, load_checkpoint
    from lesionseg.training.setup import setup_training
    from lesionseg.training.spec import finetune_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    model, target = cfg.finetune.models[0], cfg.data.role("target")
    train = dataclasses.replace(cfg.train_for("finetune"), amp=amp)
    spec = finetune_spec(model, strategy, n, "noaug", network=cfg.finetune.network(model, cfg.networks.of(model)),
                         train=train, finetune=cfg.finetune, target=target, layout=layout, repeat=repeat)
    setup = setup_training(spec)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, tmp,
                    roi_size=setup.roi_size, progress=False)
        setup.model.load_state_dict(load_checkpoint(Path(tmp) / BEST)["model"])
    seconds = time.perf_counter() - start
    manifest = load_manifest(spec.prepared_dir)
    preprocessing = {k: manifest[k] for k in ("target_spacing", "shape", "clip_percentiles", "crop") if k in manifest}
    segmenter = Segmenter(setup.model.eval(), list(setup.roi_size), preprocessing, amp=amp)
    test_ids = read_json(layout.split_file(target.name))["test"]
    table, _ = score_scans(segmenter, layout.resolve(target.raw), test_ids)
    lesion = table[table["group"] == "MCAo"]
    shams = table[table["group"] == "sham"]
    return {"repeat": repeat, "precision": "bf16" if amp else "fp32", "test_dice_lesion": float(lesion["dice"].mean()),
            "shams_flagged": int((shams["pred_volume_mm3"] > 0).sum()) if "pred_volume_mm3" in shams else None,
            "best_val_dice_ema": state.best_val_dice, "steps": state.step, "best_step": state.best_step,
            "converged": state.converged, "seconds": seconds}


def render(rows: list[dict], command: str) -> str:
    by = {p: [r for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
    lines = ["# bf16 against fp32: one fine-tuning cell's test Dice at the demo's budget (issue 28)", "",
             f"Written by `{command}` (load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}).", "",
             "| repeat | precision | test lesion Dice | best val Dice (EMA) | steps (best) | converged | s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['repeat']} | {r['precision']} | {r['test_dice_lesion']:.4f} | {r['best_val_dice_ema']:.3f} | "
              f"{r['steps']} ({r['best_step']}) | {r['converged']} | {r['seconds']:.0f} |" for r in rows]
    if all(len(v) >= 2 for v in by.values()):
        diffs = [b["test_dice_lesion"] - f["test_dice_lesion"] for f, b in zip(by["fp32"], by["bf16"])]
        sd32 = statistics.stdev(r["test_dice_lesion"] for r in by["fp32"])
        sd16 = statistics.stdev(r["test_dice_lesion"] for r in by["bf16"])
        lines += ["", f"bf16 - fp32 per repeat (same seed and subset): {', '.join(f'{d:+.4f}' for d in diffs)}; "
                  f"mean {statistics.mean(diffs):+.4f}. Run-to-run SD of test Dice: fp32 {sd32:.4f}, bf16 {sd16:.4f}. "
                  f"|mean difference| {'<' if abs(statistics.mean(diffs)) < min(sd32, sd16) else '>='} the smaller SD."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--sample-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(args.project)
    rows = []
    for repeat in range(args.repeats):
        for amp in (False, True):
            rows.append(train_and_test(args.project, args.strategy, args.sample_size, repeat, amp))
            print(rows[-1], flush=True)
    text = render(rows, f"python benchmarks/precision_test_dice.py --strategy {args.strategy} "
                        f"--sample-size {args.sample_size} --repeats {args.repeats}")
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
