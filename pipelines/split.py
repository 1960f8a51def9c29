"""DVC stage `split@{source,target}`: 70/10/20 train/val/test, stratified by group and lesion-size bin."""
import argparse

from _stage import LAYOUT, config, run

from lesionseg.data.io import write_json
from lesionseg.data.preprocess import load_manifest
from lesionseg.data.splits import split_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["source", "target"], required=True)
    args = parser.parse_args()
    cfg = config()
    name = cfg.data.role(args.role).name
    cases = load_manifest(LAYOUT.processed(name))["cases"]
    split = split_cases(cases, fractions=tuple(cfg.split.fractions), seed=cfg.split.seed,
                        n_size_bins=cfg.split.n_size_bins)
    write_json(LAYOUT.split_file(name), split)
    print("split: " + ", ".join(f"{k}={len(v)}" for k, v in split.items()) + f" ({name})")


if __name__ == "__main__":
    run(main)
