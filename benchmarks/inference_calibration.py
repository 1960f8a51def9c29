"""Do the report's verdicts hold their false-positive rate when trained models differ more at small n and a run
crashes, and what can they detect? (issue 27, "What to build" 2)

Simulates whole studies, two arms (``full`` vs ``scratch``) at every sample size of a design, with a known truth:

    dice[arm, n, r, c] = clip(0.65 + effect[arm] + case_c + case_arm[arm, c] + run[arm, n, r] + residual, 0, 1)

``case_c`` ~ N(0, 0.1) is shared by every model (some lesions are harder); ``case_arm`` ~ N(0, 0.03) is how
differently an arm treats a case (the same in every repeat and size: not a new case per repeat); ``run`` ~
N(0, sd(n)) is one trained model's luck (seed and subset draw), independent across arms (the worst case for
pairing by repeat); the residual ~ N(0, 0.05) is per model and case. Run SD profiles: equal at every n (0.03),
and shrinking with n through (4, 0.10), (8, 0.03), (16, 0.01) or (4, 0.06), (8, 0.03), (16, 0.015), log-log
linear in between and extrapolated with the last slope beyond 16. "One crashed run": the ``full`` model of
repeat 0 at the smallest size is missing.

Designs: the new demo (sizes 4, 8, 16; R = 3; 30 lesion test scans), the old demo (R = 2; 9) and the full study
(8 ... 40; R = 5; 14). The analysis is the report's own: :func:`lesionseg.evaluation.statistics.cell_tests`,
``holm``, ``adjusted_ci`` and ``verdicts`` on all simulated studies at once, with the pairing and dropping rules
of :func:`~lesionseg.evaluation.statistics.compare_arms` (tests/test_inference_calibration.py checks both give
the same rows). ``--legacy FILE`` runs instead the ``compare_arms`` of another version of statistics.py (e.g.
``git show <commit>:lesionseg/evaluation/statistics.py > old.py``) study by study through pandas, as the report
called it: that is how the "before" table was made.

    nice -n 5 python benchmarks/inference_calibration.py --sims 2000 --out benchmarks/results_inference.md
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.evaluation import statistics as T  # noqa: E402

ARMS = ("scratch", "full")
COMPARISON = [("full", "scratch")]
ALPHA = 0.05
MARGIN = 0.03
PROFILES = {
    "equal 0.03": ((4, 0.03), (8, 0.03), (16, 0.03)),
    "shrinking 0.10/0.03/0.01": ((4, 0.10), (8, 0.03), (16, 0.01)),
    "shrinking 0.06/0.03/0.015": ((4, 0.06), (8, 0.03), (16, 0.015)),
}


def run_sd(profile: str, sizes: tuple[int, ...]) -> np.ndarray:
    """The profile's run SD at each size: log-log linear through its points, the end slopes extrapolated."""
    pts = np.log(np.asarray(PROFILES[profile], dtype=float))
    x = np.log(np.asarray(sizes, dtype=float))
    slope_lo = (pts[1, 1] - pts[0, 1]) / (pts[1, 0] - pts[0, 0])
    slope_hi = (pts[-1, 1] - pts[-2, 1]) / (pts[-1, 0] - pts[-2, 0])
    y = np.interp(x, pts[:, 0], pts[:, 1])
    y = np.where(x < pts[0, 0], pts[0, 1] + slope_lo * (x - pts[0, 0]), y)
    y = np.where(x > pts[-1, 0], pts[-1, 1] + slope_hi * (x - pts[-1, 0]), y)
    return np.exp(y)


@dataclass(frozen=True)
class Design:
    """What a study trains and tests, and the size of each source of variation (Dice units)."""

    name: str
    sizes: tuple[int, ...]
    repeats: int
    cases: int
    primary_sizes: tuple[int, ...]
    profile: str = "equal 0.03"
    crashed: bool = False  # the `full` model of repeat 0 at the smallest size is missing
    case_sd: float = 0.1
    case_arm_sd: float = 0.03
    residual_sd: float = 0.05
    base: float = 0.65


