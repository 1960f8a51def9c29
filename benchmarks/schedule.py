"""Predicted wall time of `lesionseg study run` on G workers: the DVC DAG list-scheduled with measured or given
stage times. Both DAGs are dvc.yaml's own, as DVC resolves it: the demo with params.yaml (this workspace), the
full study with params.yaml + params-full.yaml (the paper-scale overrides) in a temporary DVC project.

    python benchmarks/schedule.py [--workers 1 2 4 8] [--overhead-s 3] [--finetune-min unetr=45 ...]
                                  [--sections demo full]
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lesionseg.cluster import dependants, stage_graph, stage_name, topological  # noqa: E402
from lesionseg.config import FULL_STUDY_FILE, ProjectConfig, apply_overrides, load_overrides, load_params  # noqa: E402

# Demo seconds where nothing was measured (shared/ENVIRONMENT.md, 2 threads: pretrain 165 s, fine-tune 86 s).
DEMO_S = {"synthesize": 20, "prepare": 10, "split": 3, "subsets": 3, "pretrain": 165, "finetune": 86,
          "scratch": 86, "baseline": 86, "tune": 4 * 40 + 86, "evaluate": 60, "report": 15}
FULL_MIN = {"data": 5, "pretrain": 60, "evaluate": 60, "report": 2}  # GPU minutes per stage of the full study
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


def pipeline(params: dict) -> tuple[dict[str, set[str]], dict[str, str]]:
    """(stage -> the stages it depends on, stage -> its command) of this project's dvc.yaml under ``params``, as
    DVC resolves it (foreach, matrix, interpolation): dvc.yaml and ``params`` in a temporary DVC project."""
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory(prefix="schedule-") as tmp:
        shutil.copy(ROOT / "dvc.yaml", tmp)
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        quiet = logging.getLogger("dvc.repo.init")  # "Initialized DVC repository."
        level, quiet.level = quiet.level, logging.WARNING
        try:
            Repo.init(tmp, no_scm=True).close()
        finally:
            quiet.setLevel(level)
        graph = stage_graph(tmp)
        with Repo(tmp) as repo:
            cmds = {stage_name(s): s.cmd for s in repo.index.stages}
    return graph, cmds


def _model(cmd: str) -> str | None:
    """The ``--model`` argument of a stage's command (finetune, baseline, pretrain), if any."""
    argv = shlex.split(cmd)
    return argv[argv.index("--model") + 1] if "--model" in argv else None


def tune_cost(cfg: ProjectConfig) -> float:
    """One tune stage in fine-tunes: ``n_trials`` trials at tune's training budget, then one final fine-tune."""
    return 1 + cfg.tune.n_trials * cfg.train_for("tune").budget_steps / cfg.train_for("finetune").budget_steps


def full_study(ft_min: dict[str, float]) -> tuple[dict[str, set[str]], dict[str, float], float]:
    """The paper-scale DAG (dvc.yaml under params.yaml + params-full.yaml), seconds per stage from ``ft_min``
    (GPU minutes per fine-tune cell per network) and FULL_MIN, and the tune cost in fine-tunes."""
    params = apply_overrides(load_params(ROOT / "params.yaml"), load_overrides(ROOT / FULL_STUDY_FILE))
    cfg = ProjectConfig(params, f"params.yaml + {FULL_STUDY_FILE}")
    g, cmds = pipeline(params)
    tune_x = tune_cost(cfg)
    t = {}
    for stage, cmd in cmds.items():
        kind = stage.split("@")[0]
        if kind in ("finetune", "scratch", "baseline"):
            t[stage] = ft_min[_model(cmd)] * 60
        elif kind == "tune":
            t[stage] = tune_x * ft_min[cfg.tune.model] * 60
        else:
            t[stage] = FULL_MIN.get(kind, FULL_MIN["data"]) * 60.0
    return g, t, tune_x


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
    ap.add_argument("--sections", nargs="+", choices=["demo", "full"], default=["demo", "full"])
    args = ap.parse_args()
    if "demo" in args.sections:
        graph = stage_graph(ROOT)
        times, n = demo_times(graph)
        report(f"demo: this dvc.yaml, {n} stages measured, {len(graph) - n} assumed", graph,
               {s: v + args.overhead_s for s, v in times.items()}, args.workers, 60, "min")
    if "full" in args.sections:
        ft = {**FINETUNE_MIN, **{k: float(v) for k, v in (a.split("=") for a in args.finetune_min)}}
        g, t, tune_x = full_study(ft)
        report(f"full study: dvc.yaml with {FULL_STUDY_FILE}; fine-tune GPU min per cell {ft}, "
               f"tune = {tune_x:.2f} fine-tunes", g, {s: v + args.overhead_s for s, v in t.items()},
               args.workers + [32, 64], 3600, "h")

if __name__ == "__main__":
    main()
