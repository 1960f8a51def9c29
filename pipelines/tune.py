"""DVC stage / MLproject entry `tune@N`: Optuna search of freeze_depth and lr at N, then the final model."""
import argparse
import dataclasses

from _stage import LAYOUT, config, context, quiet, run
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.training.spec import tune_base_spec
from lesionseg.tuning import tune_and_retrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--sample-size", "--repeat"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (overrides tune.storage)")
    args = parser.parse_args()
    cfg = config()
    tune = dataclasses.replace(cfg.tune, storage=args.storage or cfg.tune.storage)
    base = tune_base_spec(tune.model, args.sample_size, network=cfg.finetune.network(tune.model, cfg.networks.of(tune.model)),
                          train=cfg.train_for("tune"), finetune=cfg.finetune, target=cfg.data.role("target"),
                          layout=LAYOUT, repeat=args.repeat)
    outcome = tune_and_retrain(base, tune, cfg.train_for("finetune"), context(), workers=args.workers,
                               register_as=TARGET_MODEL)
    print(f"tune: n={args.sample_size} r={args.repeat} best {outcome['best_params']} val Dice {outcome['best_value']:.3f}; "
          f"trials {outcome['trials']}; final version {outcome['final']['version']}{quiet.timing()}")


if __name__ == "__main__":
    run(main)
