"""DVC stage `synthesize@NAME` (datasets of kind synthetic only): synthetic scans as a Bruker scanner leaves them,
one ParaVision study per animal, with the lab's masks beside them (data/bruker/NAME)."""
import argparse

from _stage import LAYOUT, config, run

from lesionseg.data.paravision import synthesize_studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a name under datasets.synthetic in params.yaml")
    args = parser.parse_args()
    spec = config().datasets.synthetic_dataset(args.dataset)
    prefix = {"case_prefix": spec.case_prefix} if spec.case_prefix else {}
    out = synthesize_studies(spec.domain, spec.cases, spec.seed, LAYOUT.bruker(args.dataset),
                             sham_fraction=spec.sham_fraction, matrix=spec.matrix, n_slices=spec.n_slices, **prefix)
    print(f"synthesize: {spec.cases} {spec.domain} studies -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
