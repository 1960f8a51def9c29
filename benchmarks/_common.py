"""What the benchmark modules share: timing, machine facts, memory, markdown output, demo data in temp dirs.

Every module ``bench_X.py`` has ``main()`` (``--quick``, ``--out FILE``) that prints a markdown section and writes
it to ``--out`` (default ``benchmarks/out/X.md``, git-ignored); ``run_all.py`` runs each in its own process and
joins the sections into ``benchmarks/results.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = HERE / "out"
PYTHON = sys.executable

if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_X.py` from anywhere
    sys.path.insert(0, str(ROOT))

# params.yaml's demo settings (kept here so a running `dvc repro` that edits params.yaml cannot change a benchmark)
DEMO_NETWORKS = {
    "ratlesnetv2": {"filters": 16},
    "unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 0},
    "dynunet": {"filters": [8, 16, 32, 64]},
    "unetr": {"img_size": [48, 32, 32], "feature_size": 8, "hidden_size": 128, "mlp_dim": 256, "num_heads": 4},
}
DEMO_SHAPE = [48, 32, 32]  # prepared mouse volume at the demo's 0.3 x 0.5 x 0.3 mm
DEMO_PREPARE = {
    "mouse": {"target_spacing": [0.3, 0.5, 0.3], "shape": [48, 32, 32]},
    "rat": {"target_spacing": [0.4, 1.0, 0.4], "shape": [48, 18, 32]},
}
CLIP = (0.5, 99.5)
# README "Demo size and the full study": the paper-scale overrides
PAPER_SHAPE = [160, 32, 96]  # mouse at 0.1 x 0.5 x 0.1 mm
PAPER_SPACING = [0.1, 0.5, 0.1]
PAPER_NETWORKS = {**DEMO_NETWORKS, "ratlesnetv2": {"filters": 32}, "unetr": {**DEMO_NETWORKS["unetr"],
                                                                                "img_size": PAPER_SHAPE}}


def median_times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``min-max`` of a sample, for the reader to judge the noise."""
    return f"{min(values):.3g}-{max(values):.3g}"


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def dvc_repro_running() -> bool:
    """True while a `dvc repro` that this process did not start runs on this machine (then figures are taken
    on a busy machine). Our own descendants (bench_dvc.py's `dvc repro` runs) do not count."""
    import psutil

    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "dvc repro" not in cmdline or proc.info["pid"] == me or "pgrep" in cmdline:
                continue
            if any(parent.pid == me for parent in proc.parents()):
                continue
            return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    """Markdown bullet lines: date, CPU, cores, RAM, load, library versions."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores ({affinity} usable), "
        f"RAM {ram_gb():.1f} GiB; load average {load}",
        f"- Python {platform.python_version()}, torch {_version('torch')}, monai {_version('monai')}, "
        f"mlflow {_version('mlflow')}, numpy {_version('numpy')}, dvc {_version('dvc')}, "
        f"nibabel {_version('nibabel')}",
    ]


class LoadMonitor:
    """Samples, every few seconds in a background thread, whether another `dvc repro` runs and the 1-minute
    load average, so that a benchmark can say how busy the machine was while it measured."""

    def __init__(self, interval: float = 5.0) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[bool, float]] = []
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.samples.append((dvc_repro_running(), os.getloadavg()[0]))
            if self._stop.wait(self.interval):
                return

    def summary(self) -> dict:
        self._stop.set()
        busy = [b for b, _ in self.samples]
        loads = [ld for _, ld in self.samples]
        return {"samples": len(busy), "busy_fraction": sum(busy) / max(1, len(busy)),
                "load_min": min(loads, default=0.0), "load_max": max(loads, default=0.0),
                "started": _dt.datetime.fromtimestamp(self.started).astimezone().strftime("%Y-%m-%d %H:%M")}


MONITOR: LoadMonitor | None = None


def cli(description: str, name: str) -> argparse.Namespace:
    """Parse ``--quick``/``--out`` and start sampling the machine's load (see :func:`emit`)."""
    global MONITOR
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / f"{name}.md", help="where to write the markdown")
    args = parser.parse_args()
    MONITOR = LoadMonitor()
    return args


def emit(text: str, out: Path, summary: Sequence[dict] = ()) -> None:
    """Print the markdown section, write it to ``out`` and, beside it as ``.json``, the key figures
    (``summary``: dicts with ``figure``, ``value``, ``target``, ``status``) and the load seen while measuring,
    for ``run_all.py``."""
    import json

    load = MONITOR.summary() if MONITOR else {}
    if load.get("busy_fraction"):
        text = text.rstrip() + (f"\n\n*Another `dvc repro` was running during {load['busy_fraction'] * 100:.0f}% of "
                                "this benchmark: its absolute times are inflated and noisy.*\n")
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"figures": list(summary), "load": load}, indent=1))
    print(f"written to {out}", file=sys.stderr)


def figure(name: str, value: str, target: str = "-", met: bool | None = None, finding: str = "") -> dict:
    """One row of results.md's summary table; ``finding`` (what profiling found) is listed when ``met`` is False."""
    status = "-" if met is None else ("met" if met else "**missed**")
    return {"figure": name, "value": value, "target": target, "status": status, "finding": finding}


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def make_prepared_mouse(root: Path, n_cases: int, matrix: int = 128, n_slices: int = 32, seed: int = 2026) -> Path:
    """A synthetic demo-size mouse dataset, raw (``root/raw``) and prepared (``root/prepared``); returns the
    prepared dir."""
    from lesionseg.data.preprocess import prepare_dataset
    from lesionseg.data.synthetic import synthesize_dataset

    synthesize_dataset("mouse", n_cases, seed, root / "raw", matrix=matrix, n_slices=n_slices)
    prepare_dataset(root / "raw", root / "prepared", clip_percentiles=CLIP, **DEMO_PREPARE["mouse"])
    return root / "prepared"


def profile_top(fn: Callable[[], object], n: int = 12, sort: str = "cumulative") -> list[str]:
    """cProfile ``fn`` once; the top ``n`` rows (by ``sort``) as a fenced text block."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort)
    stats.print_stats(n)
    text = buf.getvalue()
    start = text.find("   ncalls")
    body = text[start:] if start >= 0 else text
    return ["```", *[line.rstrip() for line in body.strip().splitlines()], "```"]
