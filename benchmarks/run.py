"""Measure the benchmark figures (benchmarks/figures.py) and write benchmarks/results.md.

python benchmarks/run.py [--quick] [--paper] [--demo] [--only SECTION ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import figures as f

RESULTS = Path(__file__).resolve().parent / "results.md"
DEMO_NOT_RUN = ("not run here: the demo takes 16 minutes or more, so it is measured on its own with "
                "`python benchmarks/run.py --demo --only demo --out benchmarks/results_demo.md`; see results_demo.md")


def plan(args: argparse.Namespace, tmp: Path):
    """(section, figure function, call) in order; call is a string where the figure is not run."""
    n = 1 if args.quick else 3
    sizes = ("demo", "paper") if args.paper else ("demo",)
    yield "metric speed", f.metric_speed, lambda: f.metric_speed(1 if args.quick else 5)
    for size in sizes:
        yield f"training step, {size} size", f.step_seconds, lambda size=size: f.step_seconds(size, n)
    yield "demo data", f.data_seconds, lambda: f.data_seconds(tmp, 10 if args.quick else 1)
    yield "tracking overhead", f.tracking_overhead, lambda: f.tracking_overhead(
        tmp / "processed" / "mouse", pairs=1 if args.quick else 4, epochs=1)
    yield "stage fixed cost", f.stage_fixed_cost, lambda: f.stage_fixed_cost(n)
    for size in sizes:
        yield f"inference, {size} size", f.inference_seconds, lambda size=size: f.inference_seconds(size, n)
    yield "no-op dvc repro (workspace)", f.noop_repro_seconds, lambda: f.noop_repro_seconds(f.ROOT, n)
    yield "demo", f.demo_seconds, ((lambda: f.demo_seconds(2, args.out.with_name("results_schedule.md")))
                                   if args.demo else DEMO_NOT_RUN)


def machine(args: argparse.Namespace) -> dict[str, str]:
    """The header fields of results.md."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=f.ROOT, capture_output=True, text=True).stdout.strip()

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor())
    return {
        "command": " ".join(["python benchmarks/run.py", *sys.argv[1:]]),
        "mode": "quick (smoke test)" if args.quick else "full",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git commit": git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain")
                                                             else ""),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "cpu vector extensions": simd(cpuinfo),
        "load average at start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "monai", "mlflow", "dvc", "numpy")},
        "torch threads per figure": str(f.THREADS),
    }


def simd(cpuinfo: list[str]) -> str:
    """The x86 vector extensions the CPU reports: oneDNN picks its convolution kernels by them, so training figures
    from hosts that differ here need not be comparable."""
    flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo if ln.startswith("flags")), []))
    found = [name for name in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if name in flags]
    return " ".join(found) or "unknown"


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def write(path: Path, header: dict[str, str], sections: dict[str, tuple[str, dict | str]]) -> None:
    """results.md: the header table, then one table per figure (or why it was not measured)."""
    lines = ["# lesionseg benchmarks", "", "| field | value |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in header.items()], ""]
    for name, (doc, values) in sections.items():
        lines += [f"## {name}", "", doc, ""]
        if isinstance(values, str):
            lines += [values, ""]
        else:
            lines += ["| figure | value |", "|---|---|", *[f"| {k} | {fmt(v)} |" for k, v in values.items()], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewest repeats, a tenth of the data (smoke test)")
    parser.add_argument("--paper", action="store_true", help="also training step and inference at paper size")
    parser.add_argument("--demo", action="store_true", help="time `dvc repro` in a fresh clone (the whole demo)")
    parser.add_argument("--only", nargs="+", default=None, help="measure only these sections (e.g. demo)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    header = machine(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench_"))
    os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)  # every figure's temp files, also its subprocesses'
    sections: dict[str, tuple[str, dict | str]] = {}
    started = time.perf_counter()
    try:
        for name, function, call in plan(args, tmp):
            if args.only and name not in args.only:
                continue
            doc = " ".join(function.__doc__.split()).replace("``", "`")
            print(f"== {name}", file=sys.stderr, flush=True)
            if isinstance(call, str):
                sections[name] = (doc, call)
                continue
            start = time.perf_counter()
            try:
                values = {**call(), "seconds to measure": time.perf_counter() - start}
            except f.NotRun as err:
                values = f"not run: {err}"
            except Exception as err:  # one broken figure must not lose the others
                values = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
            print(f"   {values}", file=sys.stderr, flush=True)
            sections[name] = (doc, values)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    header["load average at end (1, 5, 15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header["total seconds"] = f"{time.perf_counter() - started:.0f}"
    write(args.out, header, sections)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
