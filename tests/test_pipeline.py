"""The DVC pipeline and the MLflow Project, run for real on tiny params in a temporary git repository."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import ROOT, TINY_PARAMS

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _tiny_repo(root: Path, params: dict = TINY_PARAMS) -> dict[str, str]:
    """A git+DVC copy of the project with ``params`` at ``root`` (nothing run yet); returns its environment."""
    for name in ("dvc.yaml", "MLproject", "conda.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, root / name)
    for name in ("pipelines", "lesionseg", ".dvc"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp",
                                                                                 "config.local"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **GIT_ENV, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    for leaked in ("DVC_EXP_NAME", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "tiny"], root, env)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A git+DVC copy of the project with tiny params after one full `dvc repro` (the expensive part, once per
    module). Read-only: tests get their own copy through ``repo``."""
    root = tmp_path_factory.mktemp("built")
    env = _tiny_repo(root)
    first = _run(["dvc", "repro"], root, env, timeout=900)
    return root, env, first


@pytest.fixture
def repo(built, tmp_path):
    """This test's own copy of the built repo (git, DVC cache, dvc.lock, MLflow store), so that no test sees
    another's edits to params.yaml, extra runs or re-run stages, whatever the order. Runs logged before the
    copy keep their artifact location in the built repo, which only ever gains new run folders there."""
    source, env, first = built
    root = tmp_path / "repo"
    shutil.copytree(source, root, symlinks=True)
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return root, env, first


