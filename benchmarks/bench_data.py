"""Data: volumes/s from the prepared cache vs decoding the raw NIfTI each time; time to make the demo data.

``python benchmarks/bench_data.py [--quick]``. Everything is generated in a temp dir with the demo's settings
(``synthesize_dataset`` + ``prepare_dataset``, params.yaml's prepare section).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import _common as c

DEMO_SEED = 2026


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def make_demo_data(root: Path, quick: bool) -> tuple[list[list[object]], float, float, list[str]]:
    """Synthesize + prepare the demo data (or a tenth of it with --quick); returns rows, total s, full-demo
    estimate s and the cProfile lines of the slowest step (when over target)."""
    from lesionseg.data.preprocess import prepare_dataset
    from lesionseg.data.synthetic import synthesize_dataset

    demo = {"rat": (40, 128, 18), "mouse": (60, 128, 32)}
    scale = 10 if quick else 1
    rows, total, per_step = [], 0.0, {}
    for domain, (cases, matrix, slices) in demo.items():
        n = max(2, cases // scale)
        t_syn, _ = _timed(lambda: synthesize_dataset(domain, n, DEMO_SEED, root / "raw" / domain, sham_fraction=0.25,
                                                     matrix=matrix, n_slices=slices))
        t_prep, _ = _timed(lambda: prepare_dataset(root / "raw" / domain, root / "processed" / domain,
                                                   clip_percentiles=c.CLIP, **c.DEMO_PREPARE[domain]))
        total += t_syn + t_prep
        per_step[("synthesize", domain)] = (t_syn, n, cases)
        per_step[("prepare", domain)] = (t_prep, n, cases)
        rows.append([f"synthesize {domain}", f"{n} x {matrix}x{matrix}x{slices}", f"{t_syn:.1f}",
                     f"{t_syn / n * 1000:.0f}"])
        rows.append([f"prepare {domain}", f"{n} -> {'x'.join(map(str, c.DEMO_PREPARE[domain]['shape']))}",
                     f"{t_prep:.1f}", f"{t_prep / n * 1000:.0f}"])
    estimate = sum(t / n * full for t, n, full in per_step.values())
    return rows, total, estimate, per_step


def profile_lines(root: Path) -> list[str]:
    """cProfile of synthesizing and preparing 3 mouse cases: where the demo-data time goes."""
    from lesionseg.data.preprocess import prepare_dataset
    from lesionseg.data.synthetic import synthesize_dataset

    def job():
        synthesize_dataset("mouse", 3, DEMO_SEED, root / "prof_raw", matrix=128, n_slices=32)
        prepare_dataset(root / "prof_raw", root / "prof_prep", clip_percentiles=c.CLIP, **c.DEMO_PREPARE["mouse"])

    return c.profile_top(job, n=18, sort="tottime")


def loading_rows(root: Path, n_cases: int, passes: int) -> tuple[list[list[object]], dict[str, float]]:
    from lesionseg.data.io import read_volume
    from lesionseg.data.preprocess import load_prepared_case, prepare_volume

    raw, prepared = root / "raw" / "mouse", root / "processed" / "mouse"
    ids = sorted(p.stem for p in prepared.glob("*.npz"))[:n_cases]
    settings = dict(clip_percentiles=c.CLIP, **c.DEMO_PREPARE["mouse"])

    def cache_pass():
        for cid in ids:
            case = load_prepared_case(prepared, cid)
            _ = case.image.sum(), case.label.sum()

    def decode_pass():
        for cid in ids:
            read_volume(raw / "imagesTr" / f"{cid}_0000.nii.gz"), read_volume(raw / "labelsTr" / f"{cid}.nii.gz")

    def raw_pass():
        for cid in ids:
            image = read_volume(raw / "imagesTr" / f"{cid}_0000.nii.gz")
            label = read_volume(raw / "labelsTr" / f"{cid}.nii.gz")
            prepare_volume(image, label, **settings)

    results = {}
    # interleave passes so that load drift hits every variant; one untimed pass each first (page cache, imports)
    cache_pass(), decode_pass(), raw_pass()
    times = {"cache": [], "decode": [], "raw": []}
    for _ in range(passes):
        for name, fn in (("cache", cache_pass), ("decode", decode_pass), ("raw", raw_pass)):
            t, _ = _timed(fn)
            times[name].append(t)
    for name, ts in times.items():
        results[name] = len(ids) / c.med(ts)
    npz_kb = sum((prepared / f"{i}.npz").stat().st_size for i in ids) / len(ids) / 1024
    nii_kb = sum((raw / "imagesTr" / f"{i}_0000.nii.gz").stat().st_size + (raw / "labelsTr" / f"{i}.nii.gz").stat().st_size
                 for i in ids) / len(ids) / 1024
    rows = [
        ["`load_prepared_case` (.npz cache, 48x32x32)", f"**{results['cache']:.0f}**",
         f"{1000 / results['cache']:.2f}", f"{npz_kb:.0f}", "1.0x"],
        ["`read_volume` image + label only (.nii.gz, 128x128x32)", f"{results['decode']:.1f}",
         f"{1000 / results['decode']:.1f}", f"{nii_kb:.0f}", f"{results['cache'] / results['decode']:.0f}x slower"],
        ["`read_volume` + `prepare_volume` (what the cache saves)", f"**{results['raw']:.1f}**",
         f"{1000 / results['raw']:.1f}", f"{nii_kb:.0f}", f"{results['cache'] / results['raw']:.0f}x slower"],
    ]
    return rows, {"n": len(ids), "passes": passes, **results}


def run(quick: bool) -> tuple[str, list[dict]]:
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        demo_rows, total, estimate, per_step = make_demo_data(tmp, quick)
        n_load = 4 if quick else 20
        load_rows, info = loading_rows(tmp, n_load, passes=2 if quick else 3)
        met = estimate < 60
        prof = [] if (met and not quick) else profile_lines(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = "a tenth of the demo data (estimate for the full demo scaled per case)" if quick else "the full demo data"
    lines = [
        "## Data: prepared cache vs raw NIfTI, and making the demo data",
        "",
        "`python benchmarks/bench_data.py" + (" --quick`" if quick else "`") +
        f" (took {time.perf_counter() - started:.0f} s); one process, `torch` default threads.",
        "",
        f"### Loading {info['n']} synthetic demo mouse cases (image + label each)",
        "",
        f"Median of {info['passes']} interleaved passes over the same cases after one untimed pass (files in the "
        "page cache, as in training). Raw: 128x128x32 int16 `.nii.gz` (0.2 x 0.2 x 0.5 mm) resampled to "
        "0.3 x 0.5 x 0.3 mm and cropped to 48x32x32, the demo's prepare settings.",
        "",
        *c.table(["source", "cases / s", "ms / case", "KiB / case on disk", "vs cache"], load_rows),
        "",
        f"### Synthesize + prepare {what}",
        "",
        "Demo: 40 rat (128x128, 18 slices) + 60 mouse (128x128, 32 slices), params.yaml prepare settings; "
        "one run each (the `synthesize` and `prepare@source/target` stages' library calls, without DVC).",
        "",
        *c.table(["step", "cases", "seconds", "ms / case"], demo_rows),
        "",
        f"- Total: **{total:.1f} s**" + (f" for a tenth; full demo estimated at **{estimate:.0f} s**" if quick else "")
        + f" (target < 60 s: {'met' if met else '**missed**'}).",
        "",
    ]
    if prof:
        slow = max(per_step.items(), key=lambda kv: kv[1][0] / kv[1][1] * kv[1][2])
        lines += [
            f"Slowest step: `{slow[0][0]} {slow[0][1]}`. cProfile (sorted by own time) of synthesizing + preparing "
            "3 demo mouse cases:",
            "",
            *prof,
            "",
        ]
    summary = [
        c.figure("data loading: prepared .npz cache vs raw .nii.gz + prepare_volume (demo mouse)",
                 f"{info['cache']:.0f} vs {info['raw']:.1f} cases/s ({info['cache'] / info['raw']:.0f}x)"),
        c.figure("synthesize + prepare the demo data (40 rat + 60 mouse)",
                 f"{estimate:.0f} s" + (" (estimated from a tenth)" if quick else ""), "< 60 s", met,
                 finding="cProfile of synthesizing + preparing 3 mouse cases in the Data section."),
    ]
    return "\n".join(lines), summary


def main() -> None:
    args = c.cli(__doc__.splitlines()[0], "data")
    text, summary = run(args.quick)
    c.emit(text, args.out, summary)


if __name__ == "__main__":
    main()
