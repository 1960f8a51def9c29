"""One function per benchmark figure; each returns a dict of numbers (seconds unless the key says otherwise).

Sizes come from ``ProjectConfig``: params.yaml (the demo) or params.yaml + params-full.yaml (the paper-scale study).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lesionseg.config import ProjectConfig, load_config, load_full_config, load_params  # noqa: E402

CONFIG = load_config(ROOT / "params.yaml")  # the demo
FULL = load_full_config(ROOT)  # the paper-scale study
PARAMS = load_params(ROOT / "params.yaml")  # the raw mapping, for gpu_check.py's merge
PAPER = {"shape": FULL.prepare.grid("mouse").shape, "spacing": FULL.prepare.grid("mouse").target_spacing,
         "matrix": FULL.datasets.synthetic_dataset("mouse").matrix}
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.executable).parent
THREADS = 2
BATCH = 2


class NotRun(Exception):
    """A figure that cannot be measured in this workspace; the message says why."""


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _config(size: str) -> ProjectConfig:
    """The configuration at ``size``: demo (params.yaml) | paper (with params-full.yaml)."""
    return FULL if size == "paper" else CONFIG


def _grid(size: str) -> tuple[list[int], list[float]]:
    """Prepared mouse volume shape and spacing (mm) at ``size`` (demo | paper)."""
    grid = _config(size).prepare.grid("mouse")
    return grid.shape, grid.target_spacing


def _networks(size: str) -> dict[str, dict]:
    networks = _config(size).networks
    return {name: networks.of(name) for name in networks.kwargs}


def _model_file(path: Path, name: str, network: dict, size: str):
    """A model.pt in the training stages' format, with freshly initialised weights; returns the network."""
    import torch

    from lesionseg.networks import build_network
    from lesionseg.training.fit import save_checkpoint

    shape, spacing = _grid(size)
    torch.manual_seed(0)
    prep = {"target_spacing": spacing, "shape": shape, "crop": "head",
            "clip_percentiles": list(CONFIG.prepare.clip_percentiles)}
    model = build_network(name, **network)
    save_checkpoint(path, {"model": model.state_dict(), "network": network, "arch": name, "roi_size": shape,
                           "preprocessing": prep})
    return model


def _env(repo: Path) -> dict[str, str]:
    """Environment for dvc in ``repo``: this venv first on PATH, no analytics, no inherited MLflow/DVC settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return {**env, "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(repo)}


def metric_speed(repeats: int = 5) -> dict[str, float]:
    """hd95 and Dice of lesionseg vs MONAI on one 256x256x32 lesion pair at 0.1 x 0.1 x 0.5 mm, one thread."""
    import numpy as np
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from scipy import ndimage

    from lesionseg.evaluation.metrics import dice, hd95

    torch.set_num_threads(1)
    shape, spacing = (256, 256, 32), (0.1, 0.1, 0.5)
    grid = np.indices(shape, dtype=np.float32)

    def lesion(center, radii, seed):
        noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 4)
        return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) + 0.25 * noise / noise.std() < 1

    gt, pred = lesion((95, 80, 16), (38, 30, 11), 1), lesion((98, 82, 16), (36, 31, 11), 2)
    gt_t, pred_t = (torch.from_numpy(m)[None, None].float() for m in (gt, pred))

    def monai_hd95():
        return float(compute_hausdorff_distance(pred_t, gt_t, include_background=True, percentile=95,
                                                spacing=list(spacing)))

    out = {
        "hd95_ours_ms": 1e3 * _median_time(lambda: hd95(pred, gt, spacing), repeats),
        "hd95_monai_ms": 1e3 * _median_time(monai_hd95, repeats),
        "dice_ours_ms": 1e3 * _median_time(lambda: dice(pred, gt), repeats),
        "dice_monai_ms": 1e3 * _median_time(lambda: compute_dice(pred_t, gt_t, include_background=True), repeats),
        "hd95_ours_mm": hd95(pred, gt, spacing),
        "hd95_monai_mm": monai_hd95(),
    }
    out["hd95_monai_over_ours"] = out["hd95_monai_ms"] / out["hd95_ours_ms"]
    return out


def step_seconds(size: str = "demo", steps: int = 3) -> dict[str, float]:
    """Seconds per training step per network: batch 2, forward + backward + Adam, the library's Dice loss."""
    import torch

    from lesionseg.networks import build_network
    from lesionseg.training.engine import build_loss

    torch.set_num_threads(THREADS)
    shape = _grid(size)[0]
    out = {}
    for name, network in _networks(size).items():
        torch.manual_seed(0)
        model = build_network(name, **network).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = build_loss("dice")
        image = torch.randn(BATCH, 1, *shape)
        label = (image > 1).float()

        def step():
            optimizer.zero_grad(set_to_none=True)
            logits = model(image)
            if logits.dim() == image.dim() + 1:  # deep supervision heads, as the engine unbinds them
                logits = list(torch.unbind(logits, dim=1))
            loss_fn(logits, label).backward()
            optimizer.step()

        out[f"{name}_s_per_step"] = _median_time(step, steps)
    return out