def test_repro_runs_every_stage_and_writes_outputs(built):
    root, _, output = built
    for stage in ("synthesize@rat", "synthesize@mouse", "synthesize@mouse-acceptance", "import-synthetic@rat",
                  "import-synthetic@mouse", "import-synthetic@mouse-acceptance", "prepare@source", "prepare@target", "split@target", "subsets",
                  "pretrain@ratlesnetv2", "finetune@ratlesnetv2-partial-4-noaug-0", "finetune@ratlesnetv2-partial-4-noaug-1",
                  "baseline@unet-4-aug-0", "tune@4-0",
                  "evaluate", "report"):
        assert f"Running stage '{stage}'" in output, stage
    headline = json.loads((root / "metrics" / "test.json").read_text())
    cells = {f"{c}-r{r}" for c in ("ratlesnetv2-scratch-n4-noaug", "ratlesnetv2-partial-n4-noaug",
                                   "unet-scratch-n4-aug") for r in (0, 1)}
    assert set(headline) == cells | {"tuned-n4-r0"}
    assert set(headline["tuned-n4-r0"]) >= {"dice_lesion", "sham_fp_rate", "detection_rate", "hd95_mm",
                                            "volume_bias_mm3", "volume_icc", "sham_fp_volume_mm3"}
    assert (root / "tuning" / "n4-r0" / "best.json").exists()
    assert list((root / "reports" / "overlays").glob("*/*.png"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    challenger = client.get_model_version_by_alias("lesionseg-mouse", "challenger")
    assert "dice_lesion" in challenger.tags and challenger.tags["repeat"] in ("0", "1")
    study = json.loads((root / "tuning" / "n4-r0" / "best.json").read_text())["study"]
    assert study.startswith("finetune-ratlesnetv2-n4-r0-")
    tune_runs = client.search_runs([client.get_experiment_by_name("lesionseg-tune").experiment_id],
                                   filter_string=f"tags.optuna_study = '{study}'")
    parents = [r for r in tune_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and "best_val_dice" in parents[0].data.metrics
    assert len(tune_runs) - 1 == 3, "three nested trial runs"
    assert (root / "reports" / "study" / "README.md").read_text().startswith("# lesionseg study report")
    assert json.loads((root / "reports" / "study" / "headline.json").read_text())["n_arms"] == 4
    summary = pd.read_csv(root / "reports" / "study" / "summary.csv")
    assert set(summary["n_repeats"]) == {1, 2} and set(summary.columns) >= {
        "model", "strategy", "augment", "sample_size", "dice_lesion_mean", "dice_lesion_sd_between_models",
        "sham_fp_rate", "sham_fp_volume_mm3_mean", "detection_rate", "hd95_mm_mean", "volume_icc_mean",
        "arm_volume_bias_mm3", "arm_volume_loa_low_mm3", "arm_volume_loa_high_mm3", "n_repeats", "n_converged"}
    assert set(summary.loc[summary["strategy"] == "tuned", "n_repeats"]) == {1}
    tests = pd.read_csv(root / "reports" / "study" / "paired_tests.csv")
    assert {"estimate", "ci_low_adj", "ci_high_adj", "p_value", "p_holm", "verdict"} <= set(tests.columns)
    assert len(tests) == 2 and set(tests["verdict"]) <= {"better", "worse", "equivalent", "inconclusive", "skipped"}


def test_predictions_on_disk_score_again_to_the_reports_per_case_dice(built, tmp_path):
    """predictions/<run>/CASE.nii.gz (a DVC output) holds each model's test segmentations on each raw scan's grid;
    `lesionseg evaluate --pred --ref` on them gives the evaluate stage's per-case table."""
    root, env, _ = built
    test_ids = sorted(json.loads((root / "data" / "splits" / "mouse.json").read_text())["test"])
    assert "predictions" in {o["path"] for o in yaml.safe_load((root / "dvc.lock").read_text())["stages"]["evaluate"]
                             ["outs"]}
    for run in ("ratlesnetv2-partial-n4-noaug-r0", "tuned-n4-r0"):
        assert sorted(p.name.removesuffix(".nii.gz") for p in (root / "predictions" / run).iterdir()) == test_ids
        _run(["lesionseg", "evaluate", "--pred", str(root / "predictions" / run), "--ref",
              str(root / "data" / "raw" / "mouse"), "-o", str(tmp_path / run)], root, env)
        again = pd.read_csv(tmp_path / run / "per_case.csv").set_index("case_id").sort_index()
        stage = pd.read_csv(root / "metrics" / "test" / f"{run}.csv").set_index("case_id").sort_index()
        pd.testing.assert_series_equal(again["dice"], stage["dice"])


def test_a_labs_study_declares_data_only_and_runs_nothing_synthetic(tmp_path):
    """A lab's params.yaml (a bruker target, published weights, no synthetic dataset): dvc.yaml untouched, the DAG
    has no synthesize, no synthetic import and no pretraining; its own import and prepare stages are there."""
    params = json.loads(json.dumps(TINY_PARAMS))
    params["datasets"] = {"synthetic": {}, "nifti": {},
                          "bruker": {"lab-mice": {"studies": "lab/studies", "masks": "lab/masks"}}}
    params["data"] = {"target": "lab-mice"}
    params["prepare"]["lab-mice"] = params["prepare"].pop("mouse")
    params["pretrain"]["models"] = []
    params["finetune"].update(source="lab/ratlesnetv2-model-1", source_network={"ratlesnetv2": {"filters": 32}})
    params["tune"]["repeats"] = []
    env = _tiny_repo(tmp_path, params)
    (tmp_path / "lab" / "studies").mkdir(parents=True)
    (tmp_path / "lab" / "masks").mkdir()
    (tmp_path / "lab" / "ratlesnetv2-model-1").write_bytes(b"weights")
    stages = _run(["dvc", "stage", "list", "--name-only"], tmp_path, env).split()
    assert not [s for s in stages if s.startswith(("synthesize", "import-synthetic", "pretrain", "prepare@source"))]
    assert {"import-bruker@lab-mice", "prepare@target", "split@target", "subsets", "evaluate"} <= set(stages)
    dag = _run(["dvc", "dag", "--dot"], tmp_path, env)
    assert '"import-bruker@lab-mice" -> "prepare@target"' in dag
    assert '"lab/ratlesnetv2-model-1.dvc"' not in dag  # a plain dependency, no stage
    finetune = [s for s in stages if s.startswith("finetune@")][0]
    assert f'"subsets" -> "{finetune}"' in dag


def test_a_fresh_repro_modifies_no_tracked_file_and_no_run_is_dirty(built):
    """dvc repro in a fresh checkout: no tracked file changes (DVC finds its outputs ignored and writes no
    .gitignore), what is new is only the run's records (dvc.lock, metrics, report) to commit, and every MLflow
    run says git_dirty=false."""
    root, env, _ = built
    modified = _run(["git", "status", "--porcelain", "--untracked-files=no"], root, env)
    assert modified == "", modified
    untracked = _run(["git", "status", "--porcelain", "--untracked-files=normal"], root, env).split()
    assert set(untracked) - {"??"} <= {"dvc.lock", "metrics/", "reports/"}, untracked
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert len(runs) > 10 and {r.data.tags.get("git_dirty") for r in runs if "git_commit" in r.data.tags} == {"false"}


def test_no_tracked_file_lies_inside_a_dvc_dependency_or_output(built):
    """So no git operation on tracked files (checkout, stash) can make a stage's input look changed."""
    root, env, _ = built
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    paths = {d["path"] for stage in lock.values() for d in stage.get("deps", []) + stage.get("outs", [])
             if d.get("nfiles") and not d["path"].startswith(("lesionseg/", "pipelines/"))}  # data/model folders
    assert {"models", "data/raw/mouse"} <= paths
    for path in sorted(paths):
        assert _run(["git", "ls-files", path], root, env) == "", f"git tracks files inside {path}"


def test_repro_log_has_no_progress_bars(built):
    """`dvc repro` into a pipe (CI, a log file): lines, not redrawn bars (tqdm's or MLflow's artifact bars)."""
    _, _, output = built
    assert "\r" not in output and "Downloading artifacts" not in output


def test_repro_log_has_no_experimental_warning_of_the_tuning_plots(built):
    """The tune stage draws Optuna's matplotlib plots, which Optuna marks experimental: our choice, not the
    user's, so the log does not show it (the plots themselves are drawn: they are in tuning/)."""
    root, _, output = built
    assert "ExperimentalWarning" not in output
    assert list((root / "tuning").rglob("optimization_history.png"))


def test_every_training_run_records_the_dvc_lock_hash_of_each_input(built):
    root, env, _ = built
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    recorded = {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("lesionseg-finetune").experiment_id],
                              filter_string="tags.dvc_stage = 'finetune'")
    partial = [r for r in runs if r.data.tags["strategy"] == "partial"]
    assert partial, "a partial fine-tuning run"
    for run in partial:
        inputs = ["data/processed/mouse", "data/splits/mouse.json", "data/splits/subsets",
                  "models/pretrained/ratlesnetv2"]
        tags = {p: run.data.tags.get(f"data_hash.{p}") for p in inputs}
        assert tags == {p: recorded[p] for p in inputs}, run.info.run_name
    # the tuned model names its source weights as the transfer cells do (tag, param, registry version tag)
    sha256 = {r.data.tags["pretrained_sha256"] for r in partial}
    assert len(sha256) == 1
    experiments = [e.experiment_id for e in client.search_experiments()]
    (tuned,) = client.search_runs(experiments, filter_string="tags.tuned = 'true'")
    assert {tuned.data.tags.get("pretrained_sha256"), tuned.data.params.get("pretrained_sha256")} == sha256


def test_second_repro_does_nothing(repo):
    root, env, _ = repo
    output = _run(["dvc", "repro"], root, env)
    assert "Running stage" not in output
    assert "up to date" in output


def _tracked(uri: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Run names per experiment and (registered model, version description) pairs in the store at ``uri``."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = {e.name: sorted(r.info.run_name for r in client.search_runs([e.experiment_id], max_results=1000))
            for e in client.search_experiments() if e.name != "Default"}
    versions = sorted((v.name, v.description) for m in client.search_registered_models()
                      for v in client.search_model_versions(f"name = '{m.name}'"))
    return runs, versions


def test_study_run_on_the_tiny_pipeline_matches_serial_repro(built, tmp_path):
    """`lesionseg study run --workers 2` on a fresh repo: every stage runs, DVC is clean, a second run and a
    plain `dvc repro` do nothing, dvc.lock has every stage, MLflow holds the runs and versions the serial
    `dvc repro` made, and two training stages ran at the same time."""
    serial_root, serial_env, _ = built
    root = tmp_path / "parallel"
    root.mkdir()
    env = _tiny_repo(root)
    output = _run(["lesionseg", "study", "run", "--workers", "2", "--project", str(root)], root, env, timeout=900)
    stages = _run(["dvc", "stage", "list", "--name-only"], root, env).split()
    assert not re.search(r"^(failed|not run)", output, re.M), output
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == set(stages)
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], root, env)
    assert "Running stage" not in _run(["dvc", "repro"], root, env)
    assert "every stage is up to date" in _run(["lesionseg", "study", "run", "--workers", "2", "--project", str(root)],
                                               root, env)
    assert _tracked(env["MLFLOW_TRACKING_URI"]) == _tracked(serial_env["MLFLOW_TRACKING_URI"])
    spans = [_log_span(log) for log in (root / "logs" / "study").glob("*.log")
             if log.name.startswith(("finetune@", "baseline@"))]  # from each stage log's start line to its last write
    # by more than the start line's 1 s resolution
    assert any(min(a[1], b[1]) - max(a[0], b[0]) > 1 for i, a in enumerate(spans) for b in spans[i + 1:]), spans


