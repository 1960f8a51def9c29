"""DVC stage / MLproject entry `tune@N`: Optuna search of freeze_depth and lr at sample size N, then the
final model with the best setting (tuning/nN/best.json, models/tuned/nN, a `tuned` lesionseg-mouse version)."""
import argparse

from _stage import ROOT, params, run

from lesionseg.study import tune_and_retrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample-size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (overrides tune.storage)")
    args = parser.parse_args()
    outcome = tune_and_retrain(params(), args.sample_size, ROOT, workers=args.workers, storage=args.storage)
    best = outcome["best_params"]
    print(f"tune: n={args.sample_size} best freeze_depth={best['freeze_depth']} lr={best['lr']:.2e} "
          f"val Dice {outcome['best_value']:.3f}; trials {outcome['trials']}; "
          f"final version {outcome['final']['version']}")


if __name__ == "__main__":
    run(main)
