"""DVC stage `synthesize`: synthetic rat (source) and mouse (target) raw datasets in the nnU-Net layout."""
from _stage import LAYOUT, config, run

from lesionseg.data.synthetic import synthesize_dataset


def main() -> None:
    cfg = config().synthesize
    for domain, size in (("rat", cfg.rat), ("mouse", cfg.mouse)):
        out = synthesize_dataset(domain, size.cases, cfg.seed, LAYOUT.raw(domain), sham_fraction=cfg.sham_fraction,
                                 matrix=size.matrix, n_slices=size.n_slices)
        print(f"synthesize: {size.cases} {domain} cases -> {LAYOUT.relative(out)}")
    if cfg.acceptance:  # an acceptance cohort: new mice from another seed, with their own case ids
        out = synthesize_dataset("mouse", cfg.acceptance.cases, cfg.seed + 1, LAYOUT.acceptance_raw,
                                 sham_fraction=cfg.sham_fraction, matrix=cfg.acceptance.matrix,
                                 n_slices=cfg.acceptance.n_slices, case_prefix="mouseacc")
        print(f"synthesize: {cfg.acceptance.cases} acceptance mice -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