def _log_span(log: Path) -> tuple[float, float]:
    from datetime import datetime

    started = re.search(r"^# lesionseg study: attempt .* at (\S+): ", log.read_text(), re.M).group(1)
    return datetime.fromisoformat(started).timestamp(), log.stat().st_mtime


def test_worker_killed_mid_training_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    """Kill the Dask worker while pretraining runs: the retry continues the same MLflow run from the checkpoint,
    each epoch is logged once, and the pipeline ends clean."""
    import signal
    import threading
    import time

    from lesionseg.cluster import run_study

    params = yaml.safe_load(yaml.safe_dump(TINY_PARAMS))
    params["pretrain"]["train"] = {"epochs": 30, "patience_steps": 1000}
    root = tmp_path / "repo"
    root.mkdir()
    env = _tiny_repo(root, params)
    _run(["dvc", "repro", "subsets"], root, env)  # the data stages, serially
    checkpoint = root / "checkpoints" / "pretrained" / "ratlesnetv2" / "last.pt"
    log = root / "logs" / "study" / "pretrain@ratlesnetv2.log"
    killed: list[int] = []

    def kill_the_worker_after_the_first_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            match = re.search(r"worker pid (\d+)", log.read_text()) if log.exists() else None
            if match and checkpoint.exists():
                killed.append(int(match.group(1)))
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_after_the_first_checkpoint)
    killer.start()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = run_study(root, workers=1, dashboard_address=None, echo=lambda line: None)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        killer.join()
    assert killed, "pretraining never wrote a checkpoint"
    stage = result.stages["pretrain@ratlesnetv2"]
    assert result.ok and stage.state == "ran" and stage.attempts == 2, result.stages
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("lesionseg-pretrain").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_dice")]
    assert steps == sorted(set(steps)) and len(steps) == 30, steps  # every epoch once: resumed, not restarted
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], root, env)


