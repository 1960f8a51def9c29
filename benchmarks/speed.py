"""Speed of the demo's training cells: python benchmarks/speed.py --project DIR [--before DIR] [--only ...]

``DIR`` is a clone of this repository with its data stages run (``dvc repro subsets split@source``); its own
code is what a stage run measures (the entry points put their checkout first on ``sys.path``), so ``--before``
may be a clone of an older commit with the same data. Figures (one function each):

- ``steps``: seconds per RatLesNetV2 training step and per validation pass, fp32 and bf16 autocast,
  interleaved in one process (the demo's network and mouse volume, batch 2).
- ``profile``: one fine-tuning cell (and ``pretrain``) run by its stage entry point under cProfile with a
  small budget: wall time split into process start (imports), store, training steps, validation, MLflow
  logging, model logging and registration; the fixed cost = wall - fit.
- ``dice``: validation Dice of rat pretraining and of one scratch cell, fp32 against bf16, R repeats each,
  interleaved in one process (no MLflow), with a reduced step budget.
- ``convergence``: scratch at each demo sample size with a long budget (bf16): its smoothed validation curve and
  whether the project's convergence rule holds at the end.
- ``valprec``: one model's validation Dice scored in fp32 and in bf16.
- ``warm``: the fixed cost of one fine-tuning cell (its wall time from outside the process minus the fit seconds
  its stage line reports) with a 2-step budget, params.yaml ``runtime.warm_start`` false against true,
  interleaved; the first warm run starts the server and is not counted.
Timings swing with the machine's load (it is shared): compare figures measured in one run only. ``profile``
rewrites the project's params.yaml for its runs (restored after each): run nothing else in that project meanwhile.
``--render RAW.json ... --md FILE`` rewrites FILE's figures from raw results, keeping the text above its mark.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 2
CELL = ["--model", "ratlesnetv2", "--strategy", "scratch", "--sample-size", "16", "--augment", "noaug",
        "--repeat", "0"]
# profile categories: (label, file fragment, function name); cumulative seconds from cProfile
PHASES = [
    ("store connect", "tracking/store.py", "connect"),
    ("network + data setup", "training/setup.py", "setup_training"),
    ("run start: params, lineage, dataset", "tracking/run.py", "log_run_start"),
    ("start_run (+ system metrics)", "mlflow/tracking/fluent.py", "start_run"),
    ("fit (steps + validation + checkpoints)", "training/fit.py", "fit"),
    ("  training steps", "training/engine.py", "train_one_epoch"),
    ("  validation", "training/engine.py", "evaluate"),
    ("  checkpoints", "training/fit.py", "save_checkpoint"),
    ("  per-epoch MLflow logging", "tracking/callback.py", "on_epoch_end"),
    ("log model (pyfunc)", "tracking/pyfunc.py", "log_pyfunc_model"),
    ("register version", "tracking/registry.py", "register_version"),
    ("end_run", "mlflow/tracking/fluent.py", "end_run"),
]


def cpu_flags_line() -> str:
    """The CPU's model name and the flags that matter for bf16."""
    from lesionseg.training.precision import NATIVE_BF16_FLAGS, cpu_flags

    flags = cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    shown = [f for f in ("avx2", "avx512f", *NATIVE_BF16_FLAGS, "amx_tile") if f in flags]
    import torch
    return f"{model}; {os.cpu_count()} logical cores; flags {' '.join(shown)}; torch {torch.__version__} " \
           f"capability {torch.backends.cpu.get_cpu_capability()}"


