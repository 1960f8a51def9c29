"""DVC stage `subsets`: nested, lesion-balanced training sets of each size from the target train split."""
from _stage import ROOT, params, run

from lesionseg.config import section
from lesionseg.data.io import read_json, write_json
from lesionseg.data.preprocess import load_manifest
from lesionseg.data.splits import lesion_balanced_subsets


def main() -> None:
    p = params()
    name = section(p, "data")["target"]["name"]
    cfg = section(p, "subsets")
    cases = load_manifest(ROOT / "data" / "processed" / name)["cases"]
    train_ids = read_json(ROOT / "data" / "splits" / f"{name}.json")["train"]
    subsets = lesion_balanced_subsets(cases, train_ids, cfg["sizes"], seed=cfg["seed"],
                                      n_size_bins=cfg["n_size_bins"])
    write_json(ROOT / "data" / "splits" / "subsets.json", subsets)
    print("subsets: " + ", ".join(f"n={k}" for k in subsets))


if __name__ == "__main__":
    run(main)
