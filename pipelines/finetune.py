"""DVC stage / MLproject entry `finetune@MODEL-STRATEGY-N-AUG`: one cell of the transfer study on the target."""
import argparse

from _stage import ROOT, params, run

from lesionseg.runs import train_tracked
from lesionseg.specs import finetune_name, finetune_spec
from lesionseg.tracking.registry import TARGET_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--strategy", choices=["scratch", "partial", "full"], required=True)
    parser.add_argument("--sample-size", type=int, required=True)
    parser.add_argument("--augment", choices=["aug", "noaug"], default="noaug")
    parser.add_argument("--freeze-depth", type=int, default=None, help="override finetune.partial_freeze_depth")
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by a crashed run")
    args = parser.parse_args()
    spec = finetune_spec(params(), args.model, args.strategy, args.sample_size, args.augment, ROOT,
                         freeze_depth=args.freeze_depth)
    name = finetune_name(args.model, args.strategy, args.sample_size, args.augment)
    result = train_tracked(spec, ROOT, ROOT / "models" / "finetune" / name, ROOT / "checkpoints" / "finetune" / name,
                           resume=not args.no_resume, register_as=TARGET_MODEL)
    print(f"finetune: {spec.run_name} best val Dice {result['best_val_dice']:.3f} (epoch {result['best_epoch']}), "
          f"run {result['run_id']}, {TARGET_MODEL} v{result['version']}")


if __name__ == "__main__":
    run(main)
