"""Run the DVC pipeline's stale stages in parallel on Dask (``lesionseg study run``).

DVC stays the judge of what to run: the stage graph and what is stale come from DVC's Python API, and every
task is ``dvc --wait-for-lock repro --single-item STAGE`` in the one shared workspace, DVC's documented way to
run stages in parallel. This module only orders the tasks: a stage is submitted to Dask as soon as every
stage it depends on has finished, a failed stage stops its dependants and nothing else.

Imports neither torch nor mlflow; dask/distributed and dvc are imported where they are used.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from lesionseg.config import ProjectConfig, load_config
from lesionseg.errors import ConfigError, LesionsegError

#: Stages (the name before ``@``) that ask for ``resources={"GPU": 1}`` when the workers declare GPUs.
GPU_STAGES = frozenset({"pretrain", "finetune", "scratch", "baseline", "tune", "evaluate"})
#: Standard thread-count variables of OpenMP/MKL/OpenBLAS/numexpr; not project knobs (see ``task_env``).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
ATTEMPT_MARK = "# lesionseg study: attempt"
_OWN_LINES = (ATTEMPT_MARK, "# supervisor pid ", "# exit ")  # what repro_stage adds to a stage's log
TAIL_LINES = 15

#: The direct child of a Dask task (see its docstring): run as a script, it needs only the standard library.
SUPERVISOR = Path(__file__).with_name("supervisor.py")


class StudyFailed(LesionsegError):
    """At least one stage of ``lesionseg study run`` failed; the CLI prints it and exits 1."""


# ---------------------------------------------------------------------------------------------- reading DVC
def stage_name(stage: Any) -> str:
    """The name ``dvc repro`` takes, relative to the repo root whatever the current directory:
    ``prepare@source``, ``sub/dvc.yaml:train``, ``data/raw/rat.dvc``."""
    rel = Path(stage.path_in_repo).as_posix()
    name = getattr(stage, "name", None)  # PipelineStage (dvc.yaml) only
    if name is None:
        return rel
    return name if rel == "dvc.yaml" else f"{rel}:{name}"


def _read_pipeline(repo_root: Path, status: bool = True) -> tuple[dict[str, set[str]], list[str]]:
    """(stage -> the stages it depends on, stages that ``dvc status`` reports) from DVC's Python API; without
    ``status``, the graph only (no hashing) and no stale stages."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo_root), _wait_for_lock=True) as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            deps = {stage_name(stage): {stage_name(up) for up in graph.successors(stage)} for stage in graph.nodes}
            stale: set[str] = set()
            if status:
                with repo.lock:  # what `dvc status` does, stage by stage (names relative to the root, not the cwd)
                    stale = {stage_name(stage) for stage in graph.nodes if stage.status(check_updates=False)}
    except DvcException as err:
        raise ConfigError(f"DVC cannot read the pipeline in {repo_root}: {err}; fix it until `dvc status` "
                          f"works") from err
    return deps, [s for s in topological(deps) if s in stale]


def stage_graph(repo_root: Path | str) -> dict[str, set[str]]:
    """Every stage of the pipeline (``prepare@source``, ``finetune@m-s-8-noaug``, ``data.dvc``...) -> the names
    of the stages whose outputs it uses (``dvc dag``'s edges, read from ``Repo.index.graph``)."""
    return _read_pipeline(Path(repo_root), status=False)[0]


def stale_stages(repo_root: Path | str) -> list[str]:
    """The stages ``dvc status`` reports as changed, upstream first."""
    return _read_pipeline(Path(repo_root))[1]


