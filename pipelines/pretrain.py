"""DVC stage / MLproject entry `pretrain@MODEL`: train on the source (rat) domain and register the weights."""
import argparse

from _stage import ROOT, params, run

from lesionseg.runs import train_tracked
from lesionseg.specs import pretrain_spec, domain_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by a crashed run")
    args = parser.parse_args()
    p = params()
    spec = pretrain_spec(p, args.model, ROOT)
    result = train_tracked(spec, ROOT, ROOT / "models" / "pretrained" / args.model,
                           ROOT / "checkpoints" / "pretrained" / args.model, resume=not args.no_resume,
                           register_as=f"{args.model}-{domain_name(p, 'source')}")
    print(f"pretrain: {spec.run_name} best val Dice {result['best_val_dice']:.3f} (epoch {result['best_epoch']}), "
          f"run {result['run_id']}, {result['registered_model']} v{result['version']}")


if __name__ == "__main__":
    run(main)
