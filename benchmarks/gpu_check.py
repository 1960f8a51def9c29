"""GPU check in one command, on a CUDA machine: python benchmarks/gpu_check.py [--steps 20] [--cell-steps N]

1. Each network at paper size (README "Demo size and the full study"), batch 2, mixed precision: seconds per
   training step and peak GPU memory.
2. One full-scale fine-tuning cell end to end in a temporary copy of this project: `dvc repro subsets` on
   paper-size synthetic data, then the `finetune` stage's own entry point (full fine-tuning of the authors'
   RatLesNetV2 rat weights, n = 16, repeat 0) with the full study's step budget or ``--cell-steps``.
Prints the figures and writes them to benchmarks/results_gpu.md. Exits 2 without CUDA.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import figures as f
import yaml

from lesionseg.config import FULL_STUDY_FILE, apply_overrides, load_overrides

WEIGHTS = f.ROOT.parent / "shared" / "pretrained" / "ratlesnetv2-heterogeneous-model-1"
# The paper settings come from params.yaml + params-full.yaml (their one copy); this check only narrows the study
# to one cell: fewer synthetic cases to prepare, one sample size, one repeat, the authors' weights as the source.
ONE_CELL = {"datasets": {"synthetic": {"mouse": {"cases": 40}, "rat": {"cases": 10}}}, "subsets": {"sizes": [16]},
            "study": {"repeats": [0]}, "pretrain": {"models": []},
            "finetune": {"source": str(WEIGHTS), "source_network": {"ratlesnetv2": {"filters": 32}}}}


def full_params() -> dict:
    """params.yaml with params-full.yaml applied (the paper-scale study)."""
    return apply_overrides(f.PARAMS, load_overrides(f.ROOT / FULL_STUDY_FILE))


def step_figures(steps: int) -> dict[str, float]:
    """Seconds per AMP training step and peak GPU memory (GiB) per network at paper size."""
    import torch

    from lesionseg.networks import build_network
    from lesionseg.training.engine import build_loss

    out = {}
    for name, network in f._networks("paper").items():
        torch.cuda.reset_peak_memory_stats()
        model = build_network(name, **network).cuda().train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler, loss_fn = torch.amp.GradScaler("cuda"), build_loss("dicece")
        image = torch.randn(f.BATCH, 1, *f.PAPER["shape"], device="cuda")
        label = (image > 1).float()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(image)
                if logits.dim() == image.dim() + 1:  # deep supervision heads
                    logits = list(torch.unbind(logits, dim=1))
                loss = loss_fn(logits, label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        for _ in range(3):  # warm-up: cuDNN autotuning, allocator
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        out[f"{name}_s_per_step"] = (time.perf_counter() - start) / steps
        out[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        del model, optimizer
        torch.cuda.empty_cache()
    return out


def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys replaced, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def cell_figures(cell_steps: int | None) -> dict[str, float]:
    """Wall time of the data stages and of one full-scale fine-tuning cell, in a temporary project copy."""
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    repo = tmp / "lesionseg"
    try:
        subprocess.run(["git", "clone", "-q", str(f.ROOT), str(repo)], check=True)
        params = _merge(full_params(), ONE_CELL)
        full_train = dict(params["train"])
        per_epoch = full_train["iterations_per_epoch"]
        if cell_steps:
            params["train"]["epochs"] = max(1, cell_steps // per_epoch)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = f._env(repo)
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "subsets"], cwd=repo, env=env, check=True, capture_output=True)
        data_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "pipelines/finetune.py", "--model", "ratlesnetv2", "--strategy", "full",
                        "--sample-size", "16", "--augment", "noaug", "--repeat", "0"], cwd=repo, env=env, check=True)
        cell_s = time.perf_counter() - start
        run = yaml.safe_load((repo / "models/finetune/ratlesnetv2-full-n16-noaug-r0/run.json").read_text())
        return {"data_stages_s": data_s, "cell_s": cell_s, "cell_steps_run": run["steps_run"],
                "cell_budget_steps": run["budget_steps"], "cell_best_val_dice": run["best_val_dice"],
                "cell_s_at_full_budget (linear)": cell_s * full_train["epochs"] * per_epoch / max(1, run["steps_run"])}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per network")
    parser.add_argument("--cell-steps", type=int, default=None, help="cap the cell's budget (default: full study)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results_gpu.md"))
    args = parser.parse_args()
    import torch

    problem = ("no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine with a CUDA build of "
               "torch (README, GPU users)" if not torch.cuda.is_available() else
               f"the authors' RatLesNetV2 weights are not at {WEIGHTS}" if not WEIGHTS.exists() else "")
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    figures = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **step_figures(args.steps),
               **cell_figures(args.cell_steps)}
    lines = ["# GPU check", "", f"`python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`", "",
             "| figure | value |", "|---|---|",
             *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items()], ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
