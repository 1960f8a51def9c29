"""A tiny fine-tune logged to a real MLflow SQLite store: params, per-epoch metrics, tags, model, registry."""
import dataclasses
import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lesionseg.errors import TrackingError
from lesionseg.tracking.run import train_tracked
from conftest import cell_spec, ctx, source_spec
from lesionseg.tracking import store
from lesionseg.tracking.callback import MlflowCallback
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.training.fit import load_checkpoint as torch_load


def _metric_steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_pretrain_then_partial_finetune_logs_everything(tiny_project, tiny_params):
    root = tiny_project
    pre = train_tracked(source_spec(tiny_params, "ratlesnetv2", root), ctx(root), root / "models/pretrained/ratlesnetv2",
                        root / "checkpoints/pre", register_as="ratlesnetv2-rat", progress=False)
    assert (root / "models/pretrained/ratlesnetv2/model.pt").exists()
    spec = cell_spec(tiny_params, "ratlesnetv2", "partial", 4, "noaug", root)
    result = train_tracked(spec, ctx(root), root / "models/finetune/x", root / "checkpoints/x", register_as=TARGET_MODEL,
                           progress=False)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.info.run_name == "ratlesnetv2/partial-d5/n4/noaug/r0"
    assert client.get_experiment(run.info.experiment_id).name == "lesionseg-finetune"
    params, tags = run.data.params, run.data.tags
    assert params["strategy"] == "partial" and params["freeze_depth"] == "5" and params["sample_size"] == "4"
    assert params["train.lr"] == "0.015" and params["network.filters"] == "4"  # finetune.arms.partial.lr
    assert tags["repeat"] == "0" and tags["budget_steps"] == "4" and tags["converged"] in ("true", "false")
    assert tags["model"] == "ratlesnetv2" and tags["strategy"] == "partial" and tags["augment"] == "false"
    assert tags["frozen_blocks"] == "conv1,block1,block2,block3,bottleneck1"
    assert "matched" in tags["pretrained_load"]
    assert tags["dvc_stage"] == "finetune" and "git_commit" in tags and tags["git_dirty"] in ("true", "false", "unknown")
    for key in ("train_loss", "val_dice", "lr"):
        assert _metric_steps(client, run.info.run_id, key) == [2, 4]  # MLflow step = optimizer step
    assert run.data.metrics["epochs_run"] == 2
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "mouse-train-n4"
    assert "curves/history.tsv" in [a.path for a in client.list_artifacts(run.info.run_id, "curves")]
    # post-processing chosen on the run's validation cases travels with the weights and is logged
    chosen = client.download_artifacts(run.info.run_id, "postprocessing.json")
    decision = json.loads(Path(chosen).read_text())
    assert decision["chosen_on"] == "validation" and params["min_lesion_mm3"] == str(decision["min_lesion_mm3"])
    assert run.data.metrics["val_dice_postprocessed"] == max(decision["mean_val_score_by_min_lesion_mm3"].values())
    weights = torch_load(root / "models/finetune/x/model.pt")
    assert weights["postprocessing"] == {"head_only": True, "min_lesion_mm3": decision["min_lesion_mm3"],
                                         "chosen_on": "validation"}
    assert params["head_only"] == "True" and decision["head_only"] is True
    version = client.get_model_version(TARGET_MODEL, result["version"])
    assert version.tags["strategy"] == "partial" and version.tags["run_id"] == result["run_id"]
    assert version.tags["repeat"] == "0" and version.tags["converged"] == tags["converged"]
    assert result["repeat"] == 0 and result["converged"] == (tags["converged"] == "true")
    assert client.get_model_version("ratlesnetv2-rat", pre["version"]).tags["strategy"] == "scratch"
    # one logged model serves both uses: its network takes another volume size and a batch of two
    import torch

    network = mlflow.pyfunc.load_model(result["model_uri"]).unwrap_python_model().segmenter.model
    assert tuple(network(torch.zeros(2, 1, 16, 12, 8)).shape) == (2, 2, 16, 12, 8)
    assert len(client.search_logged_models([run.info.experiment_id],
                                           filter_string=f"source_run_id = '{run.info.run_id}'")) == 1


