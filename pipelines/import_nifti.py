"""DVC stage `import-nifti@NAME`: a dataset already in the nnU-Net v2 raw layout, validated and copied to
data/raw/NAME (so DVC versions exactly what the study used)."""
import argparse

from _stage import LAYOUT, config, run

from lesionseg.data.dataset import import_nifti


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a name under datasets.nifti in params.yaml")
    args = parser.parse_args()
    spec = config().datasets.nifti_dataset(args.dataset)
    out = import_nifti(LAYOUT.resolve(spec.path), LAYOUT.raw(args.dataset))
    print(f"import: {spec.path} -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
