"""DVC stage `subsets`: per repeat, an independent draw of nested, lesion-balanced training sets of each size."""
from _stage import LAYOUT, config, run

from lesionseg.data.io import read_json, write_json
from lesionseg.data.preprocess import load_manifest
from lesionseg.data.splits import lesion_balanced_subsets


def main() -> None:
    cfg = config()
    name = cfg.data.role("target").name
    cases = load_manifest(LAYOUT.processed(name))["cases"]
    train_ids = read_json(LAYOUT.split_file(name))["train"]
    for r in cfg.study.repeats:
        subsets = lesion_balanced_subsets(cases, train_ids, cfg.subsets.sizes, seed=cfg.subsets.seed + r,
                                          n_size_bins=cfg.subsets.n_size_bins)
        for size, ids in subsets.items():
            write_json(LAYOUT.subsets_file(r, int(size)), ids)
    print(f"subsets: repeats {cfg.study.repeats}, sizes {cfg.subsets.sizes} in {LAYOUT.relative(LAYOUT.subsets_dir)}")


if __name__ == "__main__":
    run(main)
