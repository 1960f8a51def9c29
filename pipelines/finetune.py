"""DVC stage / MLproject entry `finetune@MODEL-STRATEGY-N-AUG-R`: one cell of the transfer study (sha256 of its source)."""
import argparse

from _stage import LAYOUT, config, context, quiet, run

from lesionseg.tracking.import_weights import log_source_param, source_tags
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.tracking.run import train_tracked
from lesionseg.training.spec import finetune_name, finetune_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--model", "--strategy", "--sample-size", "--augment", "--repeat"):
        parser.add_argument(flag, required=True, type=int if flag in ("--sample-size", "--repeat") else str)
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by a crashed run")
    args, cfg = parser.parse_args(), config()
    spec = finetune_spec(args.model, args.strategy, args.sample_size, args.augment, train=cfg.train_for("finetune"),
                         network=cfg.finetune.network(args.model, cfg.networks.of(args.model)), finetune=cfg.finetune,
                         target=cfg.data.role("target"), layout=LAYOUT, repeat=args.repeat)
    tags = source_tags(spec.pretrained)  # the weights' sha256: run params and tags, registry tags
    name = finetune_name(args.model, args.strategy, args.sample_size, args.augment, args.repeat)
    result = train_tracked(spec, context(), LAYOUT.finetune_dir(name), LAYOUT.checkpoints("finetune", name),
                           resume=not args.no_resume, register_as=TARGET_MODEL, tags=tags)
    log_source_param(result["run_id"], tags)
    print(f"finetune: {spec.run_name} val Dice {result['best_val_dice']:.3f}, {TARGET_MODEL} v{result['version']}{quiet.timing()}")


if __name__ == "__main__":
    run(main)
