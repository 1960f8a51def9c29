"""DVC stage `prepare@{source,target}`: validate, reorient to RAS, resample, normalise, crop/pad."""
import argparse

from _stage import LAYOUT, config, run

from lesionseg.data.preprocess import prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["source", "target"], required=True)
    args = parser.parse_args()
    cfg = config()
    dataset = cfg.data.role(args.role)
    grid = cfg.prepare.grid(dataset.name)
    manifest = prepare_dataset(LAYOUT.resolve(dataset.raw), LAYOUT.processed(dataset.name),
                               target_spacing=grid.target_spacing, shape=grid.shape,
                               clip_percentiles=cfg.prepare.clip_percentiles, source=LAYOUT.relative(dataset.raw))
    print(f"prepare: {dataset.raw} -> {LAYOUT.relative(manifest.parent)}")


if __name__ == "__main__":
    run(main)
