"""DVC stage `import`: the ParaVision studies in data/bruker/ -> nnU-Net raw datasets in data/raw/ (brkraw, subject
RAS, with the lab's masks). Data already in NIfTI skip this stage: put them in data/raw/ and `dvc add` them."""
from _stage import LAYOUT, run

from lesionseg.data.bruker import import_bruker


def main() -> None:
    for raw in (LAYOUT.raw("rat"), LAYOUT.raw("mouse"), LAYOUT.acceptance_raw):
        studies = LAYOUT.bruker(raw.name)
        out = import_bruker([studies], raw, labels_dir=studies / "labels")
        print(f"import: {LAYOUT.relative(studies)} -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run(main)