def step_seconds(project: Path, steps: int = 6, rounds: int = 3) -> dict[str, float]:
    """Median seconds per training step and per validation pass (6 volumes), fp32 vs bf16, interleaved."""
    import torch

    from lesionseg.config import load_config
    from lesionseg.networks import build_network
    from lesionseg.training.engine import build_loss, evaluate
    from lesionseg.training.precision import autocast_context

    torch.set_num_threads(THREADS)
    cfg = load_config(project / "params.yaml")
    shape = cfg.prepare.grid("mouse").shape
    torch.manual_seed(0)
    model = build_network("ratlesnetv2", **cfg.networks.of("ratlesnetv2"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = build_loss("dicece")
    image = torch.randn(2, 1, *shape)
    label = (image > 1).float()
    val = [{"image": image[0].numpy(), "label": label[0].numpy()} for _ in range(6)]

    def step(amp: bool) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context("cpu", amp):
            out = model(image)
            if out.dim() == image.dim() + 1:
                out = list(torch.unbind(out, dim=1))
            loss = loss_fn(out, label)
        loss.backward()
        optimizer.step()

    times: dict[str, list[float]] = {}
    for amp in (False, True):  # warm-up
        step(amp)
        evaluate(model, val, shape, torch.device("cpu"), amp=amp)
    for _ in range(rounds):
        for amp in (False, True):
            name = "bf16" if amp else "fp32"
            start = time.perf_counter()
            for _ in range(steps):
                step(amp)
            times.setdefault(f"{name}_s_per_step", []).append((time.perf_counter() - start) / steps)
            start = time.perf_counter()
            evaluate(model, val, shape, torch.device("cpu"), amp=amp)
            times.setdefault(f"{name}_s_per_validation_6_scans", []).append(time.perf_counter() - start)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["bf16_over_fp32_step"] = out["bf16_s_per_step"] / out["fp32_s_per_step"]
    out["bf16_over_fp32_validation"] = out["bf16_s_per_validation_6_scans"] / out["fp32_s_per_validation_6_scans"]
    return out


def _set_budget(project: Path, section: str | None, budget: dict) -> str:
    """Write ``budget`` into params.yaml's ``train`` (or ``<section>.train``); returns the old text."""
    path = project / "params.yaml"
    old = path.read_text()
    params = yaml.safe_load(old)
    target = params["train"] if section is None else params[section].setdefault("train", {})
    target.update(budget)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return old


def _phase_seconds(prof: Path) -> dict[str, float]:
    stats = pstats.Stats(str(prof), stream=io.StringIO()).stats
    total = max(ct for (_, _, _), (_, _, _, ct, _) in stats.items())
    out = {"profiled total": total}
    for label, fragment, name in PHASES:
        hits = [ct for (f, _, n), (_, _, _, ct, _) in stats.items() if n == name and f.endswith(fragment)]
        out[label] = max(hits) if hits else 0.0
    imports = [ct for (f, _, n), (_, _, _, ct, _) in stats.items() if n == "_find_and_load"]
    out["imports (all, incl. lazy)"] = max(imports) if imports else 0.0
    return out


def profile_stage(project: Path, stage: str, budget: dict, tag: str, out_dir: Path) -> dict[str, float]:
    """Run one stage entry point under cProfile with ``budget``; wall time and its phases (seconds)."""
    script, args, section = {"cell": ("pipelines/finetune.py", CELL, None),
                             "pretrain": ("pipelines/pretrain.py", ["--model", "ratlesnetv2"], "pretrain")}[stage]
    old = _set_budget(project, section, budget)
    prof = out_dir / f"{tag}_{stage}.prof"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(project)}
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), script, *args, "--no-resume"],
                              cwd=project, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    finally:
        (project / "params.yaml").write_text(old)
    (out_dir / f"{tag}_{stage}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{stage} in {project} failed: {done.stderr[-400:]}")
    phases = _phase_seconds(prof)
    return {"wall": wall, **phases, "fixed cost (wall - fit)": wall - phases["fit (steps + validation + checkpoints)"],
            "log lines": len((done.stdout + done.stderr).splitlines())}


def profiles(projects: dict[str, Path], out_dir: Path, repeats: int = 2) -> dict[str, dict[str, float]]:
    """Each project's cell and pretraining profiles, interleaved; the cell's repeated (median of each phase)."""
    cell_budget = {"epochs": 2, "iterations_per_epoch": 10}
    pretrain_budget = {"epochs": 2, "iterations_per_epoch": 15}
    runs: dict[str, list[dict[str, float]]] = {}
    for r in range(repeats):
        for tag, project in projects.items():
            runs.setdefault(f"{tag} cell", []).append(profile_stage(project, "cell", cell_budget, f"{tag}{r}", out_dir))
    for tag, project in projects.items():
        runs[f"{tag} pretrain"] = [profile_stage(project, "pretrain", pretrain_budget, tag, out_dir)]
    return {name: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for name, rows in runs.items()}