def data_seconds(root: Path, scale: int = 1) -> dict[str, float]:
    """Synthesize + prepare params.yaml's demo source and target datasets (cases // scale each) into ``root``."""
    from lesionseg.data.preprocess import prepare_dataset
    from lesionseg.data.synthetic import synthesize_dataset

    prep = CONFIG.prepare
    out = {"cases": 0, "synthesize_s": 0.0, "prepare_s": 0.0}
    for domain in (d for d in ("rat", "mouse") if d in prep.grids):  # the prepared datasets: source and target
        size, grid = CONFIG.datasets.synthetic_dataset(domain), prep.grid(domain)
        n = max(6, size.cases // scale)
        start = time.perf_counter()
        synthesize_dataset(domain, n, size.seed, root / "raw" / domain, sham_fraction=size.sham_fraction,
                           matrix=size.matrix, n_slices=size.n_slices)
        prepared = time.perf_counter()
        prepare_dataset(root / "raw" / domain, root / "processed" / domain, clip_percentiles=prep.clip_percentiles,
                        target_spacing=grid.target_spacing, shape=grid.shape)
        out["synthesize_s"] += prepared - start
        out["prepare_s"] += time.perf_counter() - prepared
        out["cases"] += n
    out["total_s"] = out["synthesize_s"] + out["prepare_s"]
    return out


def tracking_overhead(prepared: Path, model: str = "unet", pairs: int = 4, epochs: int = 1) -> dict[str, float]:
    """`fit` with vs without MlflowCallback (temp SQLite store): unet (the fastest network, so the largest relative
    overhead; or ``model``) at its demo config, params.yaml's train settings, the smallest sample size; pairs in
    ABBA order after one warm-up fit; overhead = median of the per-pair ratios - 1; callback_alone = the
    callback's own calls for such a fit, timed directly."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    from lesionseg.tracking.callback import MlflowCallback
    from lesionseg.training.engine import build_loss
    from lesionseg.training.fit import fit
    from lesionseg.training.setup import setup_training
    from lesionseg.training.spec import RunSpec

    train = dataclasses.replace(CONFIG.train, epochs=epochs, device="cpu", num_threads=THREADS)
    ids = sorted(p.stem for p in prepared.glob("*.npz"))
    n_val = max(2, round(len(ids) * CONFIG.split.fractions[1]))
    n_train = min(CONFIG.subsets.sizes[0], len(ids) - n_val)
    spec = RunSpec(stage="finetune", model=model, network=CONFIG.networks.of(model), strategy="scratch",
                   freeze_depth=0, augment=False, sample_size=n_train, prepared_dir=prepared,
                   train_ids=ids[:n_train], val_ids=ids[n_train:n_train + n_val], train=train)
    tmp = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    states = []

    def one_fit(tracked: bool) -> float:
        setup = setup_training(spec)
        callbacks = [MlflowCallback(client.create_run(experiment).info.run_id, client)] if tracked else []
        start = time.perf_counter()
        state = fit(setup.model, build_loss(train.loss), setup.loader, setup.val_items, train,
                    tempfile.mkdtemp(dir=tmp), roi_size=setup.roi_size, callbacks=callbacks, progress=False)
        states.append(state)
        return time.perf_counter() - start

    def callback_alone() -> None:  # the callback's own calls for one fit of the same length, timed directly
        callback = MlflowCallback(client.create_run(experiment).info.run_id, client)
        callback.on_fit_start(states[-1], False)
        for row in states[-1].history:
            callback.on_epoch_end(row["epoch"], row, states[-1])
        callback.on_fit_end(states[-1])

    one_fit(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(pairs):
        for tracked in (False, True) if i % 2 == 0 else (True, False):
            times[tracked].append(one_fit(tracked))
    callback_s = _median_time(callback_alone, pairs)
    shutil.rmtree(tmp, ignore_errors=True)
    ratios = [t / p for t, p in zip(times[True], times[False])]
    fit_s = statistics.median(times[False])
    return {"fit_s": fit_s, "fit_tracked_s": statistics.median(times[True]), "pairs": pairs,
            "overhead_pct": 100 * (statistics.median(ratios) - 1), "overhead_pct_lowest_pair": 100 * (min(ratios) - 1),
            "overhead_pct_highest_pair": 100 * (max(ratios) - 1), "callback_alone_ms": 1e3 * callback_s,
            "callback_alone_pct": 100 * callback_s / fit_s, "epochs": epochs,
            "optimizer_steps_per_fit": states[-1].step, "val_scans": len(spec.val_ids)}


def _stage_child() -> dict[str, float]:
    """In a fresh interpreter: import a training stage's modules, then log one model as a stage does."""
    start = time.perf_counter()
    import lesionseg.tracking.run  # noqa: F401  (what a training stage imports)

    imported = time.perf_counter()
    import mlflow
    import torch

    from lesionseg.tracking.pyfunc import log_network, log_pyfunc_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_stage_"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    name = CONFIG.finetune.models[0]
    model = _model_file(tmp / "model.pt", name, CONFIG.networks.of(name), "demo")
    torch.set_num_threads(THREADS)
    with mlflow.start_run(experiment_id=experiment):
        t0 = time.perf_counter()
        log_network(model, _grid("demo")[0])
        t1 = time.perf_counter()
        log_pyfunc_model(str(tmp / "model.pt"))
        t2 = time.perf_counter()
        log_network(model, _grid("demo")[0])
        t3 = time.perf_counter()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"import_tracking_run_s": imported - start, "log_network_s": t1 - t0, "log_pyfunc_model_s": t2 - t1,
            "log_network_second_call_s": t3 - t2}


