"""Choose the demo's training budget on validation data: the budget at which RatLesNetV2 from scratch converges.

Issue 28: every arm gets the budget at which scratch converges at each sample size, chosen on validation (never
test) data. For each candidate budget (epochs x ``train.iterations_per_epoch`` steps, the poly schedule spanning
it) and each sample size and repeat, this trains the scratch arm exactly as the ``scratch`` stage does (same
params, early stopping where ``train.patience_steps`` is set) on the target's train subset, validates on its validation
split, and applies the project's convergence rule (:func:`lesionseg.training.fit.converged`). The chosen budget
is the smallest candidate at which every run converged. With ``--source`` it does the same for the ``pretrain``
stage: the source (rat) model on the source's train split, judged on the source's validation split.

Run by hand in a project whose ``dvc repro subsets`` has run (this reads only data/processed, data/splits and
subsets/), then copy the chosen epochs into params.yaml::

    python benchmarks/budget.py --project CLONE --epochs 10 20 30 --repeats 0 1 --md benchmarks/results_budget.md
    python benchmarks/budget.py --project CLONE --source --epochs 80 120   # needs `dvc repro split` only
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lesionseg.training.spec import RunSpec


def scratch_run(project: Path, sample_size: int, repeat: int, epochs: int, threads: int) -> dict:
    """One scratch cell at ``epochs`` epochs (validation data only): where it stopped and whether it converged."""
    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.training.spec import finetune_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    model = cfg.finetune.models[0]
    train = dataclasses.replace(cfg.train_for("finetune"), epochs=epochs, num_threads=threads)
    spec = finetune_spec(model, "scratch", sample_size, "noaug", network=cfg.networks.of(model), train=train,
                         finetune=cfg.finetune, target=cfg.data.role("target"), layout=layout, repeat=repeat)
    return {"n": sample_size, "repeat": repeat, **_fit_on_validation(spec, threads)}


def source_run(project: Path, epochs: int, threads: int) -> dict:
    """The ``pretrain`` stage's source (rat) run at ``epochs`` epochs, selected on the source's validation split."""
    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.training.spec import pretrain_spec

    cfg, layout = load_config(project / "params.yaml"), Layout.at(project)
    model = cfg.pretrain.models[0]
    train = dataclasses.replace(cfg.train_for("pretrain"), epochs=epochs, num_threads=threads)
    spec = pretrain_spec(model, cfg.networks.of(model), train, cfg.pretrain, cfg.data.role("source"), layout)
    return {"n": f"{spec.domain} ({spec.sample_size})", "repeat": "-", **_fit_on_validation(spec, threads)}


def _fit_on_validation(spec: RunSpec, threads: int) -> dict:
    """Train ``spec`` with validation on its own split; where it stopped, whether it converged, its curve."""
    import torch

    from lesionseg.training.engine import build_loss
    from lesionseg.training.fit import fit
    from lesionseg.training.setup import setup_training

    torch.set_num_threads(threads)
    setup = setup_training(spec)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        state = fit(setup.model, build_loss(spec.train.loss), setup.loader, setup.val_items, spec.train, tmp,
                    roi_size=setup.roi_size, progress=False)
    return {"budget": spec.train.budget_steps, "steps_run": state.step,
            "best_step": state.best_step, "stopped_early": state.stopped_early, "converged": state.converged,
            "best_val_dice_ema": round(state.best_val_dice, 4), "seconds": round(time.perf_counter() - started, 1),
            "ema": [round(h["val_dice_ema"], 3) for h in state.history]}


def render(rows: list[dict], chosen: int | None, command: str, source: bool = False) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    trained = ("The source model as the `pretrain` stage trains it" if source else
               "Scratch RatLesNetV2 as the `scratch` stage trains it")
    lines = ["# The demo's training budget, chosen on validation data (issue 28)", "",
             f"Written by `{command}` (load average at the end {load}). {trained}, "
             "early stopping as `train.patience_steps` sets it; validation split only. Converged: the project's rule "
             "(`lesionseg.training.fit.converged`).", "",
             "| budget (steps) | n | repeat | steps run | best step | stopped early | converged | best val Dice (EMA) "
             "| s | val Dice EMA per epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {r['n']} | {r['repeat']} | {r['steps_run']} | {r['best_step']} | "
              f"{r['stopped_early']} | {r['converged']} | {r['best_val_dice_ema']:.3f} | {r['seconds']} | "
              f"{' '.join(map(str, r['ema']))} |" for r in rows]
    verdict = (f"**Chosen: {chosen} steps**, the smallest candidate at which every run converged."
               if chosen else "**No candidate budget made every run converge.**")
    return "\n".join(lines + ["", verdict, ""])


def _command(args: argparse.Namespace) -> str:
    """The command line that wrote the table, without the machine-specific paths."""
    flags = []
    for key, value in vars(args).items():
        if key in ("project", "md") or value is None or value is False:  # not `in (None, False)`: 0 == False
            continue
        shown = "" if value is True else " " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
        flags.append(f"--{key}{shown}")
    return "python benchmarks/budget.py " + " ".join(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--epochs", type=int, nargs="+", required=True, help="candidate budgets, in epochs")
    parser.add_argument("--source", action="store_true",
                        help="choose the pretrain stage's budget on the source's validation split instead")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: subsets.sizes")
    parser.add_argument("--repeats", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(args.project)
    import yaml

    sizes = args.sizes or yaml.safe_load((args.project / "params.yaml").read_text())["subsets"]["sizes"]
    rows, chosen = [], None
    for epochs in sorted(args.epochs):
        batch = []
        runs = ([lambda: source_run(args.project, epochs, args.threads)] if args.source else
                [lambda n=n, r=r: scratch_run(args.project, n, r, epochs, args.threads)
                 for n in sizes for r in args.repeats])
        for run in runs:
            batch.append(run())
            print(batch[-1], flush=True)
        rows += batch
        if all(r["converged"] for r in batch):
            chosen = batch[0]["budget"]
            break
    text = render(rows, chosen, _command(args), args.source)
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
