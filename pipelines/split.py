"""DVC stage `split@{source,target}`: 70/10/20 train/val/test, stratified by group and lesion-size bin."""
import argparse

from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.data.io import write_json
from lesionseg.data.preprocess import load_manifest
from lesionseg.data.splits import split_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["source", "target"], required=True)
    args = parser.parse_args()
    p = params()
    name = section(p, "data")[args.role]["name"]
    cfg = section(p, "split")
    cases = load_manifest(ROOT / "data" / "processed" / name)["cases"]
    split = split_cases(cases, fractions=tuple(cfg["fractions"]), seed=cfg["seed"], n_size_bins=cfg["n_size_bins"])
    write_json(ROOT / "data" / "splits" / f"{name}.json", split)
    print("split: " + ", ".join(f"{k}={len(v)}" for k, v in split.items()) + f" ({name})")


if __name__ == "__main__":
    run(main)
