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
import subprocess
import sys
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


def wait_idle(deadline: float, name: str) -> str:
    """Poll every 60 s until no other `dvc repro` runs or ``deadline`` (monotonic) passes; returns a note."""
    waited = 0
    while c.dvc_repro_running():
        if time.monotonic() >= deadline:
            return f"{name}: another `dvc repro` was still running when the waiting time ran out; measured anyway"
        print(f"   waiting for another dvc repro to finish before {name} ...", file=sys.stderr, flush=True)
        time.sleep(60)
        waited += 1
    return f"{name}: waited {waited} min for another `dvc repro` to finish" if waited else ""


def load_note(load: dict) -> list[str]:
    """A row for the load table: measured when, share of samples with another dvc repro, load range."""
    if not load:
        return ["-", "not monitored", "-"]
    return [load.get("started", "-"), f"{load['busy_fraction'] * 100:.0f}% of {load['samples']}",
            f"{load['load_min']:.1f}-{load['load_max']:.1f}"]


def reuse_one(name: str) -> tuple[str, list[dict], dict] | None:
    """An earlier run's section from benchmarks/out/ (for --reuse), or None."""
    md, js = c.OUT_DIR / f"{name}.md", c.OUT_DIR / f"{name}.json"
    if not (md.exists() and js.exists()):
        return None
    data = json.loads(js.read_text())
    text = md.read_text()
    if name == "metrics":
        text = nest_metrics(text, "`bench_metrics.run()` (`python benchmarks/bench_metrics.py` alone writes "
                                  "`benchmarks/results_metrics.md`).")
    return text, data.get("figures", []), data.get("load", {})


def run_one(name: str, quick: bool) -> tuple[str, list[dict], float, dict]:
    script, full_args, quick_args = BENCHMARKS[name]
    out = c.OUT_DIR / f"{name}.md"
    args = list(quick_args if quick else full_args)
    if name == "metrics":  # bench_metrics.run() returns its report; its main() would rewrite results_metrics.md
        repeats = int(args[args.index("--repeats") + 1])
        cmd = [c.PYTHON, "-c", f"import sys, json; sys.path.insert(0, {str(c.HERE)!r}); import bench_metrics, "
                               "_common; m = _common.LoadMonitor(); print(bench_metrics.run("
                               f"{repeats})); print('LOAD ' + json.dumps(m.summary()))"]
    else:
        cmd = [c.PYTHON, str(c.HERE / script), *args, "--out", str(out)]
    started = time.perf_counter()
    print(f"== {name}: {script} {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        text = f"## {name}: FAILED (exit {proc.returncode})\n\n```\n{tail}\n```\n"
        return text, [c.figure(f"{name} benchmark", "failed", "-", False)], elapsed, {}
    if name == "metrics":  # nest bench_metrics' headings under ours
        body, _, load_line = proc.stdout.rpartition("LOAD ")
        load = json.loads(load_line)
        body = nest_metrics(body, f"`bench_metrics.run({repeats})` (took {elapsed:.0f} s; "
                                  "`python benchmarks/bench_metrics.py` alone writes `benchmarks/results_metrics.md`).")
        c.OUT_DIR.mkdir(parents=True, exist_ok=True)
        (c.OUT_DIR / "metrics.md").write_text(body)
        summary = _metrics_summary(body)
        (c.OUT_DIR / "metrics.json").write_text(json.dumps({"figures": summary, "load": load}, indent=1))
        return body, summary, elapsed, load
    data = json.loads(out.with_suffix(".json").read_text())
    return out.read_text(), data.get("figures", []), elapsed, data.get("load", {})


def nest_metrics(body: str, note: str) -> str:
    """bench_metrics' report as a section of results.md: its title one level down, how it was run."""
    if body.startswith("## "):
        return body
    body = body.replace("# Metric benchmark: lesionseg vs MedPy vs MONAI",
                        "## Metrics: HD95 and Dice, lesionseg vs MedPy vs MONAI", 1)
    body = body.replace("; `python benchmarks/bench_metrics.py`.", ".", 1)
    return body.replace("Median of", f"{note} Median of", 1)


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
                        help="before each benchmark wait until no other `dvc repro` runs (at most MINUTES in all)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --only: take the other sections from their last run (benchmarks/out/)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    deadline = time.monotonic() + args.wait_idle * 60
    waits: list[str] = []
    machine = c.machine_lines()
    started = time.perf_counter()
    sections, summary, timings, busy_rows, any_busy = [], [], [], [], False
    for name in BENCHMARKS:
        if name in names:
            if args.wait_idle and (note := wait_idle(deadline, name)):
                waits.append(note)
            text, figs, elapsed, load = run_one(name, args.quick)
            timings.append(f"{name} {elapsed:.0f} s")
            print(f"   {name} done in {elapsed:.0f} s", file=sys.stderr, flush=True)
        elif args.reuse and (earlier := reuse_one(name)):
            text, figs, load = earlier
            text = text.rstrip() + "\n\n*(Reused from an earlier run: `run_all.py --reuse`.)*\n"
        else:
            continue
        sections.append(text.rstrip() + "\n")
        summary += figs
        busy_rows.append([name, *load_note(load)])
        any_busy = any_busy or bool(load.get("busy_fraction"))
    total = time.perf_counter() - started
    rows = [[f["figure"], f["value"], f["target"], f["status"]] for f in summary]
    missed = [f for f in summary if "missed" in f["status"]]
    findings = ["## Targets missed: what profiling found", ""]
    findings += [f"- **{f['figure']}** ({f['value']}): {f.get('finding') or 'see its section below.'}" for f in missed]
    findings += ["- None: every figure with a target met it."] if not missed else []
    header = [
        "# lesionseg benchmarks",
        "",
        "Written by `" + " ".join(["python benchmarks/run_all.py", *sys.argv[1:]]) + "`" +
        f" in {total / 60:.1f} min ({', '.join(timings) or 'nothing run'}). Each benchmark is its own module in `benchmarks/`, "
        "runnable alone. Figures are medians of several runs; ratios are measured side by side in one process. "
        "This is a shared 2-core machine: absolute times move with load, the ratios much less.",
        "",
        *(["**QUICK RUN (smoke test): tiny sizes and few repeats; these are not the results.**", ""]
          if args.quick else []),
        "## Machine",
        "",
        *machine,
        *[f"- {note}" for note in waits],
        "",
        "Load while each benchmark ran (sampled every 5 s; a benchmark itself adds about 1-2 to the load of this "
        "2-core machine, so a 1-minute load well above 2 means it shared the cores):",
        "",
        *c.table(["benchmark", "started", "samples with another `dvc repro` running", "1-min load (min-max)"],
                 busy_rows),
        "",
        *(["**Another `dvc repro` ran during part of the measurement: absolute times from those benchmarks are "
           "inflated and noisier; the side-by-side ratios are the figures to trust.**", ""] if any_busy else []),
        "## Summary",
        "",
        *c.table(["figure", "value", "target", "status"], rows),
        "",
        *findings,
        "",
    ]
    RESULTS_TEXT = "\n".join(header) + "\n" + "\n".join(sections)
    args.out.write_text(RESULTS_TEXT)
    print(f"written to {args.out} ({total:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
