"""Is the synthetic mouse task as hard as a real one? RatLesNetV2 from scratch at n = 4 and n = 16.

Declared in ``benchmarks/results_difficulty.md`` before it was run (issue 26): with the demo's scratch recipe
(params.yaml ``train`` and ``finetune.arms.scratch``: 200 optimizer steps, batch 2, prepared 48x32x32), on a
test cohort of at least 40 lesion mice, n = 4 should score at least 0.05 Dice below n = 16 (R >= 3 repeats),
and n = 16 about at or below the real reference (~0.85). Transfer is not part of this check.

Uses the library's own pieces only: ``synthesize_dataset`` (fresh seeds), ``prepare_dataset``,
``lesion_balanced_subsets``, ``setup_training`` + ``fit`` (RunSpec, strategy ``scratch``), ``predict_volume``.
Dice is computed per test lesion mouse on the prepared grid (the study scores on each scan's own grid; the
prepared grid is cheaper and the comparison between n is what matters here).

    PYTHONPATH=$PWD nice -n 5 python benchmarks/difficulty.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.config import TrainConfig, from_mapping, load_params  # noqa: E402
from lesionseg.data.io import write_text  # noqa: E402
from lesionseg.data.preprocess import prepare_dataset  # noqa: E402
from lesionseg.data.splits import lesion_balanced_subsets  # noqa: E402
from lesionseg.data.synthetic import synthesize_dataset  # noqa: E402
from lesionseg.training.engine import build_loss, predict_volume  # noqa: E402
from lesionseg.training.fit import fit  # noqa: E402
from lesionseg.training.loaders import load_items  # noqa: E402
from lesionseg.training.setup import setup_training  # noqa: E402
from lesionseg.training.spec import RunSpec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results_difficulty.md"
SEEDS = {"pool": 7001, "val": 7002, "test": 7003}  # fresh: never used to build or tune the generator
COUNTS = {"pool": 24, "val": 8, "test": 54}  # test: round(54 * 0.25) = 14 shams, 40 lesion mice
SIZES = (4, 16)


def _cases(raw: Path) -> list[dict]:
    with (raw / "cases.csv").open() as handle:
        return [dict(r, lesion_volume_mm3=float(r["lesion_volume_mm3"])) for r in csv.DictReader(handle)]


def make_data(work: Path, params: dict) -> dict[str, tuple[Path, list[dict]]]:
    """Generate the three cohorts at the demo's mouse size and prepare them as the demo does."""
    synth, prep = params["synthesize"]["mouse"], params["prepare"]
    out = {}
    for name, seed in SEEDS.items():
        raw = synthesize_dataset("mouse", COUNTS[name], seed, work / "raw" / name, matrix=synth["matrix"],
                                 n_slices=synth["n_slices"], case_prefix=f"{name}mouse")
        prepared = work / "prepared" / name
        prepare_dataset(raw, prepared, target_spacing=prep["mouse"]["target_spacing"], shape=prep["mouse"]["shape"],
                        clip_percentiles=tuple(prep["clip_percentiles"]))
        out[name] = (prepared, _cases(raw))
    return out


def train_config(params: dict, repeat: int) -> TrainConfig:
    """The demo's scratch recipe: params.yaml ``train`` with ``finetune.arms.scratch`` lr, no augmentation."""
    values = dict(params["train"], lr=params["finetune"]["arms"]["scratch"]["lr"])
    values["seed"] = int(values["seed"]) + repeat
    return from_mapping(TrainConfig, values, "train")


