"""Run every benchmark and write ``benchmarks/results.md``.

``python benchmarks/run_all.py [--quick] [--only training,data] [--wait-idle MINUTES]``

Each benchmark module runs in its own process (its thread settings and peak memory stay its own) and writes a
markdown section plus its key figures (``benchmarks/out/*.md`` / ``*.json``, git-ignored); this script joins
them under the machine's description and a summary of the figures with targets. ``--quick`` runs tiny sizes
and few repeats (a smoke test; its figures are not the results). ``--wait-idle`` first waits (polling every
60 s) until no other ``dvc repro`` runs on the machine, at most that many minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common as c

RESULTS = c.HERE / "results.md"
# name -> (script, extra arguments for a full run, for --quick)
BENCHMARKS = {
    "metrics": ("bench_metrics.py", ["--repeats", "5"], ["--repeats", "2"]),
    "training": ("bench_training.py", [], ["--quick"]),
    "data": ("bench_data.py", [], ["--quick"]),
    "dvc": ("bench_dvc.py", [], ["--quick"]),
    "inference": ("bench_inference.py", [], ["--quick"]),
}


def wait_idle(minutes: float) -> str:
    """Poll until no other `dvc repro` runs; returns what happened, for the report."""
    deadline = time.monotonic() + minutes * 60
    waited = 0
    while c.dvc_repro_running():
        if time.monotonic() >= deadline:
            return f"another `dvc repro` was still running after waiting {waited} min: measured on a busy machine"
        time.sleep(60)
        waited += 1
    return f"waited {waited} min for another `dvc repro` to finish" if waited else ""


class LoadMonitor:
    """Samples, every few seconds while a benchmark runs, whether another `dvc repro` runs and the load average."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval, self.samples, self.current = interval, [], ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.current:
                self.samples.append((self.current, c.dvc_repro_running(), os.getloadavg()[0]))

    def start(self) -> "LoadMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def describe(self, name: str) -> str:
        mine = [(busy, load) for n, busy, load in self.samples if n == name]
        if not mine:
            return "-"
        busy = sum(b for b, _ in mine) / len(mine)
        loads = [ld for _, ld in mine]
        return f"{busy * 100:.0f}% | {min(loads):.1f}-{max(loads):.1f}"


def run_one(name: str, quick: bool) -> tuple[str, list[dict], float]:
    script, full_args, quick_args = BENCHMARKS[name]
    out = c.OUT_DIR / f"{name}.md"
    args = list(quick_args if quick else full_args)
    if name == "metrics":  # bench_metrics.run() returns its report; its main() would rewrite results_metrics.md
        repeats = int(args[args.index("--repeats") + 1])
        cmd = [c.PYTHON, "-c", f"import sys; sys.path.insert(0, {str(c.HERE)!r}); import bench_metrics; "
                               f"print(bench_metrics.run({repeats}))"]
    else:
        cmd = [c.PYTHON, str(c.HERE / script), *args, "--out", str(out)]
    started = time.perf_counter()
    print(f"== {name}: {script} {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        text = f"## {name}: FAILED (exit {proc.returncode})\n\n```\n{tail}\n```\n"
        return text, [c.figure(f"{name} benchmark", "failed", "-", False)], elapsed
    if name == "metrics":  # nest bench_metrics' headings under ours
        body = proc.stdout
        (c.OUT_DIR / "metrics.md").parent.mkdir(parents=True, exist_ok=True)
        (c.OUT_DIR / "metrics.md").write_text(body)
        body = body.replace("# Metric benchmark: lesionseg vs MedPy vs MONAI",
                            "## Metrics: HD95 and Dice, lesionseg vs MedPy vs MONAI", 1)
        body = body.replace("; `python benchmarks/bench_metrics.py`.", ".", 1)
        body = body.replace("Median of", f"`bench_metrics.run({repeats})` (took {elapsed:.0f} s; "
                            "`python benchmarks/bench_metrics.py` alone writes `benchmarks/results_metrics.md`). "
                            "Median of", 1)
        summary = _metrics_summary(body)
        return body, summary, elapsed
    summary_file = out.with_suffix(".json")
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else []
    return out.read_text(), summary, elapsed


def _metrics_summary(body: str) -> list[dict]:
    """The hd95 speed-up rows of bench_metrics' table (MedPy / ours, MONAI / ours)."""
    rows = []
    for line in body.splitlines():
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].startswith(("mouse", "128")):
            rows.append(c.figure(f"hd95 {cells[0]}: ours vs MedPy / MONAI",
                                 f"{cells[2]} ms; {cells[5]} / {cells[6]} faster"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="MINUTES",
                        help="first wait until no other `dvc repro` runs (at most MINUTES)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    waited = wait_idle(args.wait_idle) if args.wait_idle else ""
    machine = c.machine_lines()
    started = time.perf_counter()
    sections, summary, timings = [], [], []
    monitor = LoadMonitor().start()
    for name in names:
        monitor.current = name
        text, figs, elapsed = run_one(name, args.quick)
        sections.append(text.rstrip() + "\n")
        summary += figs
        timings.append(f"{name} {elapsed:.0f} s")
        print(f"   {name} done in {elapsed:.0f} s", file=sys.stderr, flush=True)
    monitor.stop()
    total = time.perf_counter() - started
    busy_rows = [[n, monitor.describe(n)] for n in names]
    any_busy = any(b for _, b, _ in monitor.samples)
    rows = [[f["figure"], f["value"], f["target"], f["status"]] for f in summary]
    header = [
        "# lesionseg benchmarks",
        "",
        "Written by `python benchmarks/run_all.py" + (" --quick`" if args.quick else "`") +
        f" in {total / 60:.1f} min ({', '.join(timings)}). Each benchmark is its own module in `benchmarks/`, "
        "runnable alone. Figures are medians of several runs; ratios are measured side by side in one process. "
        "This is a shared 2-core machine: absolute times move with load, the ratios much less.",
        "",
        *(["**QUICK RUN (smoke test): tiny sizes and few repeats; these are not the results.**", ""]
          if args.quick else []),
        "## Machine",
        "",
        *machine,
        *([f"- {waited}"] if waited else []),
        "",
        "Load while each benchmark ran (sampled every 5 s; the machine has 2 cores, so a 1-minute load above about "
        "2 means the benchmark shared them):",
        "",
        "| benchmark | samples with another `dvc repro` running | 1-min load average (min-max) |",
        "|---|---|---|",
        *[f"| {n} | {d} |" for n, d in busy_rows],
        "",
        *(["**Another `dvc repro` ran during part of the measurement: absolute times from those benchmarks are "
           "inflated and noisier; the side-by-side ratios are the figures to trust.**", ""] if any_busy else []),
        "## Summary",
        "",
        *c.table(["figure", "value", "target", "status"], rows),
        "",
    ]
    RESULTS_TEXT = "\n".join(header) + "\n" + "\n".join(sections)
    args.out.write_text(RESULTS_TEXT)
    print(f"written to {args.out} ({total:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
