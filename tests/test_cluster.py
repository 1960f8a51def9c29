"""`lesionseg study run` (lesionseg.cluster) on tiny real DVC pipelines of `python -c` stages in temp git repos."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lesionseg.config import ProjectConfig
from lesionseg.cluster import (StudyFailed, downstream_closure, log_name, plan_study, run_study, stage_graph,
                               stale_stages, thread_warnings, threads_per_worker)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

# Every stage runs step.py: it records when its command ran (wall clock), then writes its output; "fail" exits 3.
STEP = """import pathlib, sys, time
name, sleep, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
t0 = time.time()
if mode == "fail":
    print("reading the volumes")
    print("RuntimeError: CUDA out of memory (pretend)")
    sys.exit(3)
time.sleep(sleep)
pathlib.Path("out", name).write_text(f"{t0} {time.time()}")
"""


def _stage(name: str, sleep: float, deps: list[str] | None = None, mode: str = "ok", prefix: str = "") -> dict:
    return {"cmd": f"{prefix}python step.py {name} {sleep} {mode}", "deps": ["step.py", *(deps or [])],
            "outs": [f"out/{name}"]}


def _diamond(sleep: float = 2.0, fail_left: bool = False, side: bool = False) -> dict:
    """top -> mid@left, mid@right (foreach) -> join; with ``side``, an independent `side` stage too."""
    mid = _stage("mid-${key}", sleep, ["out/top"], "${item.mode}")
    stages = {
        "top": _stage("top", 0),
        "mid": {"foreach": {"left": {"mode": "fail" if fail_left else "ok"}, "right": {"mode": "ok"}}, "do": mid},
        "join": _stage("join", 0, ["out/mid-left", "out/mid-right"]),
    }
    return {"stages": {**stages, "side": _stage("side", sleep)} if side else stages}


def _make_repo(root: Path, pipeline: dict) -> Path:
    (root / "out").mkdir(parents=True)
    (root / "step.py").write_text(STEP)
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"num_threads": 1}}))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")


def _dvc(root: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    return out.stdout + out.stderr


def _study(root: Path, **kwargs):
    lines: list[str] = []
    result = run_study(root, workers=2, dashboard_address=None, log_dir=root / "logs" / "study",
                       echo=lines.append, **kwargs)
    return result, lines


def _span(root: Path, name: str) -> tuple[float, float]:
    start, end = (float(x) for x in (root / "out" / name).read_text().split())
    return start, end


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return max(a[0], b[0]) < min(a[1], b[1])


def test_plan_reads_graph_and_stale_stages_from_dvc(tmp_path):
    root = _make_repo(tmp_path / "repo", _diamond(side=True))
    graph = stage_graph(root)
    assert graph == {"top": set(), "mid@left": {"top"}, "mid@right": {"top"}, "join": {"mid@left", "mid@right"},
                     "side": set()}
    assert set(stale_stages(root)) == set(graph)
    assert downstream_closure(graph, ["mid@left"]) == ["mid@left", "join"]
    deps, todo = plan_study(root)
    assert todo.index("top") < todo.index("mid@left") < todo.index("join")
    assert log_name("finetune@ratlesnetv2-scratch-8-noaug") == "finetune@ratlesnetv2-scratch-8-noaug.log"
    assert log_name("sub/dvc.yaml:train") == "sub_dvc.yaml_train.log"


def test_threads_share_the_cores():
    assert threads_per_worker(16, 4) == 4 and threads_per_worker(2, 4) == 1
    assert thread_warnings(ProjectConfig({"train": {"num_threads": 2}}), 2, 4) == []
    assert thread_warnings(None, 8, 2) == []  # no params.yaml: nothing to warn about
    stages = {"train": {"num_threads": 2}, "pretrain": {}, "finetune": {}}
    warning = thread_warnings(ProjectConfig({**stages, "tune": {"train": {"num_threads": 4}}}), 2, 4)
    assert "train.num_threads=4 x 2 workers" in warning[0] and "set train.num_threads to 2" in warning[0]
    # the same rule the stages train with: tune inherits finetune's overrides (ProjectConfig.train_for)
    warning = thread_warnings(ProjectConfig({**stages, "finetune": {"train": {"num_threads": 3}}, "tune": {}}), 2, 4)
    assert "train.num_threads=3 x 2 workers" in warning[0]


def test_study_run_matches_serial_repro_and_overlaps_independent_stages(tmp_path):
    root = _make_repo(tmp_path / "repo", _diamond(sleep=5.0))
    result, lines = _study(root)
    assert result.ok, lines
    assert set(result.stages) == {"top", "mid@left", "mid@right", "join"}
    assert all(r.state == "ran" for r in result.stages.values()), lines
    # same result as serial: status clean, a plain repro does nothing, one lock entry per stage
    assert stale_stages(root) == []
    assert "Data and pipelines are up to date" in _dvc(root, "status")
    second = _dvc(root, "repro")
    assert "Running stage" not in second, second
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"top", "mid@left", "mid@right", "join"}
    # order: join after both mids, which (independent) ran at the same time on the 2 workers
    spans = {name: _span(root, name) for name in ("top", "mid-left", "mid-right", "join")}
    (l0, l1), (r0, r1) = spans["mid-left"], spans["mid-right"]
    assert spans["top"][1] <= min(l0, r0) and spans["join"][0] >= max(l1, r1)
    assert _overlap((l0, l1), (r0, r1)), f"mid@left and mid@right did not overlap: {spans}"
    assert len([ln for ln in lines if re.match(r"^(ran|up to date)\s+\d+\.\d s  ", ln)]) == 4
    # nothing stale: nothing to do, no cluster started
    again, lines = _study(root)
    assert again.stages == {} and lines == ["study: every stage is up to date"]


def test_failed_stage_names_its_log_stops_dependants_not_independent_stages(tmp_path):
    root = _make_repo(tmp_path / "repo", _diamond(sleep=1.0, fail_left=True, side=True))
    result, lines = _study(root)
    states = {s: r.state for s, r in result.stages.items()}
    assert states == {"top": "ran", "mid@left": "failed", "mid@right": "ran", "side": "ran", "join": "not run"}
    failed = result.stages["mid@left"]
    log = root / "logs" / "study" / "mid@left.log"
    assert failed.log == log and failed.returncode != 0 and "CUDA out of memory" in log.read_text()
    text = "\n".join(lines)
    assert f"log: {log}" in text and "    | RuntimeError: CUDA out of memory (pretend)" in text
    assert not (root / "out" / "join").exists()
    with pytest.raises(StudyFailed, match=r"1 stage\(s\) failed \(mid@left; logs: .*mid@left\.log\), 1 not run"):
        result.raise_for_failures()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"top", "mid@right", "side"}


def test_worker_killed_mid_stage_is_retried_once_and_finishes(tmp_path):
    root = _make_repo(tmp_path / "repo", {"stages": {
        "slow": {**_stage("slow", 4, prefix="echo started >> attempts.txt && "),
                 "cmd": "echo started >> attempts.txt && python step.py slow 4 ok && echo finished >> attempts.txt"}}})
    log = root / "logs" / "study" / "slow.log"
    killed: list[int] = []

    def kill_worker_once_stage_runs() -> None:
        end = time.time() + 120
        while time.time() < end:
            if (root / "attempts.txt").exists() and log.exists():
                match = re.search(r"worker pid (\d+)", log.read_text())
                if match:
                    killed.append(int(match.group(1)))
                    os.kill(killed[0], signal.SIGKILL)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_worker_once_stage_runs)
    killer.start()
    result, lines = _study(root)
    killer.join()
    assert killed, "the stage never started"
    slow = result.stages["slow"]
    assert result.ok and slow.state == "ran" and slow.attempts == 2, lines
    # the killed attempt's command was stopped with its worker (no orphan finished it): started twice, finished once
    assert (root / "attempts.txt").read_text().split() == ["started", "started", "finished"]
    assert stale_stages(root) == [] and "slow" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def test_joins_a_running_scheduler_and_gpu_stages_take_one_gpu_each(tmp_path):
    """One worker with 2 threads that declares GPU=1: the two `finetune@` stages (GPU) run one after the other,
    the data stage `prepare` (no GPU) runs beside one of them."""
    from distributed import LocalCluster

    root = _make_repo(tmp_path / "repo", {"stages": {
        "finetune": {"foreach": ["a", "b"], "do": _stage("ft-${item}", 4)},
        "prepare": _stage("prep", 4),
    }})
    with LocalCluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}, dashboard_address=None,
                      memory_limit=0) as cluster:
        lines: list[str] = []
        result = run_study(root, scheduler=cluster.scheduler_address, log_dir=root / "logs" / "study",
                           echo=lines.append)
    assert result.ok and "GPU stages ask for 1 GPU" in lines[0], lines
    ft_a, ft_b, prep = _span(root, "ft-a"), _span(root, "ft-b"), _span(root, "prep")
    assert not _overlap(ft_a, ft_b), f"two GPU stages shared the one GPU: {ft_a} {ft_b}"
    assert _overlap(prep, ft_a) or _overlap(prep, ft_b), "the data stage did not run beside a GPU stage"


def test_schedule_builds_the_full_study_from_dvc_yaml():
    """benchmarks/schedule.py's full-study DAG is dvc.yaml under params.yaml + params-full.yaml: one stage per
    matrix cell DVC would run (25 tune stages for 5 sizes x 5 repeats, not one per arm)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import schedule

    from lesionseg.config import load_full_config

    cfg = load_full_config(schedule.ROOT)
    graph, times, tune_x = schedule.full_study(schedule.FINETUNE_MIN)
    kinds = [stage.split("@")[0] for stage in graph]
    assert kinds.count("tune") == len(cfg.tune.sample_sizes) * len(cfg.tune.repeats) == 25
    assert kinds.count("finetune") == (len(cfg.finetune.models) * len(cfg.finetune.strategies)
                                       * len(cfg.finetune.sample_sizes) * len(cfg.finetune.augment)
                                       * len(cfg.study.repeats))
    assert kinds.count("pretrain") == len(cfg.pretrain.models) and "baseline" not in kinds
    assert graph["report"] >= {"evaluate"} and set(times) == set(graph)
    assert tune_x == 1 + cfg.tune.n_trials * cfg.train_for("tune").budget_steps / cfg.train_for("finetune").budget_steps
    unetr = next(s for s in graph if s.startswith("finetune@unetr-"))
    assert times[unetr] == schedule.FINETUNE_MIN["unetr"] * 60
