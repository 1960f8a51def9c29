"""Which checkpoint rule to trust with a small validation set, measured on the SOURCE domain (rat), never on
the mouse test split.

The study's runs pick their checkpoint on a handful of validation scans (the demo's mouse val split has 6, one a
sham scoring 0 or 1). This benchmark trains RatLesNetV2 from scratch on lesion-balanced rat subsets with the
study's fine-tuning budget, validates on the rat val split (4 scans: as small as the mouse one) and, after every
validation, also scores the rat TEST split. It then asks each rule which checkpoint it would keep (best raw
validation Dice; best exponential moving average of it, nnU-Net style, at several weights; the final one) and
reports the rat test Dice of that checkpoint. The rule with the best mean rat test Dice becomes `train.val_ema`.

    python benchmarks/checkpoint_rule.py --work /tmp/ckpt --seeds 0 1 2 --out benchmarks/results_checkpoint_rule.md
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.config import load_config  # noqa: E402
from lesionseg.data.preprocess import load_manifest, prepare_dataset  # noqa: E402
from lesionseg.data.splits import lesion_balanced_subsets, split_cases  # noqa: E402
from lesionseg.data.synthetic import synthesize_dataset  # noqa: E402
from lesionseg.training.engine import build_loss, evaluate, resolve_device  # noqa: E402
from lesionseg.training.fit import fit, smoothed  # noqa: E402
from lesionseg.training.loaders import load_items  # noqa: E402
from lesionseg.training.setup import setup_training  # noqa: E402
from lesionseg.training.spec import RunSpec  # noqa: E402

EMA_WEIGHTS = (0.0, 0.5, 0.7, 0.9)


class TestScorer:
    """A fit callback that scores the test split after each validation (benchmark only: the study never does)."""

    def __init__(self, model, items, roi_size, device, overlap):
        self.model, self.items, self.roi_size, self.device, self.overlap = model, items, roi_size, device, overlap
        self.test_dice: list[float] = []

    def on_fit_start(self, state, resumed):
        pass

    def on_epoch_end(self, epoch, metrics, state):
        self.test_dice.append(evaluate(self.model, self.items, self.roi_size, self.device,
                                       overlap=self.overlap)["val_dice"])

    def on_fit_end(self, state):
        pass


def prepare_rat(cfg, work: Path) -> tuple[Path, dict]:
    """The demo's rat data (synthesize + prepare + split with params.yaml's settings)."""
    rat, grid = cfg.datasets.synthetic_dataset("rat"), cfg.prepare.grid("rat")
    raw = work / "raw"
    if not raw.exists():
        synthesize_dataset("rat", rat.cases, rat.seed, raw, sham_fraction=rat.sham_fraction,
                           matrix=rat.matrix, n_slices=rat.n_slices)
    prepared = work / "prepared"
    if not prepared.exists():
        prepare_dataset(raw, prepared, target_spacing=grid.target_spacing, shape=grid.shape,
                        clip_percentiles=cfg.prepare.clip_percentiles)
    cases = load_manifest(prepared)["cases"]
    split = split_cases(cases, fractions=tuple(cfg.split.fractions), seed=cfg.split.seed,
                        n_size_bins=cfg.split.n_size_bins)
    return prepared, split


def one_run(cfg, prepared: Path, split: dict, sample_size: int, seed: int, work: Path) -> pd.DataFrame:
    """Train from scratch on a rat subset of ``sample_size``; the per-validation val and test Dice."""
    cases = load_manifest(prepared)["cases"]
    subset = lesion_balanced_subsets(cases, split["train"], [sample_size], seed=cfg.subsets.seed + seed,
                                     n_size_bins=cfg.subsets.n_size_bins)[str(sample_size)]
    base = cfg.train_for("finetune")
    train = dataclasses.replace(base, lr=cfg.finetune.lr_for("scratch") or base.lr, seed=base.seed + seed,
                                val_ema=0.0, patience_steps=base.budget_steps)  # raw curve, no early stop
    spec = RunSpec(stage="finetune", model="ratlesnetv2", network=cfg.networks.of("ratlesnetv2"), strategy="scratch",
                   freeze_depth=0, augment=False, sample_size=sample_size, prepared_dir=prepared, train_ids=subset,
                   val_ids=split["val"], train=train, domain="rat", repeat=seed)
    setup = setup_training(spec)
    scorer = TestScorer(setup.model, load_items(prepared, split["test"]), setup.roi_size,
                        resolve_device(train.device), train.sw_overlap)
    state = fit(setup.model, build_loss(train.loss), setup.loader, setup.val_items, train,
                work / f"ckpt-{seed}", roi_size=setup.roi_size, callbacks=[scorer], progress=False)
    history = pd.DataFrame(state.history)[["epoch", "step", "val_dice"]]
    return history.assign(test_dice=scorer.test_dice, seed=seed)


def choose(history: pd.DataFrame) -> dict[str, float]:
    """Rat test Dice of the checkpoint each rule keeps (ties: the earliest, as fit keeps the first best)."""
    out = {}
    for weight in EMA_WEIGHTS:
        curve, previous = [], None
        for value in history["val_dice"]:
            previous = smoothed(previous, value, weight)
            curve.append(previous)
        out["best raw val" if weight == 0 else f"best EMA {weight}"] = history["test_dice"].iloc[int(np.argmax(curve))]
    out["final"] = history["test_dice"].iloc[-1]
    out["oracle (best test, not a rule)"] = history["test_dice"].max()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sample-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_checkpoint_rule.md")
    args = parser.parse_args()
    cfg = load_config(ROOT / "params.yaml")
    started = time.time()
    prepared, split = prepare_rat(cfg, args.work)
    histories = [one_run(cfg, prepared, split, args.sample_size, seed, args.work) for seed in args.seeds]
    table = pd.DataFrame([choose(h) for h in histories], index=[f"seed {s}" for s in args.seeds])
    table.loc["mean"] = table.mean()
    curves = pd.concat(histories, ignore_index=True)
    text = "\n".join([
        "# Checkpoint rule, measured on the source domain (rat)", "",
        f"`python benchmarks/checkpoint_rule.py --seeds {' '.join(map(str, args.seeds))}`; RatLesNetV2 from scratch, "
        f"n = {args.sample_size} rats, {cfg.train_for('finetune').budget_steps} steps (the study's fine-tuning "
        f"budget), validation on {len(split['val'])} rat val scans every "
        f"{cfg.train_for('finetune').iterations_per_epoch} steps, scored on {len(split['test'])} rat test scans. "
        f"{time.time() - started:.0f} s.", "",
        "Rat test Dice (val-selection score: shams count 1 when left empty) of the checkpoint each rule keeps:", "",
        table.round(3).to_markdown(), "", "## Curves", "", curves.round(3).to_markdown(index=False), ""])
    args.out.write_text(text)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
