"""What can be checked of the synthetic mouse without a real-data mouse model: contrast and lesion volumes.

There is no published mouse lesion model to judge the mouse generator the way ``benchmarks/realism.py`` judges the
rat, so this measures, on generated scans at the demo's size (128x128x32), what the literature reports: lesion /
normal-brain intensity (medians, coil profile included; 1.2-1.5 in the seed study's figures), CSF and white matter
against grey matter (from the tissue table), and MCAo lesion volumes (30-60 min transient MCAo at 24 h: about
20-100 mm3). Writes ``benchmarks/results_mouse_check.md``.

    python benchmarks/mouse_check.py [--n-cases 24] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lesionseg.data.io import write_text  # noqa: E402
from lesionseg.data.synthetic import DOMAINS, domain_spec, synthesize_case  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results_mouse_check.md"
DEMO_SIZE = (128, 32)  # in-plane matrix, slices: the demo's mouse scans


def measure(n_cases: int, seed: int) -> list[dict]:
    """Per lesion case: volume (mm3) and lesion median / normal-brain median of the stored image."""
    spec = domain_spec("mouse", *DEMO_SIZE)
    key = zlib.crc32(b"mouse")
    rows = []
    for i in range(n_cases):
        case = synthesize_case(spec, f"mouse_{i:03d}", np.random.default_rng([seed, key, i]), lesion=True)
        lesion = case.label.astype(bool)
        normal = case.brain_mask & ~lesion
        ratio = float(np.median(case.image[lesion]) / np.median(case.image[normal]))
        rows.append({"case_id": case.case_id, "volume_mm3": case.lesion_volume_mm3, "lesion_over_brain": ratio})
    return rows


def write_results(rows: list[dict], seed: int, out: Path = RESULTS) -> str:
    volumes = np.array([r["volume_mm3"] for r in rows])
    ratios = np.array([r["lesion_over_brain"] for r in rows])
    contrast = DOMAINS["mouse"].contrast
    text = "\n".join([
        "# The synthetic mouse against published figures (written by `benchmarks/mouse_check.py`)",
        "",
        f"{len(rows)} lesion mice at {DEMO_SIZE[0]}x{DEMO_SIZE[0]}x{DEMO_SIZE[1]}, seed {seed}.",
        "",
        "| quantity | generated | published |",
        "|---|---|---|",
        f"| lesion / normal brain (medians, coil included) | {ratios.min():.2f}-{ratios.max():.2f} "
        f"(median {np.median(ratios):.2f}) | about 1.2-1.5 (the seed study's T2w figures) |",
        f"| lesion core / grey matter (tissue table) | {contrast.lesion[0]:.2f}-{contrast.lesion[1]:.2f} | "
        "T2 +40-120 % at 24 h (Knight et al. 1991) at TE 33 ms |",
        f"| CSF, white matter / grey matter | {contrast.csf:.2f}, {contrast.white_matter:.2f} | "
        "T2 at 7 T (Guilfoyle et al. 2003) |",
        f"| lesion volume, mm3 | {volumes.min():.0f}-{volumes.max():.0f} (median {np.median(volumes):.0f}) | "
        "about 20-100 (30-60 min transient MCAo, 24 h) |",
        "",
    ])
    write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_results(measure(args.n_cases, args.seed), args.seed))


if __name__ == "__main__":
    main()
