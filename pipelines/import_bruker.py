"""DVC stages `import-bruker@NAME` / `import-synthetic@NAME`: ParaVision studies -> data/raw/NAME (brkraw, subject
RAS, with the lab's masks). A synthetic dataset's studies and masks are data/bruker/NAME and its labels/."""
import argparse

from _stage import LAYOUT, config, run

from lesionseg.data.bruker import import_bruker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a name under datasets.bruker (or datasets.synthetic)")
    parser.add_argument("--synthetic", action="store_true", help="the dataset is synthetic: data/bruker/NAME")
    args = parser.parse_args()
    datasets, written = config().datasets, LAYOUT.relative(LAYOUT.bruker(args.dataset))
    spec = datasets.synthetic_as_bruker(args.dataset, written) if args.synthetic else datasets.bruker_dataset(args.dataset)
    out = import_bruker([LAYOUT.resolve(spec.studies)], LAYOUT.raw(args.dataset), protocol=spec.protocol,
                        scan_id=spec.scan_id, labels_dir=LAYOUT.resolve(spec.masks), subject_type=spec.subject_type,
                        subject_pose=spec.subject_pose)
    print(f"import: {args.dataset} -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