def test_resume_after_crash_continues_the_same_run(tiny_project, tiny_params, monkeypatch):
    root = tiny_project
    spec = cell_spec(tiny_params, "ratlesnetv2", "scratch", 4, "noaug", root)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=3))
    original = MlflowCallback.on_epoch_end

    def crash_at_two(self, epoch, metrics, state):
        original(self, epoch, metrics, state)
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(MlflowCallback, "on_epoch_end", crash_at_two)
    with pytest.raises(KeyboardInterrupt):
        train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/c", register_as=TARGET_MODEL,
                      progress=False)
    monkeypatch.setattr(MlflowCallback, "on_epoch_end", original)
    client = MlflowClient()
    crashed = client.search_runs([store.ensure_experiment("lesionseg-finetune", root)])
    assert len(crashed) == 1 and crashed[0].info.status == "FAILED"
    result = train_tracked(spec, ctx(root), root / "models/out", root / "checkpoints/c", register_as=TARGET_MODEL,
                           progress=False)
    assert result["run_id"] == crashed[0].info.run_id
    assert _metric_steps(client, result["run_id"], "val_dice") == [2, 4, 6]
    assert client.get_run(result["run_id"]).data.tags["resumed_from_epoch"] == "2"
    assert len(client.search_model_versions(f"name='{TARGET_MODEL}'")) == 1


def test_unreachable_tracking_server_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TrackingError) as err:
        store.connect(tmp_path)
    assert "http://127.0.0.1:9 is unreachable" in str(err.value) and "\n" not in str(err.value)


def test_import_weights_registers_the_published_checkpoint(tiny_project, capsys):
    from pathlib import Path

    from lesionseg.cli import main
    from lesionseg.tracking.import_weights import weights_sha256

    published = next((p / "shared/pretrained/ratlesnetv2-heterogeneous-model-1"
                      for p in Path(__file__).resolve().parents
                      if (p / "shared/pretrained/ratlesnetv2-heterogeneous-model-1").is_file()), None)
    if published is None:
        pytest.skip("the authors' checkpoint is not in a shared/pretrained folder beside the checkout")
    assert main(["import-weights", str(published), "--arch", "ratlesnetv2", "--project", str(tiny_project)]) == 0
    assert "114 matched, 0 missing" in capsys.readouterr().out
    version = MlflowClient().get_model_version("ratlesnetv2-rat", "1")
    assert version.tags["origin"] == "imported"
    assert version.tags["pretrained_sha256"] == weights_sha256(published)  # names the file exactly (64 hex digits)
    bad = tiny_project / "not-weights.pt"
    bad.write_bytes(b"junk")
    assert main(["import-weights", str(bad), "--project", str(tiny_project)]) == 1


def test_dataset_input_survives_a_concurrent_insert_of_the_same_dataset(tmp_path, monkeypatch):
    """Two runs logging one training set at once: the loser's unique-key violation (seen on PostgreSQL with two
    tuning workers) is retried, and the run still gets its dataset input; other errors are not retried."""
    import pandas as pd
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = mlflow.data.from_pandas(pd.DataFrame({"case_id": ["a", "b"]}), source=str(tmp_path), name="mouse-train-n2")
    real_log_input, calls = mlflow.log_input, []

    def lose_the_race_once(ds, context):
        calls.append(context)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                'BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"')
        real_log_input(ds, context=context)

    monkeypatch.setattr(mlflow, "log_input", lose_the_race_once)
    with mlflow.start_run() as run:
        store.log_dataset_input(dataset, context="training")
    assert len(calls) == 2
    inputs = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["mouse-train-n2"]

    def refused(ds, context):
        calls.append(context)
        raise mlflow.exceptions.MlflowException("PERMISSION_DENIED: no")

    monkeypatch.setattr(mlflow, "log_input", refused)
    calls.clear()
    with mlflow.start_run(), pytest.raises(mlflow.exceptions.MlflowException, match="PERMISSION_DENIED"):
        store.log_dataset_input(dataset, context="training")
    assert len(calls) == 1


