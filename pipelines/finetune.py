"""DVC stage / MLproject entry `finetune@MODEL-STRATEGY-N-AUG-R`: one cell of the transfer study on the target."""
import argparse

from _stage import LAYOUT, config, context, run

from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.tracking.run import train_tracked
from lesionseg.training.spec import finetune_name, finetune_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--model", "--strategy", "--sample-size", "--augment", "--repeat"):
        parser.add_argument(flag, required=True, type=int if flag in ("--sample-size", "--repeat") else str)
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by a crashed run")
    args = parser.parse_args()
    cfg = config()
    spec = finetune_spec(args.model, args.strategy, args.sample_size, args.augment, network=cfg.networks.of(args.model),
                         train=cfg.train_for("finetune"), finetune=cfg.finetune, target=cfg.data.role("target"),
                         layout=LAYOUT, repeat=args.repeat)
    name = finetune_name(args.model, args.strategy, args.sample_size, args.augment, args.repeat)
    result = train_tracked(spec, context(), LAYOUT.finetune_dir(name), LAYOUT.checkpoints("finetune", name),
                           resume=not args.no_resume, register_as=TARGET_MODEL)
    print(f"finetune: {spec.run_name} best val Dice {result['best_val_dice']:.3f} (epoch {result['best_epoch']}), "
          f"run {result['run_id']}, {TARGET_MODEL} v{result['version']}")


if __name__ == "__main__":
    run(main)