def _cell_fixed_cost(project: Path, warm: bool) -> dict[str, float]:
    """One cell run with ``runtime.warm_start`` = ``warm``: wall seconds (measured here), fit and outside."""
    import re

    params = yaml.safe_load((project / "params.yaml").read_text())
    params.setdefault("runtime", {})["warm_start"] = warm
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "pipelines/finetune.py", *CELL, "--no-resume"], cwd=project, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = next((x for x in done.stdout.splitlines() if x.startswith("finetune:")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"the cell in {project} failed: {done.stderr[-400:]}")
    fit = float(re.search(r"\(fit ([0-9.]+) s", line).group(1))
    return {"wall": wall, "fit": fit, "fixed cost (wall - fit)": wall - fit, "warm": "warm start" in line,
            "val_dice": float(re.search(r"val Dice ([0-9.]+)", line).group(1))}


def warm_start_fixed_cost(project: Path, rounds: int = 3) -> dict[str, list[dict[str, float]]]:
    """Fixed cost of a 2-step cell, cold and warm interleaved; the project's params.yaml is restored after."""
    old = _set_budget(project, None, {"epochs": 1, "iterations_per_epoch": 2})
    try:
        _cell_fixed_cost(project, warm=True)  # starts the server (this run itself is cold)
        time.sleep(20)  # the server imports torch, MONAI and MLflow before it listens
        runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        for _ in range(rounds):
            for tag in ("cold", "warm"):
                runs[tag].append(_cell_fixed_cost(project, warm=tag == "warm"))
    finally:
        (project / "params.yaml").write_text(old)
    if not all(r["warm"] for r in runs["warm"]):
        raise RuntimeError("a warm run ran cold: the server was not listening yet")
    return runs


def _fit_dice(spec, amp: bool) -> dict[str, float]:
    """Train ``spec`` with ``train.amp = amp`` (no MLflow); best smoothed and last validation Dice, seconds."""
    import tempfile

    from lesionseg.training.engine import build_loss
    from lesionseg.training.fit import fit
    from lesionseg.training.setup import setup_training

    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, amp=amp))
    setup = setup_training(spec)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, tmp,
                    roi_size=setup.roi_size, progress=False)
    return {"best_val_dice_ema": state.best_val_dice, "last_val_dice": state.history[-1]["val_dice"],
            "seconds": time.perf_counter() - start, "steps": state.step}


def dice_by_precision(project: Path, repeats: int = 3, pretrain_epochs: int = 2, cell_epochs: int = 2,
                      threads: int = 1, first_repeat: int = 0) -> dict[str, list[dict[str, float]]]:
    """Validation Dice of rat pretraining and of the scratch n=16 cell, fp32 vs bf16, seeds 0..R-1, interleaved.

    The budgets are cut to ``pretrain_epochs`` and ``cell_epochs`` epochs (of the demo's 40 and 10) and one thread
    per run, so that R = 3 fits on a shared 2-core machine: the question is whether bf16 moves the answer by more
    than a different seed does, at the same point of training."""
    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.training.spec import finetune_spec, pretrain_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    pre_train = dataclasses.replace(cfg.train_for("pretrain"), epochs=max(1, pretrain_epochs), patience_steps=10**6,
                                    num_threads=threads)
    cell_train = dataclasses.replace(cfg.train_for("finetune"), epochs=max(1, cell_epochs), patience_steps=10**6,
                                     num_threads=threads)
    rows: dict[str, list[dict[str, float]]] = {}
    for r in range(first_repeat, first_repeat + repeats):
        pre = pretrain_spec("ratlesnetv2", cfg.networks.of("ratlesnetv2"),
                            dataclasses.replace(pre_train, seed=pre_train.seed + r), cfg.pretrain,
                            cfg.data.role("source"), layout)
        cell = finetune_spec("ratlesnetv2", "scratch", 16, "noaug", network=cfg.networks.of("ratlesnetv2"),
                             train=cell_train, finetune=cfg.finetune, target=cfg.data.role("target"), layout=layout,
                             repeat=r)
        for amp in (False, True):
            for name, spec in (("pretrain", pre), ("cell", cell)):
                if (pretrain_epochs if name == "pretrain" else cell_epochs) == 0:
                    continue
                row = {"repeat": r, **_fit_dice(spec, amp)}
                rows.setdefault(f"{name} {'bf16' if amp else 'fp32'}", []).append(row)
                print(name, "bf16" if amp else "fp32", row, flush=True)
    return rows


