"""DVC stage / MLproject entry `pretrain@MODEL`: train on the source (rat) domain and register the weights."""
import argparse

from _stage import LAYOUT, config, context, quiet, run

from lesionseg.errors import ConfigError
from lesionseg.tracking.run import train_tracked
from lesionseg.training.spec import pretrain_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by a crashed run")
    args = parser.parse_args()
    cfg = config()
    if cfg.finetune.published:
        raise ConfigError(f"finetune.source is a weights file ({cfg.finetune.source}), so nothing is pretrained: "
                          "set pretrain.models: [] in params.yaml (and leave data.source out)")
    spec = pretrain_spec(args.model, cfg.networks.of(args.model), cfg.train_for("pretrain"), cfg.pretrain,
                         cfg.data.role("source"), LAYOUT)
    result = train_tracked(spec, context(), LAYOUT.pretrained_dir(args.model),
                           LAYOUT.checkpoints("pretrained", args.model), resume=not args.no_resume,
                           register_as=f"{args.model}-{spec.domain}")
    print(f"pretrain: {spec.run_name} best val Dice {result['best_val_dice']:.3f} (epoch {result['best_epoch']}), "
          f"run {result['run_id']}, {result['registered_model']} v{result['version']}{quiet.timing()}")


if __name__ == "__main__":
    run(main)
