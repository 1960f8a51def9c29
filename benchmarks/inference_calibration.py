"""Does the report's comparison hold its false-positive rate, and what can it detect? (issue 20, "Must show" 1)

Simulates whole studies, two arms (``full`` vs ``scratch``) at every sample size of a design, and runs
:func:`lesionseg.evaluation.statistics.compare_arms` on each, as the report does. The truth is known:

    dice[arm, n, r, case] = clip(0.65 + effect[arm] + case_c + run[arm, n, r] + residual, 0, 1)

``case_c`` ~ N(0, 0.1) is shared by every model (some lesions are harder), ``run`` ~ N(0, 0.02) is one trained
model's luck (seed and subset draw; independent across arms, the worst case for pairing by repeat), and the
residual ~ N(0, 0.05) is per model and case. Designs: the demo's (sizes 4, 8, 16; R = 2; 9 lesion test cases)
and the full study's (8 ... 40; R = 5; 14). Also measured: the old analysis (Wilcoxon over cases of the Dice
averaged over repeats), the full design with the between-model variance pooled over sizes, and pooling when
the run SD is not the same at every size (0.04 at the smallest n down to 0.01 at the largest).

    python benchmarks/inference_calibration.py --sims 1000 --out benchmarks/results_inference.md
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.evaluation.statistics import compare_arms  # noqa: E402

ARMS = ("scratch", "full")
COMPARISON = [("full", "scratch")]
ALPHA = 0.05


@dataclass(frozen=True)
class Design:
    """What a study trains and tests, and the size of each source of variation (Dice units)."""

    name: str
    sizes: tuple[int, ...]
    repeats: int
    cases: int
    run_sd: float | tuple[float, ...] = 0.02  # one value, or one per sample size
    case_sd: float = 0.1
    residual_sd: float = 0.05
    base: float = 0.65


DEMO = Design("demo", (4, 8, 16), 2, 9)
FULL = Design("full", (8, 16, 24, 32, 40), 5, 14)


def simulate_study(rng: np.random.Generator, design: Design, effect: float = 0.0) -> pd.DataFrame:
    """One study's long table (arm, sample_size, repeat, case_id, dice); ``full`` gains ``effect`` everywhere."""
    a, s, r, n = len(ARMS), len(design.sizes), design.repeats, design.cases
    run_sd = np.broadcast_to(np.asarray(design.run_sd, dtype=float), (s,))
    case = rng.normal(0.0, design.case_sd, n)
    run = rng.normal(0.0, 1.0, (a, s, r)) * run_sd[None, :, None]
    gain = np.array([0.0, effect])[:, None, None, None]
    dice = design.base + gain + run[..., None] + case + rng.normal(0.0, design.residual_sd, (a, s, r, n))
    ai, si, ri, ci = np.meshgrid(np.arange(a), np.arange(s), np.arange(r), np.arange(n), indexing="ij")
    return pd.DataFrame({"arm": np.asarray(ARMS)[ai.ravel()], "sample_size": np.asarray(design.sizes)[si.ravel()],
                         "repeat": ri.ravel(), "case_id": ci.ravel(), "dice": np.clip(dice, 0.0, 1.0).ravel()})


def run_sims(design: Design, n_sims: int, effect: float = 0.0, seed: int = 0, **kwargs) -> pd.DataFrame:
    """compare_arms on ``n_sims`` simulated studies: one row per study x sample size, with a ``sim`` column."""
    rng = np.random.default_rng(seed)
    frames = [compare_arms(simulate_study(rng, design, effect), COMPARISON, alpha=ALPHA, detectable=False, **kwargs)
              .assign(sim=i) for i in range(n_sims)]
    return pd.concat(frames, ignore_index=True)


def rates(results: pd.DataFrame) -> dict[str, float]:
    """Per-test rejection rate at ALPHA (unadjusted p), family-wise rate (any Holm p < ALPHA in a study), and the
    share of comparisons ending ``better``, ``worse``, ``equivalent``."""
    per_study = results.groupby("sim")["p_holm"].min() < ALPHA
    return {"tests": len(results), "studies": int(per_study.size), "per_test": float((results["p_value"] < ALPHA).mean()),
            "familywise": float(per_study.mean()), "better": float((results["verdict"] == "better").mean()),
            "worse": float((results["verdict"] == "worse").mean()),
            "equivalent": float((results["verdict"] == "equivalent").mean())}