DEMO = Design("demo (R = 3, 30 lesion scans)", (4, 8, 16), 3, 30, (4, 8, 16))
OLD_DEMO = Design("old demo (R = 2, 9 lesion scans)", (4, 8, 16), 2, 9, (4, 8, 16))
FULL = Design("full (R = 5, 14 lesion scans)", (8, 16, 24, 32, 40), 5, 14, (8, 16))


def present(design: Design) -> np.ndarray:
    """Which models exist: (arm, size, repeat) booleans."""
    out = np.ones((len(ARMS), len(design.sizes), design.repeats), dtype=bool)
    if design.crashed:
        out[ARMS.index("full"), 0, 0] = False
    return out


def simulate(rng: np.random.Generator, design: Design, n_sims: int, effect: float = 0.0) -> np.ndarray:
    """Dice of ``n_sims`` studies: (sims, arm, size, repeat, case); ``full`` gains ``effect`` everywhere."""
    a, s, r, n = len(ARMS), len(design.sizes), design.repeats, design.cases
    sd = run_sd(design.profile, design.sizes)
    case = rng.normal(0.0, design.case_sd, (n_sims, 1, 1, 1, n))
    case_arm = rng.normal(0.0, design.case_arm_sd, (n_sims, a, 1, 1, n))
    run = rng.normal(0.0, 1.0, (n_sims, a, s, r, 1)) * sd[None, None, :, None, None]
    gain = np.array([0.0, effect])[None, :, None, None, None]
    noise = rng.normal(0.0, design.residual_sd, (n_sims, a, s, r, n))
    return np.clip(design.base + gain + case + case_arm + run + noise, 0.0, 1.0)


def analyse(dice: np.ndarray, design: Design) -> dict[str, np.ndarray]:
    """The report's analysis of every study at once: per row (primary, then each size) p, Holm p and verdict,
    each (sims, rows). Pairing and dropping follow compare_arms: a size uses the repeats both arms have there;
    the primary endpoint the repeats both arms have at every primary size."""
    have = present(design)
    t, c = ARMS.index("full"), ARMS.index("scratch")
    paired = have[t] & have[c]  # (size, repeat)
    cells = []
    prim = [design.sizes.index(n) for n in design.primary_sizes]
    keep = paired[prim].all(axis=0)
    diff = dice[:, t] - dice[:, c]  # (sims, size, repeat, case)
    cells.append(_cell(diff[:, prim][:, :, keep].mean(axis=1)))
    for s in range(len(design.sizes)):
        cells.append(_cell(diff[:, s][:, paired[s]]))
    est, se, df, p = (np.stack([x[k] for x in cells], axis=1) for k in ("estimate", "se", "df", "p_value"))
    primary = np.arange(est.shape[1]) == 0
    fam = T.family_verdicts(est, se, df, p, primary, ALPHA, MARGIN)
    return {"p_value": p, "p_holm": fam["p_holm"], "verdict": fam["verdict"]}


def _cell(diff: np.ndarray) -> dict[str, np.ndarray]:
    """cell_tests of (sims, R, n) differences; NaN (a skipped row) with fewer than 2 repeats."""
    if diff.shape[1] < 2:
        return {k: np.full(diff.shape[0], math.nan) for k in ("estimate", "se", "df", "p_value")}
    res = T.cell_tests(diff)
    return {"estimate": res.estimate, "se": res.se, "df": res.df, "p_value": res.p_value}


def long_table(dice: np.ndarray, design: Design) -> pd.DataFrame:
    """One study as the report's long table (arm, sample_size, repeat, case_id, dice), crashed models absent."""
    a, s, r, n = dice.shape
    ai, si, ri, ci = np.meshgrid(np.arange(a), np.arange(s), np.arange(r), np.arange(n), indexing="ij")
    keep = present(design)[ai, si, ri].ravel()
    return pd.DataFrame({"arm": np.asarray(ARMS)[ai.ravel()][keep],
                         "sample_size": np.asarray(design.sizes)[si.ravel()][keep],
                         "repeat": ri.ravel()[keep], "case_id": ci.ravel()[keep], "dice": dice.ravel()[keep]})


