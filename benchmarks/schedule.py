"""Predicted wall time of `lesionseg study run` on G workers: the DVC DAG list-scheduled with measured or given
stage times. Demo: this project's dvc.yaml; full: 4 networks x 3 strategies x 5 sizes x 2 aug x 5 repeats.

    python benchmarks/schedule.py [--workers 1 2 4 8] [--overhead-s 3] [--finetune-min unetr=45 ...]
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lesionseg.cluster import dependants, stage_graph, stage_name, topological  # noqa: E402

# Demo seconds where nothing was measured (shared/ENVIRONMENT.md, 2 threads: pretrain 165 s, fine-tune 86 s).
DEMO_S = {"synthesize": 20, "prepare": 10, "split": 3, "subsets": 3, "pretrain": 165, "finetune": 86,
          "baseline": 86, "tune": 4 * 40 + 86, "evaluate": 60, "report": 15}
FULL_MIN = {"data": 5, "pretrain": 60, "tune_x": 8, "evaluate": 60, "report": 2}  # tune = tune_x fine-tunes
FINETUNE_MIN = {"ratlesnetv2": 20, "unet": 10, "dynunet": 25, "unetr": 30}  # GPU minutes per cell


def measured_seconds(out: Path) -> float | None:
    """A training output's seconds: run.json's own field, else its MLflow run's start/end, else history.tsv."""
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    for key in ("train_seconds", "duration_s", "seconds"):
        if key in run:
            return float(run[key])
    from lesionseg.tracking.store import default_tracking_uri

    uri = default_tracking_uri(ROOT)
    if run.get("run_id") and (not uri.startswith("sqlite:") or (ROOT / "mlflow.db").exists()):
        import mlflow

        info = mlflow.MlflowClient(uri).get_run(run["run_id"]).info
        if info.end_time:
            return (info.end_time - info.start_time) / 1000
    if (out / "history.tsv").exists():
        with open(out / "history.tsv") as f:
            return sum(float(r.get("epoch_seconds") or 0) for r in csv.DictReader(f, delimiter="\t")) or None
    return None


def demo_times(graph: dict[str, set[str]]) -> tuple[dict[str, float], int]:
    """Seconds per stage of this dvc.yaml (measured from its outputs where present) and how many were measured."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        outs = {stage_name(s): [Path(o.fs_path) for o in s.outs] for s in repo.index.stages}
    times, n = {}, 0
    for stage in graph:
        found = [t for t in (measured_seconds(o) for o in outs.get(stage, []) if o.is_dir()) if t]
        n += bool(found)
        times[stage] = sum(found) if found else DEMO_S.get(stage.split("@")[0], 10)
    return times, n


def full_study(ft_min: dict[str, float]) -> tuple[dict[str, set[str]], dict[str, float]]:
    """The paper-scale DAG, one stage per cell and one tune per arm and size, with seconds per stage."""
    g = {"synthesize": set(), "prepare@source": {"synthesize"}, "prepare@target": {"synthesize"},
         "split@source": {"prepare@source"}, "split@target": {"prepare@target"}, "subsets": {"split@target"}}
    t = {s: FULL_MIN["data"] * 60.0 for s in g}
    for m, minutes in ft_min.items():
        g[f"pretrain@{m}"], t[f"pretrain@{m}"] = {"split@source"}, FULL_MIN["pretrain"] * 60
        for s in ("scratch", "partial", "full"):
            for n in (8, 16, 24, 32, 40):
                cells = {f"tune@{m}-{s}-{n}": FULL_MIN["tune_x"] * minutes * 60}
                cells.update({f"finetune@{m}-{s}-{n}-{a}-r{r}": minutes * 60
                              for a in ("noaug", "aug") for r in range(5)})
                g.update({c: {"subsets", f"pretrain@{m}"} for c in cells})
                t.update(cells)
    g["evaluate"] = {s for s in g if s.startswith(("tune@", "finetune@"))}
    g["report"] = {"evaluate"}
    t.update(evaluate=FULL_MIN["evaluate"] * 60, report=FULL_MIN["report"] * 60)
    return g, t


def critical_path(g: dict[str, set[str]], t: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of stage times (wall time on unlimited workers) and its stages."""
    best: dict[str, tuple[float, list[str]]] = {}
    for s in topological(g):
        up = max((best[u] for u in g[s]), default=(0.0, []), key=lambda x: x[0])
        best[s] = (up[0] + t[s], up[1] + [s])
    return max(best.values(), key=lambda x: x[0])


def simulate(g: dict[str, set[str]], t: dict[str, float], workers: int, by_path: bool) -> float:
    """Makespan on ``workers``: ready stages start in submission order (as run_study submits them) or, with
    ``by_path``, longest remaining chain first."""
    down, waiting, order = dependants(g), {s: len(g[s]) for s in g}, topological(g)
    rank = {s: float(i) for i, s in enumerate(order)}
    if by_path:
        tail: dict[str, float] = {}
        for s in reversed(order):
            tail[s] = t[s] + max((tail[d] for d in down[s]), default=0.0)
        rank = {s: -tail[s] for s in g}
    ready = sorted((rank[s], s) for s in g if not waiting[s])
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < workers:
            heapq.heappush(running, (now + t[(s := heapq.heappop(ready)[1])], s))
        now, done = heapq.heappop(running)
        for d in down[done]:
            waiting[d] -= 1
            if not waiting[d]:
                heapq.heappush(ready, (rank[d], d))
    return now


def report(name: str, g: dict[str, set[str]], t: dict[str, float], workers: list[int], unit: float, label: str):
    cp, path = critical_path(g, t)
    total = sum(t.values())
    print(f"\n## {name}\n{len(g)} stages, {total / unit:.1f} {label} of work; critical path {cp / unit:.2f} {label}: "
          + " -> ".join(path))
    print(f"\n| G | wall ({label}), submission order | wall, longest chain first | lower bound | speed-up |")
    print("|---|---|---|---|---|")
    for w in workers:
        fifo, best = simulate(g, t, w, False), simulate(g, t, w, True)
        print(f"| {w} | {fifo / unit:.2f} | {best / unit:.2f} | {max(cp, total / w) / unit:.2f} | {total / fifo:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--overhead-s", type=float, default=3.0, help="per task: dvc start, lock, hashing, dvc.lock")
    ap.add_argument("--finetune-min", nargs="*", default=[], metavar="NET=MIN", help="GPU minutes per cell")
    args = ap.parse_args()
    graph = stage_graph(ROOT)
    times, n = demo_times(graph)
    report(f"demo: this dvc.yaml, {n} stages measured, {len(graph) - n} assumed", graph,
           {s: v + args.overhead_s for s, v in times.items()}, args.workers, 60, "min")
    ft = {**FINETUNE_MIN, **{k: float(v) for k, v in (a.split("=") for a in args.finetune_min)}}
    g, t = full_study(ft)
    report(f"full study: fine-tune GPU min per cell {ft}, tune = {FULL_MIN['tune_x']} fine-tunes", g,
           {s: v + args.overhead_s for s, v in t.items()}, args.workers + [32, 64], 3600, "h")


if __name__ == "__main__":
    main()
