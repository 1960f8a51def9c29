"""DVC stage `synthesize`: synthetic rat (source) and mouse (target) raw datasets in the nnU-Net layout."""
from _stage import LAYOUT, config, run

from lesionseg.data.synthetic import synthesize_dataset


def main() -> None:
    cfg = config().synthesize
    for domain, size in (("rat", cfg.rat), ("mouse", cfg.mouse)):
        out = synthesize_dataset(domain, size.cases, cfg.seed, LAYOUT.raw(domain), sham_fraction=cfg.sham_fraction,
                                 matrix=size.matrix, n_slices=size.n_slices)
        print(f"synthesize: {size.cases} {domain} cases -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