def old_analysis_rate(design: Design, n_sims: int, seed: int = 0) -> float:
    """Per-test rejection rate of the analysis issue 20 replaces: per-case Dice averaged over repeats, then a
    two-sided Wilcoxon over cases at each sample size (no correction, so the per-test rate)."""
    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(n_sims):
        study = simulate_study(rng, design)
        means = study.groupby(["sample_size", "arm", "case_id"])["dice"].mean().unstack("arm")
        hits += [wilcoxon(m["full"] - m["scratch"]).pvalue < ALPHA for _, m in means.groupby(level=0)]
    return float(np.mean(hits))


def binomial_se(p: float, n: int) -> float:
    """Standard error of a rate estimated from ``n`` independent trials."""
    return math.sqrt(p * (1 - p) / n)


def _line(label: str, r: dict, key: str) -> str:
    return f"| {label} | {r[key]:.3f} | {binomial_se(max(r[key], ALPHA), r['studies']):.3f} | {r['studies']} |"


def report(n_sims: int, seed: int = 0) -> str:
    """The Markdown of benchmarks/results_inference.md."""
    started = time.time()
    lines = ["# Calibration of the report's comparison (`compare_arms`)", "",
             "Generated by `python benchmarks/inference_calibration.py`; the model is in its docstring: case SD 0.1, "
             "run (trained model) SD 0.02, residual SD 0.05, Dice clipped to [0, 1], one comparison (full vs scratch) "
             f"at every sample size, alpha {ALPHA}. SE: binomial standard error over the simulated studies "
             "(computed at max(rate, 0.05); per-test rates pool the sizes of a study, which share the pooled "
             "variance, so the study count is the honest n).", "",
             "## No true difference (false positives)", "",
             "| design | rate | SE | studies |", "|---|---|---|---|"]
    null = {}
    for design in (DEMO, FULL):
        null[design.name] = rates(run_sims(design, n_sims, seed=seed))
        r = null[design.name]
        lines += [_line(f"{design.name}: per test (unadjusted p < 0.05)", r, "per_test"),
                  _line(f"{design.name}: family-wise (any Holm p < 0.05 in a study)", r, "familywise"),
                  _line(f"{design.name}: verdict `better` or `worse`", {**r, "bw": r["better"] + r["worse"]}, "bw")]
    old = {d.name: old_analysis_rate(d, n_sims, seed) for d in (DEMO, FULL)}
    lines += [f"| old analysis, {name}: per test (Wilcoxon over repeat-averaged cases) | {v:.3f} | "
              f"{binomial_se(v, n_sims):.3f} | {n_sims} |" for name, v in old.items()]
    lines += ["", "## A true +0.05 Dice gain (power)", "",
              "| design | verdict `better` (Holm) per comparison | mean mdd_80 | studies |", "|---|---|---|---|"]
    for design in (DEMO, FULL):
        res = run_sims(design, n_sims, effect=0.05, seed=seed + 1)
        mdd = compare_arms(simulate_study(np.random.default_rng(seed), design), COMPARISON)["mdd_80"].mean()
        lines.append(f"| {design.name} (R = {design.repeats}, {design.cases} cases) | {rates(res)['better']:.3f} | "
                     f"{mdd:.3f} (one study) | {n_sims} |")
    lines += ["", "## Pooling the between-model variance over sample sizes at the full design", "",
              "`min_repeats` = 5 (the default) uses each size's own R = 5 repeats (df 4); `min_repeats` = 6 pools "
              "the five sizes (df 20). Pooling assumes one run SD at every size; the last rows break that "
              "(run SD 0.04, 0.03, 0.02, 0.015, 0.01 from n = 8 to 40; the false-positive rate is the smallest "
              "size's, where pooling underestimates the variance).", "",
              "| setting | per-test false-positive rate | power for +0.05 (`better`) | studies |", "|---|---|---|---|"]
    hetero = Design("full-hetero", FULL.sizes, FULL.repeats, FULL.cases, run_sd=(0.04, 0.03, 0.02, 0.015, 0.01))
    for label, design, kwargs in (("own variance (min_repeats 5)", FULL, {}),
                                  ("pooled (min_repeats 6)", FULL, {"min_repeats": 6}),
                                  ("own variance, unequal run SD", hetero, {}),
                                  ("pooled, unequal run SD", hetero, {"min_repeats": 6})):
        fp = run_sims(design, n_sims, seed=seed + 2, **kwargs)
        if design is hetero:
            fp = fp[fp["sample_size"] == design.sizes[0]]
        power = rates(run_sims(design, n_sims, effect=0.05, seed=seed + 3, **kwargs))["better"]
        lines.append(f"| {label} | {rates(fp)['per_test']:.3f} | {power:.3f} | {n_sims} |")
    lines += ["", f"{n_sims} simulated studies per row; {time.time() - started:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_inference.md")
    args = parser.parse_args()
    text = report(args.sims, args.seed)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