def _own_import_seconds(trace: str) -> dict[str, float]:
    """`python -X importtime` output -> seconds spent in each top-level package's own modules."""
    own: dict[str, float] = {}
    for line in trace.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            key = f"import_{parts[2].split('.')[0]}_own_s"
            own[key] = own.get(key, 0.0) + int(parts[0]) / 1e6
    return own


def stage_fixed_cost(repeats: int = 3) -> dict[str, float]:
    """Fixed cost of one training stage, each repeat a fresh process: interpreter start, importing
    lesionseg.tracking.run, logging the demo's network and pyfunc model to a SQLite store in a temp dir (before:
    both were logged; now: the pyfunc only); the five packages with the most own import time (-X importtime)."""
    python_start = _median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeats, 0)
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-X", "importtime", __file__, "--stage-child"], cwd=ROOT,
                              env=_env(ROOT), check=True, capture_output=True, text=True)
        runs.append({**json.loads(proc.stdout.splitlines()[-1]), **_own_import_seconds(proc.stderr)})
    medians = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    out = {"python_start_s": python_start, **{k: v for k, v in medians.items() if not k.endswith("_own_s")}}
    # training stages used to log the network and the pyfunc; they now log the pyfunc only
    out["total_before_s"] = sum(v for k, v in out.items() if k != "log_network_second_call_s")
    out["total_now_s"] = out["total_before_s"] - out.get("log_network_s", 0.0)
    imports = sorted(((k, v) for k, v in medians.items() if k.endswith("_own_s")), key=lambda kv: -kv[1])
    return {**out, **dict(imports[:5])}


def inference_seconds(size: str = "demo", repeats: int = 3) -> dict[str, float]:
    """Seconds per scan of `predict_files` (read, prepare, sliding window, map back, write) on one synthetic
    mouse scan, per network (freshly initialised weights)."""
    import torch

    from lesionseg.data.synthetic import synthesize_dataset
    from lesionseg.inference import Segmenter, predict_files

    torch.set_num_threads(THREADS)
    mouse = _config(size).datasets.synthetic_dataset("mouse")
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    raw = synthesize_dataset("mouse", 1, 0, tmp / "raw", sham_fraction=0.0, n_slices=mouse.n_slices,
                             matrix=mouse.matrix)
    scan = next((raw / "imagesTr").glob("*.nii.gz"))
    out = {}
    for name, network in _networks(size).items():
        _model_file(tmp / f"{name}.pt", name, network, size)
        segmenter = Segmenter.from_file(tmp / f"{name}.pt")
        out[f"{name}_s_per_scan"] = _median_time(lambda: predict_files(segmenter, [scan], tmp / "out",
                                                                         progress=False), repeats)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def noop_repro_seconds(repo: Path = ROOT, repeats: int = 3) -> dict[str, float]:
    """`dvc repro` with nothing to do, in ``repo`` (needs a dvc.lock and no changed stage)."""
    if not (repo / "dvc.lock").exists():
        raise NotRun(f"no dvc.lock in {repo}")
    status = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=_env(repo), capture_output=True, text=True)
    changed = json.loads(status.stdout or "{}") if status.returncode == 0 else {"": status.stderr}
    if changed:
        raise NotRun(f"`dvc status` in {repo} lists {len(changed)} changed stages")
    repro = ["dvc", "repro"]
    seconds = _median_time(lambda: subprocess.run(repro, cwd=repo, env=_env(repo), check=True, capture_output=True),
                           repeats)
    return {"noop_repro_s": seconds}


