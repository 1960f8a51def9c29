"""DVC stage `synthesize`: synthetic rat (source) and mouse (target) scans as a Bruker scanner leaves them:
one ParaVision study per animal, with the lab's masks beside them (data/bruker/...)."""
from _stage import LAYOUT, config, run

from lesionseg.data.paravision import synthesize_studies


def main() -> None:
    cfg = config().synthesize
    for domain, size in (("rat", cfg.rat), ("mouse", cfg.mouse)):
        out = synthesize_studies(domain, size.cases, cfg.seed, LAYOUT.bruker(domain), sham_fraction=cfg.sham_fraction,
                                 matrix=size.matrix, n_slices=size.n_slices)
        print(f"synthesize: {size.cases} {domain} studies -> {LAYOUT.relative(out)}")
    if cfg.acceptance:  # an acceptance cohort: new mice from another seed, with their own case ids
        out = synthesize_studies("mouse", cfg.acceptance.cases, cfg.seed + 1, LAYOUT.bruker(LAYOUT.acceptance_raw.name),
                                 sham_fraction=cfg.sham_fraction, matrix=cfg.acceptance.matrix,
                                 n_slices=cfg.acceptance.n_slices, case_prefix="mouseacc")
        print(f"synthesize: {cfg.acceptance.cases} acceptance mice -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