def topological(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Stage names, each after all the stages it depends on (ties in name order, so the order is stable)."""
    order = TopologicalSorter({s: sorted(deps[s]) for s in sorted(deps)})
    return list(order.static_order())


def dependants(deps: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Reverse edges: stage -> the stages that use its outputs."""
    down: dict[str, set[str]] = {s: set() for s in deps}
    for stage, ups in deps.items():
        for up in ups:
            down.setdefault(up, set()).add(stage)
    return down


def downstream_closure(deps: Mapping[str, Iterable[str]], stages: Iterable[str]) -> list[str]:
    """``stages`` and everything downstream of them, upstream first: what a plain ``dvc repro`` would visit
    (``dvc status`` does not list a stage whose inputs are about to change; its own ``repro --single-item``
    then decides whether it really runs or "didn't change")."""
    down, todo, seen = dependants(deps), list(stages), set(stages)
    while todo:
        for child in down.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return [s for s in topological(deps) if s in seen]


def plan_study(repo_root: Path | str) -> tuple[dict[str, set[str]], list[str]]:
    """(the graph restricted to the stages to run, those stages upstream first)."""
    deps, stale = _read_pipeline(Path(repo_root))
    todo = downstream_closure(deps, stale)
    keep = set(todo)
    return {s: deps[s] & keep for s in todo}, todo


# ---------------------------------------------------------------------------------------------- threads
def cpu_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(cores: int, workers: int) -> int:
    """Compute threads each of ``workers`` stage processes gets on ``cores`` cores."""
    return max(1, cores // max(1, workers))


TRAINING_STAGES = ("pretrain", "finetune", "tune")


def train_threads(config: ProjectConfig | None) -> int | None:
    """The largest ``num_threads`` any stage trains with (``ProjectConfig.train_for``: ``train`` merged with
    the stage's ``train:`` overrides); None without a params file or a ``train`` section."""
    if config is None:
        return None
    found = []
    for stage in TRAINING_STAGES:
        try:
            found.append(config.train_for(stage).num_threads)
        except ConfigError:  # a pipeline without this stage's section
            continue
    if not found:
        try:
            found.append(config.train.num_threads)
        except ConfigError:
            return None
    return max(found)


def _load_config(repo_root: Path) -> ProjectConfig | None:
    """The project's typed params.yaml, or None where there is none (a DVC pipeline that is not lesionseg's)."""
    path = repo_root / "params.yaml"
    return load_config(path) if path.exists() else None


def thread_warnings(config: ProjectConfig | None, workers: int, cores: int) -> list[str]:
    """A warning when ``workers`` training stages at params.yaml's ``num_threads`` oversubscribe ``cores``.

    The runner warns instead of changing anything: ``train.num_threads`` is a stage param hashed into
    dvc.lock, so rewriting it per run would make every training stage stale, and the project allows no hidden
    variable that overrides it (training calls ``torch.set_num_threads(train.num_threads)``, which wins over
    OMP_NUM_THREADS). The person picks ``train.num_threads`` for the machine, once.
    """
    n = train_threads(config)
    if n is None or n * workers <= cores:
        return []
    return [f"train.num_threads={n} x {workers} workers = {n * workers} threads on {cores} cores: training "
            f"stages will oversubscribe the CPU; set train.num_threads to {threads_per_worker(cores, workers)} in "
            f"params.yaml (a param: training stages re-run) or use --workers {max(1, cores // n)}"]


def task_env(threads: int | None) -> dict[str, str]:
    """The environment of a stage task: the worker's, plus ``DVC_NO_ANALYTICS=1`` and, when ``threads`` is
    given, the standard OpenMP/BLAS thread variables.

    Why these variables and no other: they are the standard way to bound numpy/scipy/BLAS and any torch code
    that does not set its own thread count (the data stages: synthesize, prepare, split), they are no
    project setting (no stage reads them as a parameter) and DVC does not hash them. Training threads come from
    params.yaml (see ``thread_warnings``).
    """
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARS})
    return env