def _dice_table(rows: dict[str, list[dict[str, float]]]) -> list[str]:
    lines = ["| run | repeats | best val Dice (EMA) per repeat | mean | SD | last val Dice mean | s per run |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        best = [x["best_val_dice_ema"] for x in runs]
        lines.append(f"| {name} | {len(runs)} | {', '.join(f'{b:.3f}' for b in best)} | {statistics.mean(best):.3f} "
                     f"| {statistics.stdev(best) if len(best) > 1 else 0:.3f} "
                     f"| {statistics.mean(x['last_val_dice'] for x in runs):.3f} "
                     f"| {statistics.median(x['seconds'] for x in runs):.0f} |")
    for kind in ("pretrain", "cell"):
        fp32, bf16 = rows.get(f"{kind} fp32"), rows.get(f"{kind} bf16")
        if not (fp32 and bf16):
            continue
        for key in ("best_val_dice_ema", "last_val_dice"):
            paired = [b[key] - f[key] for f, b in zip(fp32, bf16)]
            spread = statistics.stdev([x[key] for x in fp32]) if len(fp32) > 1 else float("nan")
            lines.append(f"\n{kind}, {key}: bf16 - fp32 per repeat (same seed) "
                         f"{', '.join(f'{d:+.3f}' for d in paired)}; mean {statistics.mean(paired):+.3f}; "
                         f"fp32 run-to-run SD {spread:.3f}")
    return lines


def validation_by_precision(project: Path, epochs: int = 2, threads: int = 1) -> dict[str, dict[str, float]]:
    """The same trained model's validation Dice evaluated in fp32 and in bf16 (rat pretraining, seed 0, trained
    once in each precision): does the inference path alone move the score?"""
    import tempfile

    import torch

    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.training.engine import build_loss, evaluate
    from lesionseg.training.fit import fit
    from lesionseg.training.setup import setup_training
    from lesionseg.training.spec import pretrain_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    out = {}
    for amp in (True, False):
        train = dataclasses.replace(cfg.train_for("pretrain"), epochs=epochs, patience_steps=10**6,
                                    num_threads=threads, amp=amp)
        spec = pretrain_spec("ratlesnetv2", cfg.networks.of("ratlesnetv2"), train, cfg.pretrain,
                             cfg.data.role("source"), layout)
        setup = setup_training(spec)
        with tempfile.TemporaryDirectory() as tmp:
            fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, tmp,
                roi_size=setup.roi_size, progress=False)
        out["bf16" if amp else "fp32"] = {
            name: evaluate(setup.model, setup.val_items, setup.roi_size, torch.device("cpu"), amp=val_amp)["val_dice"]
            for name, val_amp in (("fp32", False), ("bf16", True))}
    return out


def convergence(project: Path, sizes=(4, 8, 16), epochs: int = 30, repeat: int = 0, threads: int = 1
                ) -> dict[int, dict]:
    """Scratch at each size with a long budget (bf16 where native): its smoothed validation curve and whether the
    project's rule (:func:`lesionseg.training.fit.converged`) holds at the end of that budget. A run that has not
    converged at ``epochs`` shows that the budget scratch needs is larger; one that has bounds it from above."""
    import tempfile

    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.training.engine import build_loss
    from lesionseg.training.fit import converged, fit
    from lesionseg.training.setup import setup_training
    from lesionseg.training.spec import finetune_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    train = dataclasses.replace(cfg.train_for("finetune"), epochs=epochs, patience_steps=10**6, num_threads=threads)
    out = {}
    for n in sizes:
        spec = finetune_spec("ratlesnetv2", "scratch", n, "noaug", network=cfg.networks.of("ratlesnetv2"),
                             train=train, finetune=cfg.finetune, target=cfg.data.role("target"), layout=layout,
                             repeat=repeat)
        setup = setup_training(spec)
        with tempfile.TemporaryDirectory() as tmp:
            state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, tmp,
                        roi_size=setup.roi_size, progress=False)
        curve = state.history
        out[n] = {"converged_at_end": converged(curve, state.best_step, spec.train.budget_steps, False),
                  "best_step": state.best_step, "ema": [round(h["val_dice_ema"], 3) for h in curve]}
        print(n, out[n], flush=True)
    return out


