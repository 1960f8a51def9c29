"""The striatum's T2 calibrated on real brains: the sweep declared in docs/synthetic.md ("Cortex and striatum: a
world-table row and a change").

For each species, the striatum's grey matter takes the cortex's proton density and T1 and, in turn, each T2 from the
cortex's T2 - 3 ms to its T2 + 1 ms in 0.5 ms steps; the world cohort (``benchmarks/world.py``: seed 4242, 48 cases
at the demo's matrices) is generated with it and its volume-coil healthy brains are measured with
``world.healthy_cortex_striatum``, the ratio ``benchmarks/real_cortex.py`` reads on real brains (FVB/NCrl mice
median 0.991, SIGMA rat 1.004). The T2 nearest the real median is the one the generator keeps
(``protocol.RELAXATION``). Writes ``benchmarks/results_striatum_calibration.md``.

The generator reads its relaxation table when it draws a cohort (``protocol.relaxation_at``) and a domain's default
contrast when the module loads, so the sweep sets both for each step and puts them back at the end.

    PYTHONPATH=$PWD python benchmarks/calibrate_striatum.py      # about 3 minutes on 2 cores
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from world import SIZES, cohort_parser, healthy_cortex_striatum  # noqa: E402

from lesionseg.data.io import write_text  # noqa: E402
from lesionseg.data.synthetic import domains, generate_cases, protocol  # noqa: E402

REAL_MEDIAN = {"mouse": 0.991, "rat": 1.004}  # benchmarks/real_cortex.py on 8 FVB/NCrl mice; the SIGMA rat template
RESULTS = ROOT / "benchmarks" / "results_striatum_calibration.md"


def volume_coil_ratios(species: str, striatum_t2_ms: float, n_cases: int, seed: int) -> list[float]:
    """Healthy neocortex / striatum of the world cohort's volume-coil brains with the striatum at ``striatum_t2_ms``."""
    table, default = protocol.RELAXATION[species], domains.DOMAINS[species]
    kept = table["striatum"]
    grey = table["grey"]
    table["striatum"] = protocol.Relaxation(grey.pd, grey.t1_s, striatum_t2_ms)
    domains.DOMAINS[species] = replace(default, contrast=protocol.t2w_contrast(table, *protocol.PROTOCOL[species]))
    try:
        matrix, n_slices = SIZES[species]
        return [healthy_cortex_striatum(case) for case, _ in generate_cases(species, n_cases, seed, matrix=matrix,
                n_slices=n_slices) if case.info["coil_radius_mm"] >= 30]
    finally:
        table["striatum"], domains.DOMAINS[species] = kept, default


def main(argv: list[str] | None = None) -> None:
    args = cohort_parser(__doc__, RESULTS).parse_args(argv)
    lines = ["# The striatum's T2, calibrated on real neocortex / striatum signal", "",
             f"Written by `benchmarks/calibrate_striatum.py` (world cohort seed {args.seed}, {args.n_cases} cases per "
             "species, volume-coil brains; PD and T1 as the cortex's). Real medians: "
             f"mouse {REAL_MEDIAN['mouse']} (8 FVB/NCrl), rat {REAL_MEDIAN['rat']} (SIGMA template).", "",
             "| species | striatum T2 (ms) | cortex T2 (ms) | healthy neocortex / striatum: median [range] (n) |",
             "|---|---|---|---|"]
    for species in ("mouse", "rat"):
        grey_t2 = protocol.RELAXATION[species]["grey"].t2_ms
        best = None
        for t2 in np.arange(grey_t2 - 3, grey_t2 + 1.01, 0.5):
            ratios = volume_coil_ratios(species, float(t2), args.n_cases, args.seed)
            median = float(np.median(ratios))
            print(f"{species} striatum T2 {t2:.1f} ms: {median:.4f}", flush=True)
            lines.append(f"| {species} | {t2:.1f} | {grey_t2:g} | {median:.4f} [{min(ratios):.3f}-{max(ratios):.3f}] "
                         f"({len(ratios)}) |")
            if best is None or abs(median - REAL_MEDIAN[species]) < abs(best[1] - REAL_MEDIAN[species]):
                best = (float(t2), median)
        lines.append(f"| {species} | **nearest the real {REAL_MEDIAN[species]}: {best[0]:.1f}** | | {best[1]:.4f} |")
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