def _stale(root: Path, env: dict[str, str]) -> set[str]:
    out = subprocess.run(["dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout or "{}"))


def test_a_new_sample_size_or_arm_lr_reruns_no_existing_cell(repo):
    """Adding a sample size re-runs the cheap subsets stage and adds new cells; existing cells stay up to date
    (their own subset file is unchanged). One arm's learning rate re-runs that arm only."""
    root, env, _ = repo
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["subsets"]["sizes"] = [4, 6, 7]
    params["finetune"]["sample_sizes"] = [4, 6]
    params["finetune"]["arms"]["scratch"]["lr"] = 0.03
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        before = _stale(root, env)
        _run(["dvc", "repro", "subsets"], root, env)
        after = _stale(root, env)
    finally:
        (root / "params.yaml").write_text(original)
    assert "subsets" in before
    existing = {s for s in after if s.startswith(("finetune@", "scratch@", "baseline@", "tune@")) and "-4-" in s}
    assert existing == {"scratch@ratlesnetv2-4-noaug-0", "scratch@ratlesnetv2-4-noaug-1",
                        "baseline@unet-4-aug-0", "baseline@unet-4-aug-1"}, after
    assert {"finetune@ratlesnetv2-partial-6-noaug-0", "scratch@ratlesnetv2-6-noaug-1"} <= after
    _run(["dvc", "repro", "subsets"], root, env)  # back to the original subsets: no cell is stale
    assert not {s for s in _stale(root, env) if "@" in s}


def test_changing_one_param_reruns_only_its_dependents(repo):
    root, env, _ = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["n_overlays"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run(["dvc", "status"], root, env)
    assert "evaluate" in output
    for stage in ("synthesize@", "prepare@", "pretrain@", "finetune@", "tune@"):
        assert stage not in output, stage


def test_mlflow_project_entry_point_logs_into_its_run(repo):
    root, env, _ = repo
    _run(["mlflow", "run", ".", "-e", "finetune", "-P", "model=ratlesnetv2", "-P", "strategy=scratch",
          "-P", "sample_size=4", "-P", "repeat=1", "--env-manager", "local", "--experiment-name", "lesionseg-finetune"], root, env)
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesionseg-finetune")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mlflow.project.entryPoint` = 'finetune'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "scratch" and "val_dice" in run.data.metrics


def _lock_has(root: Path, stage: str, epochs: int) -> bool:
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    entry = (lock or {}).get("stages", {}).get(stage, {})
    return entry.get("params", {}).get("params.yaml", {}).get("train", {}).get("epochs") == epochs


def test_interrupted_repro_resumes_without_redoing_finished_stages(repo):
    """Kill `dvc repro` after pretraining finished, run it again: pretraining is not redone."""
    import signal
    import time

    root, env, _ = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3  # invalidates every training stage
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not _lock_has(root, "pretrain@ratlesnetv2", 3) and time.time() < deadline:
        assert proc.poll() is None, "dvc repro ended before it could be interrupted"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    output = _run(["dvc", "repro"], root, env, timeout=900)
    assert "Running stage 'pretrain@ratlesnetv2'" not in output
    assert "Running stage 'evaluate'" in output
    assert _lock_has(root, "finetune@ratlesnetv2-partial-4-noaug-0", 3)


def test_a_training_stage_run_warm_gives_the_cold_result_and_ends_its_mlflow_run(repo):
    """params.yaml runtime.warm_start: the first run of a stage is cold and starts the project's warm server; a run
    after it works in a worker of that server (its stage line says so) and trains the same model, and its MLflow
    run ends FINISHED with a registered version, as a cold run's does."""
    root, env, _ = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runtime"] = {"warm_start": True, "idle_seconds": 30}  # outlasts dvc's own start
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = "finetune@ratlesnetv2-partial-4-noaug-0"
    lines = []
    for _ in range(30):
        output = _run(["dvc", "repro", "--force", "--single-item", stage], root, env)
        lines.append(next(line for line in output.splitlines() if line.startswith("finetune:")))
        if "warm start" in lines[-1]:
            break
    assert "warm start" not in lines[0] and "warm start" in lines[-1], lines
    dice = [re.search(r"val Dice ([0-9.]+)", line).group(1) for line in (lines[0], lines[-1])]
    assert dice[0] == dice[1], lines
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("lesionseg-finetune").experiment_id], max_results=1,
                                order_by=["attributes.start_time DESC"])  # the warm stage's run
    assert f"finetune: {run.info.run_name} " in lines[-1] and run.info.status == "FINISHED"
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert len(versions) == 1