def analyse_legacy(compare_arms: Callable, dice: np.ndarray, design: Design) -> dict[str, np.ndarray]:
    """Another version's ``compare_arms``, one study at a time, per-size rows only (it had no primary endpoint);
    a NaN column first keeps the layout of :func:`analyse`."""
    out = {"p_value": [], "p_holm": [], "verdict": []}
    for study in dice:
        res = compare_arms(long_table(study, design), COMPARISON, alpha=ALPHA, margin=MARGIN, detectable=False)
        for key in out:
            out[key].append([math.nan if key != "verdict" else "none", *res[key]])
    return {k: np.asarray(v) if k == "verdict" else np.asarray(v, dtype=float) for k, v in out.items()}


def rates(res: dict[str, np.ndarray]) -> dict[str, np.ndarray | float]:
    """Per row (primary, then each size): unadjusted p < ALPHA, verdict better|worse, better; family-wise: any
    better|worse verdict in a study."""
    decided = np.isin(res["verdict"], ("better", "worse"))
    absent = np.isnan(res["p_value"]).all(axis=0)  # a row the analysis does not have (legacy: no primary)

    def rate(hit: np.ndarray) -> np.ndarray:
        return np.where(absent, math.nan, hit.mean(axis=0))

    return {"per_test": rate(res["p_value"] < ALPHA), "decided": rate(decided),
            "better": rate(res["verdict"] == "better"), "familywise": float(decided.any(axis=1).mean()),
            "studies": res["verdict"].shape[0]}


def binomial_se(p: float, n: int) -> float:
    """Standard error of a rate estimated from ``n`` independent studies."""
    return math.sqrt(p * (1 - p) / n)


def _rate(rate: float, n: int) -> str:
    return "n/a" if math.isnan(rate) else f"{rate:.3f} ({binomial_se(rate, n):.3f})"


def _designs() -> list[Design]:
    return [replace(base, profile=profile, crashed=crashed) for base in (DEMO, OLD_DEMO, FULL)
            for profile in PROFILES for crashed in (False, True)]


def _null_table(analysis: Callable, design_rows: list[Design], n_sims: int, seed: int) -> list[str]:
    lines = []
    for base in dict.fromkeys((d.name, d.sizes) for d in design_rows):
        rows = [d for d in design_rows if (d.name, d.sizes) == base]
        sizes = base[1]
        lines += [f"### {base[0]}, sizes {', '.join(map(str, sizes))}, primary = mean over n = "
                  f"{', '.join(map(str, rows[0].primary_sizes))}", "",
                  "| run SD | crashed run | " + " | ".join(f"n={n}: p<0.05 / verdict" for n in sizes)
                  + " | primary: p<0.05 / verdict | family-wise | studies |",
                  "|---|---|" + "---|" * (len(sizes) + 3)]
        for i, d in enumerate(rows):
            r = rates(analysis(simulate(np.random.default_rng(seed + i), d, n_sims), d))
            cells = [f"{_rate(r['per_test'][k], n_sims)} / {_rate(r['decided'][k], n_sims)}"
                     for k in range(1, len(sizes) + 1)]
            prim = f"{_rate(r['per_test'][0], n_sims)} / {_rate(r['decided'][0], n_sims)}"
            lines.append(f"| {d.profile} | {'yes' if d.crashed else 'no'} | " + " | ".join(cells)
                         + f" | {prim} | {_rate(r['familywise'], n_sims)} | {n_sims} |")
        lines.append("")
    return lines