def _precision(use_bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = float((pred & truth).sum())
    total = float(pred.sum() + truth.sum())
    return 2 * inter / total if total else float("nan")


def test_scores(model, prepared: Path, cases: list[dict], roi_size, use_bf16: bool) -> dict:
    """Mean lesion Dice over the test lesion mice, and the mean predicted voxels in test shams."""
    items = load_items(prepared, [c["case_id"] for c in cases])
    groups = {c["case_id"]: c["group"] for c in cases}
    lesion, sham = [], []
    with torch.no_grad(), _precision(use_bf16):
        for item in items:
            prob = predict_volume(model, torch.from_numpy(item["image"][None]), roi_size, torch.device("cpu"))
            pred = prob[0].float().numpy() > 0.5
            truth = item["label"][0] > 0.5
            (lesion if groups[item["case_id"]] == "MCAo" else sham).append(
                dice(pred, truth) if groups[item["case_id"]] == "MCAo" else float(pred.sum()))
    return {"dice": float(np.mean(lesion)), "n_lesion": len(lesion), "sham_voxels": float(np.mean(sham)),
            "n_sham": len(sham), "per_case": lesion}


def run_one(data, params, size: int, repeat: int, work: Path, use_bf16: bool) -> dict:
    pool_dir, pool_cases = data["pool"]
    subsets = lesion_balanced_subsets(pool_cases, [c["case_id"] for c in pool_cases], SIZES,
                                      seed=params["subsets"]["seed"] + repeat,
                                      n_size_bins=params["subsets"]["n_size_bins"])
    # the pool and validation cohorts are prepared apart; RunSpec reads one prepared_dir, so link both into one
    joint = work / "prepared" / "joint"
    if not joint.exists():
        joint.mkdir(parents=True)
        for name in ("pool", "val"):
            for npz in data[name][0].glob("*.npz"):
                (joint / npz.name).symlink_to(npz)
        (joint / "manifest.json").write_bytes((pool_dir / "manifest.json").read_bytes())
    config = train_config(params, repeat)
    spec = RunSpec(stage="finetune", model="ratlesnetv2", network=dict(params["networks"]["ratlesnetv2"]),
                   strategy="scratch", freeze_depth=0, augment=False, sample_size=size, prepared_dir=joint,
                   train_ids=subsets[str(size)], val_ids=[c["case_id"] for c in data["val"][1]], train=config,
                   repeat=repeat)
    start = time.perf_counter()
    with _precision(use_bf16):
        setup = setup_training(spec)
        state = fit(setup.model, build_loss(config.loss), setup.loader, setup.val_items, config,
                    work / "runs" / f"n{size}_r{repeat}", roi_size=setup.roi_size, progress=True)
    best = torch.load(work / "runs" / f"n{size}_r{repeat}" / "best.pt", weights_only=True)
    setup.model.load_state_dict(best["model"])
    scores = test_scores(setup.model, data["test"][0], data["test"][1], setup.roi_size, use_bf16)
    return {"n": size, "repeat": repeat, "train_ids": subsets[str(size)], "best_epoch": state.best_epoch,
            "seconds": time.perf_counter() - start, **scores}


def step_seconds(data, params, use_bf16: bool, work: Path) -> float:
    """Seconds per training step (3 steps after one warm-up) in this precision, on the pool."""
    pool_dir, pool_cases = data["pool"]
    items = load_items(pool_dir, [c["case_id"] for c in pool_cases[:2]])
    torch.manual_seed(0)
    from lesionseg.networks.transfer import build_for_strategy
    model, _ = build_for_strategy("ratlesnetv2", dict(params["networks"]["ratlesnetv2"]), "scratch", 0, None)
    x = torch.from_numpy(np.stack([i["image"] for i in items]))
    y = torch.from_numpy(np.stack([i["label"] for i in items]))
    loss_fn, opt = build_loss("dicece"), torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for k in range(4):
        t = time.perf_counter()
        with _precision(use_bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def write_results(out: Path, rows: list[dict], precision: str, seconds: float) -> None:
    """Append the measured table under the declaration (which is kept as written before the run)."""
    text = out.read_text()
    marker = "\n## Result\n"
    text = text.split(marker)[0]
    by_n = {n: [r for r in rows if r["n"] == n] for n in SIZES}
    lines = [marker, f"Run finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {precision}, "
             f"{seconds:.0f} s in all on a shared 2-core CPU.", "",
             "| n | R | test lesion mice | mean lesion Dice per model (repeats) | mean over R | SD over R | "
             "test sham voxels predicted (mean per model) |", "|---|---|---|---|---|---|---|"]
    means = {}
    for n, rs in by_n.items():
        d = [r["dice"] for r in rs]
        shams = ", ".join(f"{r['sham_voxels']:.0f}" for r in rs)
        means[n] = float(np.mean(d))
        lines.append(f"| {n} | {len(rs)} | {rs[0]['n_lesion']} | {', '.join(f'{v:.3f}' for v in d)} | "
                     f"{np.mean(d):.3f} | {np.std(d, ddof=1) if len(d) > 1 else float('nan'):.3f} | "
                     f"{shams} |")
    gap = means[16] - means[4]
    lines += ["", f"Gap n = 16 minus n = 4: **{gap:.3f}** (declared: >= 0.05). n = 16: **{means[16]:.3f}** "
              f"(declared: about <= 0.85). Verdict: gap {'met' if gap >= 0.05 else 'NOT met'}; "
              f"ceiling {'met' if means[16] <= 0.87 else 'NOT met'}.", "",
              "Per run: " + "; ".join(f"n={r['n']} r={r['repeat']} best epoch {r['best_epoch']} "
                                      f"({r['seconds']:.0f} s)" for r in rows), ""]
    write_text(out, text + "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(ROOT / "params.yaml")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = make_data(work, params)
        fp32, bf16 = step_seconds(data, params, False, work), step_seconds(data, params, True, work)
        use_bf16 = bf16 < 0.8 * fp32
        precision = f"{'bf16 autocast' if use_bf16 else 'fp32'} (step {fp32:.2f} s fp32, {bf16:.2f} s bf16)"
        print(precision, flush=True)
        rows = []
        for repeat in range(args.repeats):
            for size in SIZES:
                rows.append(run_one(data, params, size, repeat, work, use_bf16))
                print(f"n={size} r={repeat}: test Dice {rows[-1]['dice']:.3f} ({rows[-1]['seconds']:.0f} s)",
                      flush=True)
                if {r["n"] for r in rows} == set(SIZES):
                    write_results(args.out, rows, precision, time.perf_counter() - start)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