def _profile_table(profile: dict[str, dict[str, float]]) -> list[str]:
    names = list(profile)
    rows = list(next(iter(profile.values())))
    lines = ["| seconds | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(f"{profile[n].get(row, float('nan')):.2f}" for n in names) + " |")
    return lines


def _loads(value) -> str:
    return " ".join(f"{x:.1f}" for x in value) if isinstance(value, list) else str(value or "n/a")


FIGURES_MARK = "<!-- figures: written by python benchmarks/speed.py --render RAW.json ... (edit above this line) -->"


def render(raw_files: list[Path], out: Path) -> None:
    """The figures of ``out`` from the raw JSON of one or more runs of this script; the reading above
    :data:`FIGURES_MARK` (written by a person) is kept."""
    head = out.read_text().split(FIGURES_MARK)[0] if out.exists() else "# Speed of the demo's training cells\n\n"
    lines = [head.rstrip("\n"), "", FIGURES_MARK, "",
             "The CPU is shared (2 cores, other jobs beside): compare figures within one run only.", ""]
    for raw in raw_files:
        results = json.loads(raw.read_text())
        lines += [f"## {raw.stem}", "", f"- CPU: {results['cpu']}",
                  f"- load average (1, 5, 15 min) at start / end: {_loads(results['load_start'])} / "
                  f"{_loads(results.get('load_end'))}",
                  f"- command: `{results.get('command', '')}`", ""]
        if "steps" in results:
            lines += ["| figure | value |", "|---|---|",
                      *[f"| {k} | {v:.3f} |" for k, v in results["steps"].items()], ""]
        if "profile" in results:
            lines += _profile_table(results["profile"]) + [""]
        if "dice" in results:
            lines += _dice_table(results["dice"]) + [""]
        if "convergence" in results:
            lines += ["| n | converged at the end (project's rule) | best step | val Dice EMA per epoch |",
                      "|---|---|---|---|",
                      *[f"| {n} | {c['converged_at_end']} | {c['best_step']} | {' '.join(map(str, c['ema']))} |"
                        for n, c in results["convergence"].items()], ""]
        if "valprec" in results:
            lines += ["| model | validated in fp32 | validated in bf16 |", "|---|---|---|",
                      *[f"| trained in {k} | {v['fp32']:.4f} | {v['bf16']:.4f} |" for k, v in results["valprec"].items()],
                      ""]
    out.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path)
    parser.add_argument("--render", type=Path, nargs="+", help="write --md from these raw JSON files and stop")
    parser.add_argument("--md", type=Path, default=Path(__file__).with_name("results_speed.md"))
    parser.add_argument("--before", type=Path, help="a clone of the old code with the same data")
    parser.add_argument("--only", nargs="+", default=["steps", "profile", "dice"],
                        choices=["steps", "profile", "dice", "convergence", "valprec", "warm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-repeat", type=int, default=0, help="dice: the first repeat (seed offset) to run")
    parser.add_argument("--pretrain-epochs", type=int, default=2, help="dice: pretraining epochs (0: skip)")
    parser.add_argument("--cell-epochs", type=int, default=2, help="dice: the cell's epochs (0: skip)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16], help="convergence: sample sizes")
    parser.add_argument("--epochs", type=int, default=30, help="convergence: epochs of the long run")
    parser.add_argument("--threads", type=int, default=1, help="dice: CPU threads per run (1: three at a time fit)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("speed_raw.json"))
    args = parser.parse_args()
    if args.render:
        render(args.render, args.md)
        return
    import torch

    torch.set_num_threads(THREADS)
    results: dict = {"cpu": cpu_flags_line(), "load_start": os.getloadavg(),
                     "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:])}
    if "steps" in args.only:
        results["steps"] = step_seconds(args.project)
        print(json.dumps(results["steps"], indent=1), flush=True)
    if "profile" in args.only:
        projects = {"before": args.before, "after": args.project} if args.before else {"after": args.project}
        out_dir = args.out.parent / "profiles"
        out_dir.mkdir(exist_ok=True)
        results["profile"] = profiles(projects, out_dir)
        print(json.dumps(results["profile"], indent=1), flush=True)
    if "dice" in args.only:
        rows = dice_by_precision(args.project, args.repeats, pretrain_epochs=args.pretrain_epochs,
                                 cell_epochs=args.cell_epochs, first_repeat=args.first_repeat, threads=args.threads)
        results["dice"] = rows
        print("\n".join(_dice_table(rows)), flush=True)
    if "convergence" in args.only:
        results["convergence"] = convergence(args.project, sizes=args.sizes, epochs=args.epochs)
    if "valprec" in args.only:
        results["valprec"] = validation_by_precision(args.project)
    if "warm" in args.only:
        results["warm"] = warm_start_fixed_cost(args.project, rounds=args.repeats)
        print(json.dumps(results["warm"], indent=1), flush=True)
    results["load_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
