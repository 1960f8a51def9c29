"""Time lesionseg's hd95 and dice against MedPy and MONAI on lesion-like masks; write results_metrics.md.

Run by hand from the repository root: ``python benchmarks/bench_metrics.py [--repeats 5]``.
Every implementation gets the same inputs, already in the type its API takes (numpy bool arrays for
lesionseg and MedPy, ``[1, 1, *shape]`` float tensors for MONAI), so conversion is not timed.
The figure per cell is the median wall time of ``--repeats`` calls after one warm-up call.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from medpy.metric.binary import hd95 as medpy_hd95
from scipy import ndimage

from lesionseg.data.io import write_text
from lesionseg.metrics import dice, hd95

RESULTS = Path(__file__).with_name("results_metrics.md")


@dataclass(frozen=True)
class Case:
    name: str
    pred: np.ndarray
    gt: np.ndarray
    spacing: tuple[float, float, float]


def lesion(shape, center, radii, seed: int, roughness: float = 0.25) -> np.ndarray:
    """An ellipsoid (center and radii in voxels) with a smoothly irregular border, like an MCAo lesion."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii))
    sigma = tuple(max(r / 6, 1.0) for r in radii)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return dist + roughness * noise / noise.std() < 1.0


def make_cases() -> list[Case]:
    """Ground truth and a plausible prediction (shifted, reshaped border) per volume; one with a stray island."""
    mouse = (256, 256, 32)  # 256x256 coronal in-plane at 0.1 mm, 32 slices of 0.5 mm
    mouse_sp = (0.1, 0.1, 0.5)
    gt = lesion(mouse, (95, 80, 16), (38, 30, 11), seed=1)
    pred = lesion(mouse, (98, 82, 16), (36, 31, 11), seed=2)
    stray = pred.copy()
    stray[200:204, 210:214, 3:5] = True  # a false-positive speck far from the lesion
    cube = (128, 128, 128)
    cube_sp = (0.15, 0.15, 0.3)
    gt3 = lesion(cube, (60, 50, 64), (22, 18, 30), seed=3)
    pred3 = lesion(cube, (62, 52, 61), (21, 19, 31), seed=4)
    return [
        Case("mouse 256x256x32", pred, gt, mouse_sp),
        Case("mouse 256x256x32 + stray island", stray, gt, mouse_sp),
        Case("128^3", pred3, gt3, cube_sp),
    ]


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls (after one warm-up) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def machine_info() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (shared machine; load average at start {load})",
        f"- Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread), monai {importlib.metadata.version('monai')}, "
        f"medpy {importlib.metadata.version('medpy')}",
    ]


def run(repeats: int) -> str:
    torch.set_num_threads(1)  # all three hd95s are single-threaded scipy code underneath; keep torch alike
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
    header = [
        "| case | lesion voxels (gt / pred) | hd95 ours ms | MedPy ms | MONAI ms | MedPy / ours | MONAI / ours "
        "| dice ours ms | MONAI dice ms | MONAI / ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows, lines_values = [], []
    max_medpy = max_monai_hd = max_monai_dice = 0.0
    for case in make_cases():
        pred_t = torch.from_numpy(case.pred)[None, None].float()
        gt_t = torch.from_numpy(case.gt)[None, None].float()
        t_ours, v_ours = median_time(lambda: hd95(case.pred, case.gt, case.spacing), repeats)
        t_medpy, v_medpy = median_time(lambda: medpy_hd95(case.pred, case.gt, voxelspacing=case.spacing), repeats)
        t_monai, v_monai = median_time(
            lambda: compute_hausdorff_distance(
                pred_t, gt_t, include_background=True, percentile=95, spacing=list(case.spacing)
            ),
            repeats,
        )
        td_ours, d_ours = median_time(lambda: dice(case.pred, case.gt), repeats)
        td_monai, d_monai = median_time(lambda: compute_dice(pred_t, gt_t, include_background=True), repeats)
        v_monai, d_monai = float(v_monai), float(d_monai)
        max_medpy = max(max_medpy, abs(v_ours - float(v_medpy)))
        max_monai_hd = max(max_monai_hd, abs(v_ours - v_monai))
        max_monai_dice = max(max_monai_dice, abs(d_ours - d_monai))
        rows.append(
            f"| {case.name} | {int(case.gt.sum())} / {int(case.pred.sum())} | {t_ours * 1e3:.1f} | "
            f"{t_medpy * 1e3:.1f} | {t_monai * 1e3:.1f} | {t_medpy / t_ours:.1f}x | {t_monai / t_ours:.2f}x | "
            f"{td_ours * 1e3:.2f} | {td_monai * 1e3:.2f} | {td_monai / td_ours:.1f}x |"
        )
        lines_values.append(
            f"| {case.name} | {case.spacing} | {v_ours:.6f} | {float(v_medpy):.6f} | {v_monai:.6f} "
            f"| {d_ours:.6f} | {d_monai:.6f} |"
        )
    return "\n".join(
        [
            "# Metric benchmark: lesionseg vs MedPy vs MONAI",
            "",
            f"Median of {repeats} calls (after one warm-up) on the same inputs; `python benchmarks/bench_metrics.py`.",
            "Ratios above 1 mean lesionseg is faster. Absolute times swing with machine load; compare ratios.",
            "",
            *machine_info(),
            "",
            *header,
            *rows,
            "",
            "| case | spacing (mm) | hd95 ours | hd95 MedPy | hd95 MONAI | dice ours | dice MONAI |",
            "|---|---|---|---|---|---|---|",
            *lines_values,
            "",
            f"- max |ours - MedPy| hd95: {max_medpy:.3g} mm",
            f"- max |ours - MONAI| hd95: {max_monai_hd:.3g} mm (MONAI takes the larger of the two directed 95th "
            "percentiles, in float32; MedPy and lesionseg take the 95th percentile of the pooled distances)",
            f"- max |ours - MONAI| dice: {max_monai_dice:.3g} (MONAI computes in float32)",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (median reported)")
    args = parser.parse_args()
    report = run(args.repeats)
    print(report)
    write_text(RESULTS, report)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