def demo_targets(clone: Path) -> dict[str, float | str]:
    """The demo's quality figures, read from its own outputs: the pretrained network's best validation Dice, and
    at the largest sample size the transfer arm (partial, full or tuned) chosen by its mean validation Dice (the
    test split stays sealed: it is read only for the chosen arm), with its test `dice_lesion` and `sham_fp_rate`."""
    import pandas as pd

    pretrained = json.loads((clone / "models/pretrained/ratlesnetv2/run.json").read_text())
    summary = pd.read_csv(clone / "reports/study/summary.csv")
    largest = summary[summary["sample_size"] == summary["sample_size"].max()]
    transfer = largest[(largest["model"] == "ratlesnetv2") & largest["strategy"].isin(["partial", "full", "tuned"])]
    best = transfer.loc[transfer["val_dice_mean"].idxmax()]
    return {"pretrain_best_val_dice": pretrained["best_val_dice"],
            "best_transfer_arm (by validation)": f"{best['arm']} at n={best['sample_size']}",
            "its_dice_lesion_mean": best["dice_lesion_mean"], "its_sham_fp_rate": best["sham_fp_rate"],
            "its_converged": f"{best['n_converged']} of {best['n_repeats']}",
            "unconverged_cells": "; ".join(f"{r.arm} n={r.sample_size} ({r.n_converged} of {r.n_repeats})"
                                           for r in summary.itertuples() if r.n_converged < r.n_repeats) or "none"}


def _timed_clone_run(tmp: Path, name: str, command: list[str]) -> tuple[Path, float, str]:
    """A fresh clone of HEAD under ``tmp/name``, ``command`` run in it; (clone, seconds, stdout + stderr)."""
    clone = tmp / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=clone, env=_env(clone), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed after {seconds:.0f} s: {proc.stderr.strip().splitlines()[-1:]}")
    return clone, seconds, proc.stdout + proc.stderr


def demo_seconds(workers: int = 2, schedule_md: Path | None = None) -> dict[str, float | str]:
    """The demo end to end in fresh clones of this repository's HEAD (this venv, each clone's own SQLite MLflow
    store), one after the other: `dvc repro` (its log size, not a terminal, and quality figures; then a no-op
    `dvc repro`), then `lesionseg study run --workers K` (then `dvc status`), and their ratio. With
    ``schedule_md``, `benchmarks/schedule.py` run in the serial clone (its measured stage times) is written there."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    try:
        clone, serial, log = _timed_clone_run(tmp, "serial", ["dvc", "repro"])
        out = {"dvc_repro_s": serial, "stages_run": log.count("Running stage"), "log_kb": len(log.encode()) / 1024,
               **demo_targets(clone), **noop_repro_seconds(clone)}
        if schedule_md is not None:
            sim = subprocess.run([sys.executable, "benchmarks/schedule.py"], cwd=clone, env=_env(clone),
                                 capture_output=True, text=True, check=True)
            schedule_md.write_text(f"# Predicted wall time on G workers (from the serial demo's stage times)\n"
                                   f"{sim.stdout}")
        shutil.rmtree(clone, ignore_errors=True)
        clone, parallel, _ = _timed_clone_run(tmp, "dask", ["lesionseg", "study", "run", "--workers", str(workers)])
        status = subprocess.run(["dvc", "status", "--json"], cwd=clone, env=_env(clone), capture_output=True, text=True)
        return {**out, f"study_run_workers{workers}_s": parallel, "serial_over_parallel": serial / parallel,
                "dvc_status_after_study_run": "clean" if json.loads(status.stdout or "{}") == {} else status.stdout[:200]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:] == ["--stage-child"]:
    print(json.dumps(_stage_child()))