def _cli_subprocess(script: str, root, env_uri: str) -> str:
    """stderr of ``python -c script`` in a fresh interpreter (MLflow warns once per process, at import)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri, "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.slow
def test_cli_hides_mlflows_type_hint_warning_and_no_other(tiny_project, tiny_params):
    """`lesionseg predict --model runs:/...` loads the logged pyfunc without MLflow's coloured type-hint paragraph;
    another warning (ours, or another of MLflow's coloured ones) still shows."""
    import torch

    from lesionseg.cli import MLFLOW_TYPE_HINT_WARNING
    from lesionseg.networks import build_network
    from lesionseg.training.fit import save_checkpoint
    from lesionseg.tracking.pyfunc import log_pyfunc_model

    root, grid = tiny_project, tiny_params["prepare"]["mouse"]
    network = tiny_params["networks"]["unet"]
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", {
        "model": build_network("unet", **network).state_dict(), "network": network, "arch": "unet",
        "roi_size": grid["shape"], "preprocessing": {"target_spacing": grid["target_spacing"], "shape": grid["shape"],
                                                     "crop": "head", "clip_percentiles": [0.5, 99.5]}})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        log_pyfunc_model(str(root / "model.pt"))
    scan = sorted((root / "data" / "raw" / "mouse" / "imagesTr").glob("*_0000.nii.gz"))[0]

    # without the CLI the warning is there: this test can fail
    assert MLFLOW_TYPE_HINT_WARNING in _cli_subprocess("import lesionseg.tracking.pyfunc", root, uri)
    stderr = _cli_subprocess(
        "import warnings\n"
        "from lesionseg.cli import main\n"
        f"assert main(['predict', {str(scan)!r}, '--model', 'runs:/{run.info.run_id}/model', '-o', 'out', "
        f"'--project', {str(root)!r}]) == 0\n"
        "warnings.warn('lesionseg-test: another warning')\n"
        "from mlflow.utils.warnings_utils import color_warning\n"
        "color_warning('lesionseg-test: another MLflow colour warning', stacklevel=1, color='yellow')\n",
        root, uri)
    assert (root / "out" / "volumes.csv").exists()
    assert MLFLOW_TYPE_HINT_WARNING not in stderr and "type hint" not in stderr.lower(), stderr
    assert "lesionseg-test: another warning" in stderr and "lesionseg-test: another MLflow colour warning" in stderr


def test_study_report_logs_keys_mlflow_would_refuse_under_legal_names(tiny_project, tmp_path):
    """The report's keys name comparisons and sizes ("n4+8+16", "a/b"); the study run still logs every number."""
    from lesionseg.tracking.scores import log_study_report

    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "README.md").write_text("report\n")
    headline = {"comparisons": {"full vs scratch primary n4+8+16": {"estimate": 0.05}}, "n4": {"a/b": 0.7}}
    run_id = log_study_report(report_dir, headline, tiny_project)
    logged = MlflowClient().get_run(run_id).data.metrics
    assert logged == {"comparisons.full vs scratch primary n4_8_16.estimate": 0.05, "n4.a_b": 0.7}


def _connect_after(barrier, project, uri, results):
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    barrier.wait()
    try:
        store.connect(project)
        results.put("ok")
    except TrackingError as err:
        results.put(str(err))


def test_stages_that_start_together_share_a_new_sqlite_store(tmp_path):
    """A parallel study's first stages touch a store that does not exist yet: each process's first access creates
    the schema, and only one may do so at a time (MLflow alone fails with "_alembic_tmp_experiments already exists")."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workers = [context.Process(target=_connect_after, args=(barrier, tmp_path, uri, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert sorted(results.get(timeout=5) for _ in workers) == ["ok"] * 4