def _power_table(analysis: Callable, design_rows: list[Design], n_sims: int, seed: int, mdd: bool) -> list[str]:
    lines = ["| design | run SD | crashed run | verdict `better` per size | primary `better` | primary mdd_80 "
             "(one study) | studies |", "|---|---|---|---|---|---|---|"]
    for i, d in enumerate(x for x in design_rows if not x.crashed):
        r = rates(analysis(simulate(np.random.default_rng(seed + 100 + i), d, n_sims, effect=0.05), d))
        per = ", ".join(f"n={n}: {r['better'][k + 1]:.3f}" for k, n in enumerate(d.sizes))
        lines.append(f"| {d.name} | {d.profile} | no | {per} | {r['better'][0]:.3f} | {_one_mdd(d, seed) if mdd else 'n/a'} | "
                     f"{n_sims} |")
    return lines


def _one_mdd(design: Design, seed: int) -> str:
    """mdd_80 of the primary endpoint in one simulated study, through compare_arms as the report computes it."""
    study = long_table(simulate(np.random.default_rng(seed), design, 1)[0], design)
    rows = T.compare_arms(study, COMPARISON, alpha=ALPHA, margin=MARGIN, primary_sizes=design.primary_sizes)
    value = rows.loc[rows["endpoint"] == T.PRIMARY, "mdd_80"]
    return f"{float(value.iloc[0]):.3f}" if len(value) else "n/a"


def report(n_sims: int, seed: int = 0, legacy: Callable | None = None, legacy_name: str = "",
           power_sims: int | None = None) -> str:
    """The Markdown of benchmarks/results_inference.md (``legacy``: another version's compare_arms)."""
    started = time.time()
    analysis = analyse if legacy is None else (lambda dice, d: analyse_legacy(legacy, dice, d))
    what = (f"`compare_arms` of {legacy_name}, study by study" if legacy else
            "the report's analysis (`compare_arms`'s array core: own-repeat cells, primary endpoint, one Holm family)")
    lines = ["# Calibration of the report's verdicts", "",
             f"Generated by `python benchmarks/inference_calibration.py`; analysis: {what}. Truth and designs: the "
             "script's docstring (case SD 0.1, case x arm SD 0.03, residual SD 0.05, Dice clipped to [0, 1], "
             f"one comparison, full vs scratch, at every size; alpha {ALPHA}, margin {MARGIN}). Each cell: rate "
             "(binomial SE over the studies). `p<0.05`: the row's unadjusted test; `verdict`: `better` or `worse` "
             "after Holm over the family; family-wise: any `better`/`worse` in a study. Every size of a study "
             "shares the same simulated cases, so per-size rates are not independent; the study is the unit.",
             "", "The same rows with the analysis this one replaced (run variance pooled over sizes below R = 5, "
             "Satterthwaite df unfloored, one Holm family, no primary endpoint): `results_inference_before.md`, "
             "made with `--legacy` from that version of statistics.py.", "",
             "## No true difference (false positives; the target is <= 0.05, the issue's bar 0.06)", ""]
    lines += _null_table(analysis, _designs(), n_sims, seed)
    lines += ["## A true +0.05 Dice gain at every size (power)", ""]
    lines += _power_table(analysis, _designs(), power_sims or n_sims, seed, legacy is None)
    lines += ["", f"{n_sims} simulated studies per false-positive row, {power_sims or n_sims} per power row; "
              f"{time.time() - started:.0f} s of wall time on a shared 2-core machine (timings are not comparable "
              "across runs).", ""]
    return "\n".join(lines)


def load_legacy(path: Path) -> Callable:
    """``compare_arms`` of another version of statistics.py."""
    spec = importlib.util.spec_from_file_location("legacy_statistics", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.compare_arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--power-sims", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--legacy", type=Path, default=None, help="another version's statistics.py (the 'before')")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_inference.md")
    args = parser.parse_args()
    legacy = load_legacy(args.legacy) if args.legacy else None
    text = report(args.sims, args.seed, legacy, str(args.legacy or ""), args.power_sims)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
