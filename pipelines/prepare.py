"""DVC stage `prepare@{source,target}`: validate, reorient to RAS, resample, normalise, crop/pad."""
import argparse

from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.data.preprocess import prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["source", "target"], required=True)
    args = parser.parse_args()
    p = params()
    dataset = section(p, "data")[args.role]
    cfg = section(p, "prepare")[dataset["name"]]
    manifest = prepare_dataset(ROOT / dataset["raw"], ROOT / "data" / "processed" / dataset["name"],
                               target_spacing=cfg["target_spacing"], shape=cfg["shape"],
                               clip_percentiles=tuple(section(p, "prepare").get("clip_percentiles", (0.5, 99.5))))
    print(f"prepare: {dataset['raw']} -> {manifest.parent.relative_to(ROOT)}")


if __name__ == "__main__":
    run(main)