# ---------------------------------------------------------------------------------------------- one task
def log_name(stage: str) -> str:
    """A file name for a stage's log: ``finetune@m-s-8-noaug.log``; ``/`` and ``:`` of sub-directory stages
    (``sub/dvc.yaml:train``) become ``_``."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", stage) + ".log"


def _wait_for_previous_attempt(log_path: Path, timeout: float = 60.0) -> None:
    """If an earlier attempt of this stage ran on this host and its supervisor still lives (its worker was
    killed a moment ago), wait until it has stopped ``dvc``, so the retry does not find the outputs locked."""
    if not log_path.exists():
        return
    import psutil

    host = socket.gethostname()
    pids = [int(m.group(1)) for m in re.finditer(rf"^# supervisor pid (\d+) on {re.escape(host)}$",
                                                 log_path.read_text(errors="replace"), re.M)]
    end = time.monotonic() + timeout
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.2)


def repro_stage(repo_root: Path | str, stage: str, log_path: Path | str, threads: int | None = None) -> int:
    """Run ``dvc --wait-for-lock repro --single-item STAGE`` in ``repo_root``; append its output to
    ``log_path``; return its exit status. Usable on its own (a SLURM array job, a shell) as well as in Dask."""
    root, log_path = Path(repo_root), Path(log_path)
    if not (root / ".dvc").is_dir():
        raise FileNotFoundError(f"{root} is not a DVC project on host {socket.gethostname()}: workers need the "
                                f"project at the same path on a shared filesystem (docs/cluster.md)")
    _wait_for_previous_attempt(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    with open(log_path, "a", buffering=1) as log:
        log.write(f"{ATTEMPT_MARK} on {socket.gethostname()} worker pid {os.getpid()} at "
                  f"{_dt.datetime.now().isoformat(timespec='seconds')}: dvc --wait-for-lock repro --single-item "
                  f"{stage}\n")
        proc = subprocess.Popen([sys.executable, str(SUPERVISOR), str(os.getpid()), *cmd], cwd=root,
                                env=task_env(threads), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.write(f"# supervisor pid {proc.pid} on {socket.gethostname()}\n")
        log.flush()
        code = proc.wait()
        log.write(f"# exit {code}\n")
    return code


def stage_task(repo_root: str, stage: str, log_path: str, threads: int | None) -> dict[str, Any]:
    """The Dask task: ``repro_stage`` plus what the client reports (times, host, attempts, the log's tail)."""
    started = time.time()
    code = repro_stage(repo_root, stage, log_path, threads)
    finished = time.time()
    text = Path(log_path).read_text(errors="replace")
    last = text[text.rfind(ATTEMPT_MARK):]
    return {"returncode": code, "started": started, "finished": finished, "host": socket.gethostname(),
            "attempts": text.count(ATTEMPT_MARK), "ran": "Running stage" in last,
            "tail": [ln for ln in last.splitlines() if not ln.startswith(_OWN_LINES)][-TAIL_LINES:]}


# ---------------------------------------------------------------------------------------------- the study
@dataclass
class StageResult:
    """What happened to one stage: ``ran`` | ``up to date`` (its repro found nothing changed) | ``failed`` |
    ``not run`` (an upstream stage failed)."""

    stage: str
    state: str
    seconds: float = 0.0
    log: Path | None = None
    returncode: int | None = None
    attempts: int = 0
    host: str = ""
    started: float | None = None
    finished: float | None = None
    tail: list[str] = field(default_factory=list)
    reason: str = ""

    def line(self) -> str:
        """The progress line: state, seconds, stage, and for failures the log and why."""
        text = f"{self.state:<10} {self.seconds:8.1f} s  {self.stage}"
        if self.attempts > 1:
            text += f"  ({self.attempts} attempts)"
        if self.state == "failed":
            text += f"  [{self.reason}]  log: {self.log}"
        if self.state == "not run":
            text += f"  ({self.reason})"
        return text


@dataclass
class StudyResult:
    """Every stage's result, in the order they finished, and the study's wall time."""

    stages: dict[str, StageResult]
    wall_seconds: float
    cluster: str
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [s for s, r in self.stages.items() if r.state == "failed"]

    @property
    def ok(self) -> bool:
        return all(r.state in ("ran", "up to date") for r in self.stages.values())

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.stages.values():
            counts[r.state] = counts.get(r.state, 0) + 1
        states = ", ".join(f"{n} {state}" for state, n in counts.items()) or "nothing to do"
        return f"study: {len(self.stages)} stages ({states}) in {self.wall_seconds:.1f} s on {self.cluster}"

    def raise_for_failures(self) -> None:
        """Raise ``StudyFailed`` (one line: which stages, where their logs are) unless every stage succeeded."""
        if not self.ok:
            logs = ", ".join(str(self.stages[s].log) for s in self.failed)
            not_run = sum(r.state == "not run" for r in self.stages.values())
            raise StudyFailed(f"{len(self.failed)} stage(s) failed ({', '.join(self.failed)}; logs: {logs}), "
                              f"{not_run} not run; fix and run `lesionseg study run` again")


def _open_client(scheduler: str | None, workers: int, dashboard_address: str | None, wait_s: float):
    """A Dask client on a new LocalCluster (``workers`` processes, one thread each) or on ``scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as err:
            raise ConfigError(f"cannot reach the Dask scheduler {scheduler} ({err}); start it with "
                              f"`dask scheduler` (docs/cluster.md)") from err
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except (TimeoutError, asyncio.TimeoutError) as err:
            client.close()
            raise ConfigError(f"no Dask worker joined {scheduler} within {wait_s:.0f} s; start workers with "
                              f"`dask worker {scheduler} --nthreads 1` (docs/cluster.md)") from err
        return client, f"{scheduler} ({len(client.scheduler_info()['workers'])} workers)"
    # A task whose worker dies is rescheduled; a second death marks it failed (KilledWorker): retried once.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                               dashboard_address=dashboard_address)
    return Client(cluster), f"LocalCluster({workers} workers x 1 thread)"


def _workers_have_gpus(client) -> bool:
    return any(w.get("resources", {}).get("GPU", 0) >= 1 for w in client.scheduler_info()["workers"].values())


def _stage_result(stage: str, log: Path, out: dict[str, Any] | None, err: BaseException | None,
                  submitted: float) -> StageResult:
    """A finished task as a StageResult: ``out`` is what ``stage_task`` returned, or ``err`` what it raised."""
    if out is None:
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        return StageResult(stage, "failed", time.time() - submitted, log, reason=reason)
    state = ("ran" if out["ran"] else "up to date") if out["returncode"] == 0 else "failed"
    return StageResult(stage, state, out["finished"] - out["started"], log, out["returncode"], out["attempts"],
                       out["host"], out["started"], out["finished"], out["tail"],
                       f"exit {out['returncode']}" if state == "failed" else "")


def _schedule(client, root: Path, logs: Path, deps: dict[str, set[str]], todo: list[str], threads: int | None,
              gpu_stages: set[str], echo: Callable[[str], None]) -> dict[str, StageResult]:
    """Submit each stage once every stage it depends on has succeeded; a failure marks its dependants
    ``not run``. Returns the results in the order the stages ended."""
    from distributed import as_completed

    down, waiting = dependants(deps), {s: set(deps[s]) for s in todo}
    results: dict[str, StageResult] = {}
    submitted: dict[str, tuple[str, float]] = {}  # Dask key -> (stage, when)
    futures = as_completed()

    def submit(stage: str) -> None:
        fut = client.submit(stage_task, str(root), stage, str(logs / log_name(stage)), threads,
                            key=f"stage-{stage}-{time.time_ns()}", pure=False, retries=1,
                            resources={"GPU": 1} if stage.split("@")[0] in gpu_stages else None)
        submitted[fut.key] = (stage, time.time())
        futures.add(fut)

    for stage in todo:
        if not waiting[stage]:
            submit(stage)
    for fut in futures:
        stage, when = submitted[fut.key]
        try:
            out, err = fut.result(), None
        except Exception as exc:  # KilledWorker (its worker died twice), no project on the worker...
            out, err = None, exc
        result = results[stage] = _stage_result(stage, logs / log_name(stage), out, err, when)
        echo(result.line())
        if result.state == "failed":
            for line in result.tail:
                echo(f"    | {line}")
            for child in downstream_closure(deps, [stage])[1:]:
                if child not in results:
                    results[child] = StageResult(child, "not run", reason=f"{stage} failed")
                    echo(results[child].line())
            continue
        for child in sorted(down.get(stage, ())):
            waiting[child].discard(stage)
            if not waiting[child] and child not in results:
                submit(child)
    return results


def run_study(repo_root: Path | str, workers: int | None = None, scheduler: str | None = None,
              gpu: bool | None = None, log_dir: Path | str | None = None, threads: int | None = None,
              gpu_stages: Iterable[str] = GPU_STAGES, dashboard_address: str | None = ":8787",
              wait_for_workers_s: float = 600.0, echo: Callable[[str], None] = print) -> StudyResult:
    """Run every stale stage of the DVC pipeline in ``repo_root`` (and what depends on it) on Dask.

    ``workers``: LocalCluster processes (default: cores // params.yaml's train.num_threads, at least 1);
    ignored with ``scheduler`` (``tcp://HOST:8786``, an existing cluster). ``gpu``: None asks
    ``resources={"GPU": 1}`` for ``gpu_stages`` when a worker declares GPUs, True always, False never.
    ``log_dir``: one ``STAGE.log`` per stage (default ``<repo>/logs/study``). ``threads``: OMP/BLAS threads per
    task (default cores // workers on a LocalCluster, the workers' own environment on a cluster).
    ``echo`` gets one line per stage as it ends. Returns every stage's result; ``raise_for_failures()`` turns a
    failure into ``StudyFailed``.
    """
    root = Path(repo_root).resolve()
    logs = Path(log_dir).resolve() if log_dir else root / "logs" / "study"
    deps, todo = plan_study(root)
    start = time.time()
    if not todo:
        echo("study: every stage is up to date")
        return StudyResult({}, 0.0, "no cluster")
    cores, config = cpu_cores(), _load_config(root)
    warnings: list[str] = []
    if scheduler is None:
        workers = workers or max(1, cores // (train_threads(config) or 1))
        threads = threads or threads_per_worker(cores, workers)
        warnings = thread_warnings(config, workers, cores)
    for text in warnings:
        echo(f"warning: {text}")
    logs.mkdir(parents=True, exist_ok=True)
    for stage in todo:
        (logs / log_name(stage)).write_text("")
    client, where = _open_client(scheduler, workers or 1, dashboard_address, wait_for_workers_s)
    try:
        use_gpu = _workers_have_gpus(client) if gpu is None else gpu
        if use_gpu and scheduler is None:
            raise ConfigError("gpu=True needs workers that declare GPUs (`dask worker --resources GPU=1`, then "
                              "--scheduler); a LocalCluster declares none (docs/cluster.md)")
        echo(f"study: {len(todo)} stages on {where}{', GPU stages ask for 1 GPU' if use_gpu else ''}; "
             f"logs in {logs}")
        results = _schedule(client, root, logs, deps, todo, threads, set(gpu_stages) if use_gpu else set(), echo)
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and scheduler is None:
            cluster.close()
    study = StudyResult(results, time.time() - start, where, warnings)
    echo(study.summary())
    return study
