"""The skin's thickness calibrated on real mouse heads: the sweep declared in docs/synthetic.md ("The skin at the side
of the head").

For each k in 1, 2, 3, 4 the skin of both species is drawn ``k x 0.25 x scalp_mm`` thick (``Anatomy.skin_fraction``);
the world cohort's mouse shams (``benchmarks/world.py``: seed 4242, 48 cases, at its head rows of about 0.15 mm) are
measured with ``world.lateral_head``, as ``benchmarks/real_scalp.py`` measures the 24 real heads (lateral skin peak /
temporal muscle: median 0.54). The k nearest the real median is the one the generator keeps (``domains.DOMAINS``).
Writes ``benchmarks/results_skin_calibration.md``.

    PYTHONPATH=$PWD python benchmarks/calibrate_skin.py      # a few minutes on 2 cores
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from world import cohort_parser, sham_head_figures  # noqa: E402

from lesionseg.data.io import write_text  # noqa: E402
from lesionseg.data.synthetic import domains  # noqa: E402

REAL_MEDIAN = 0.54  # benchmarks/real_scalp.py on 24 in vivo mouse heads: lateral skin peak / temporal muscle
MULTIPLES = (1, 2, 3, 4)  # of the skin drawn before the calibration
BEFORE = 0.25  # skin_fraction before the calibration (0.25 x scalp_mm)
RESULTS = ROOT / "benchmarks" / "results_skin_calibration.md"


def lateral_skin_over_muscle(skin_fraction: float, n_cases: int, seed: int) -> list[float]:
    """Lateral skin peak / temporal muscle of the world cohort's mouse shams with the skin at ``skin_fraction``."""
    default = domains.DOMAINS["mouse"]
    domains.DOMAINS["mouse"] = replace(default, anatomy=replace(default.anatomy, skin_fraction=skin_fraction))
    try:
        return [row["lateral_skin_muscle"] for row in sham_head_figures("mouse", n_cases, seed)]
    finally:
        domains.DOMAINS["mouse"] = default


def main(argv: list[str] | None = None) -> None:
    args = cohort_parser(__doc__, RESULTS).parse_args(argv)
    lines = ["# The skin's thickness, calibrated on the skin at the side of real mouse heads", "",
             f"Written by `benchmarks/calibrate_skin.py` (world cohort seed {args.seed}, {args.n_cases} cases, its "
             f"mouse shams). Real median lateral skin peak / temporal muscle: {REAL_MEDIAN} (24 in vivo mouse heads).",
             "", "| k | skin_fraction | skin, mouse (mm) | lateral skin / muscle: median [range] (n) |", "|---|---|---|---|"]
    best = None
    for k in MULTIPLES:
        values = lateral_skin_over_muscle(k * BEFORE, args.n_cases, args.seed)
        median = float(np.median(values))
        print(f"k {k}: lateral skin / muscle {median:.3f}", flush=True)
        lines.append(f"| {k} | {k * BEFORE:g} | {k * BEFORE * domains.DOMAINS['mouse'].anatomy.scalp_mm:.3f} | "
                     f"{median:.3f} [{min(values):.3f}-{max(values):.3f}] ({len(values)}) |")
        if best is None or abs(median - REAL_MEDIAN) < abs(best[1] - REAL_MEDIAN):
            best = (k, median)
    lines.append(f"| **nearest the real {REAL_MEDIAN}: k = {best[0]}** | {best[0] * BEFORE:g} | | {best[1]:.3f} |")
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
