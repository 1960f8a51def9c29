"""The team stack for real, on 127.0.0.1: `mlflow server` (PostgreSQL store, S3 artifacts proxied by the server)
started by deploy/team-stack.sh, moto as S3, a DVC S3 remote, and Optuna workers sharing a PostgreSQL study.

Clients (this process, the tuning workers, dvc push/pull) run with no S3 keys in their environment.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import TINY_PARAMS, cell_spec, ctx, tune_cfg
from lesionseg.tracking.refusals import missing_permission
from stack import (AWS_KEY_ID, AWS_SECRET, CLIENT_ENV_DROP, PG_PORT, SCRIPT, SECRETS, client_env, free_port,
                   listening_addresses, mlflow_server, owner_only_file, pg, run, s3, script,  # noqa: F401 (fixtures)
                   sha256_tree)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(mlflow_server):
    """This process as a client of the server: MLFLOW_TRACKING_URI only, no S3 keys, endpoint or profile."""
    with pytest.MonkeyPatch.context() as mp:
        for name in (*CLIENT_ENV_DROP, "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        for name, value in client_env({}).items():
            if name.startswith("AWS_"):
                mp.setenv(name, value)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        # store.connect() sets the registry URI only for SQLite; an earlier test module may have left one.
        mlflow.set_registry_uri(mlflow_server.url)
        yield MlflowClient(mlflow_server.url, mlflow_server.url)
        # leave no global URI behind for later modules (MLflow has no public "unset")
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        registry_utils._registry_uri = None
        tracking_utils._tracking_uri = None


def _project(tiny_data: Path, root: Path) -> tuple[Path, dict]:
    shutil.copytree(tiny_data / "data", root / "data")
    shutil.copytree(tiny_data / "models", root / "models")
    params = copy.deepcopy(TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root, params


@pytest.fixture(scope="module")
def finetuned(client, tiny_data, tmp_path_factory):
    """A tiny UNet fine-tune (2 epochs), logged to the server and registered as lesionseg-mouse."""
    from lesionseg.tracking.registry import TARGET_MODEL
    from lesionseg.tracking.run import train_tracked

    root, params = _project(tiny_data, tmp_path_factory.mktemp("finetune-project"))
    assert not any(os.environ.get(k) for k in CLIENT_ENV_DROP), "the client must hold no S3 settings"
    spec = cell_spec(params, "unet", "scratch", 4, "noaug", root)
    return train_tracked(spec, ctx(root), root / "models" / "finetune" / "a", root / "checkpoints" / "a",
                         register_as=TARGET_MODEL, progress=False)


@pytest.fixture(scope="module")
def tuned(client, mlflow_server, tiny_data, tmp_path_factory):
    """Two worker processes on one Optuna study in PostgreSQL (the database the script's init created)."""
    from lesionseg.tuning import tune

    root, params = _project(tiny_data, tmp_path_factory.mktemp("tune-project"))
    cfg = dataclasses.replace(tune_cfg(params), storage=mlflow_server.optuna_url, n_trials=4, pruner="none")
    base = cell_spec(params, "ratlesnetv2", "full", 4, "noaug", root, stage="tune")
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=2))
    return tune(base, cfg, ctx(root), workers=2)


def test_finetune_logs_to_the_server_and_artifacts_land_in_the_bucket(finetuned, client, s3):
    run_ = client.get_run(finetuned["run_id"])
    assert run_.info.status == "FINISHED"
    assert run_.info.artifact_uri.startswith("mlflow-artifacts:/"), "proxied: the client never sees s3://"
    assert run_.data.params["model"] == "unet" and run_.data.params["strategy"] == "scratch"
    assert run_.data.params["sample_size"] == "4" and run_.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "val_dice")] == [2, 4]  # optimizer steps
    assert run_.data.metrics["best_val_dice"] == pytest.approx(finetuned["best_val_dice"])
    assert run_.data.tags["registered_version"] == f"lesionseg-mouse/{finetuned['version']}"

    experiment_id = run_.info.experiment_id
    keys = s3.keys("mlflow/")
    assert f"mlflow/{experiment_id}/{run_.info.run_id}/artifacts/curves/history.tsv" in keys
    model_id = finetuned["model_uri"].split("/")[-1]
    assert f"mlflow/{experiment_id}/models/{model_id}/artifacts/MLmodel" in keys, (model_id, keys)
    assert s3.read(f"mlflow/{experiment_id}/{run_.info.run_id}/artifacts/curves/history.tsv").startswith(b"epoch")

    version = client.get_model_version("lesionseg-mouse", finetuned["version"])
    assert version.status == "READY" and version.run_id == run_.info.run_id
    assert version.source == finetuned["model_uri"]
    # downloaded back through the server, still without S3 keys
    model = mlflow.pyfunc.load_model(f"models:/lesionseg-mouse/{finetuned['version']}")
    mask = model.predict({"volume": np.random.default_rng(0).random((16, 8, 16)).astype(np.float32),
                          "spacing": [0.8, 1.0, 0.8]})
    assert mask.shape == (16, 8, 16)


def test_dvc_s3_remote_push_clone_pull_round_trip(s3, tmp_path):
    from lesionseg.data.synthetic import synthesize_dataset

    env = client_env()
    origin = tmp_path / "origin"
    origin.mkdir()
    run(["git", "init", "-q"], origin, env)
    run(["dvc", "init", "-q"], origin, env)
    synthesize_dataset("mouse", 3, 0, origin / "data" / "mouse", matrix=32, n_slices=6)
    run(["dvc", "add", "data/mouse"], origin, env)
    # the lab's command, with the keys in the environment of that one command only
    setup_env = {**env, "LESIONSEG_BUCKET": s3.bucket, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
                 "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    script("dvc-remote", env=setup_env, cwd=origin)
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-qm", "data"], origin, env)
    run(["dvc", "push"], origin, env)  # no AWS_* here: the keys come from .dvc/config.local
    assert [k for k in s3.keys("dvc/") if k.startswith("dvc/files/md5/")], "pushed objects are in the bucket"

    tracked = (origin / ".dvc" / "config").read_text()
    assert f"s3://{s3.bucket}/dvc" in tracked and s3.endpoint in tracked
    assert AWS_SECRET not in tracked and AWS_KEY_ID not in tracked
    assert AWS_SECRET in (origin / ".dvc" / "config.local").read_text()
    assert run(["git", "check-ignore", ".dvc/config.local"], origin, env).stdout.strip() == ".dvc/config.local"
    assert "config.local" not in run(["git", "ls-files"], origin, env).stdout
    history = run(["git", "log", "-p", "--all"], origin, env).stdout
    assert AWS_SECRET not in history and AWS_KEY_ID not in history

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "data" / "mouse").exists()
    script("dvc-remote", env=setup_env, cwd=clone)  # the same local config on the new machine
    assert run(["git", "status", "--porcelain"], clone, env).stdout == "", "re-running it leaves git clean"
    run(["dvc", "pull"], clone, env)
    expected = sha256_tree(origin / "data" / "mouse")
    assert len(expected) >= 7 and sha256_tree(clone / "data" / "mouse") == expected


def test_two_workers_share_one_postgres_study(tuned, client, pg, mlflow_server):
    from lesionseg.tuning import PARENT_RUN_ATTR, WORKER_ATTR

    trials = tuned.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4 and len(trials) <= 6, [t.state for t in trials]
    assert len({t.number for t in trials}) == len(trials), "no duplicated trial numbers"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    workers = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers) == 2, f"both workers ran trials: {workers}"
    # the study lives in the PostgreSQL database, not in a journal file
    rows = pg.query(mlflow_server.optuna_db, "SELECT count(*) FROM trials t JOIN studies s USING (study_id) "
                                             f"WHERE s.study_name = '{tuned.study_name}'")
    assert rows == [(len(trials),)]
    parent = client.get_run(tuned.user_attrs[PARENT_RUN_ATTR])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == sorted(t.number for t in trials)


def test_study_parent_run_records_the_rdb_storage_kind(tuned, client):
    from lesionseg.tuning import PARENT_RUN_ATTR

    assert client.get_run(tuned.user_attrs[PARENT_RUN_ATTR]).data.params["storage_kind"] == "rdb"


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_no_secret_is_logged_anywhere(finetuned, tuned, client, s3, mlflow_server):
    seen: list[tuple[str, str]] = []  # (where, text)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    for exp in experiments:
        seen.append((f"experiment {exp.name}", repr((exp.artifact_location, exp.tags))))
        for run_ in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            where = f"run {run_.info.run_id}"
            seen.append((f"{where} params", repr(run_.data.params)))
            seen.append((f"{where} tags", repr(run_.data.tags)))
            seen.append((f"{where} inputs", repr([(d.dataset.source, d.dataset.profile, d.dataset.schema)
                                                  for d in run_.inputs.dataset_inputs])))
        for logged in client.search_logged_models([exp.experiment_id]):
            seen.append((f"logged model {logged.model_id}", repr((logged.params, logged.tags))))
    for model in client.search_registered_models():
        seen.append((f"registered model {model.name}", repr((model.tags, model.description, model.aliases))))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            seen.append((f"{model.name} v{version.version}", repr((version.tags, version.description, version.source))))
    keys = s3.keys()
    assert len(keys) > 10
    for key in keys:  # every artifact the server stored, text or not
        seen.append((f"s3://{s3.bucket}/{key}", key + "\n" + s3.read(key).decode("latin-1")))
    seen.append(("team-stack.sh up output", mlflow_server.up_output.stdout + mlflow_server.up_output.stderr))
    seen.append(("mlflow server log", mlflow_server.log()))
    leaks = [(where, _leaks(text)) for where, text in seen if _leaks(text)]
    assert not leaks, leaks
    assert len([w for w, _ in seen if w.endswith(" params")]) >= 6  # the fine-tune, the study and its 4+ trials


def test_server_binds_loopback_only(mlflow_server):
    assert listening_addresses(mlflow_server.port) == {"127.0.0.1"}
    status = script("status", env=mlflow_server.env)
    assert "running" in status.stderr
    printed = script("env", env=mlflow_server.env).stdout
    assert f"export MLFLOW_TRACKING_URI={mlflow_server.url}\n" in printed
    assert f"@127.0.0.1:{PG_PORT}/{mlflow_server.optuna_db}" in printed and not _leaks(printed)


def test_script_parses_and_refuses_missing_settings(tmp_path):
    run(["bash", "-n", str(SCRIPT)])
    env = {k: v for k, v in client_env().items() if k != "LESIONSEG_BUCKET"}
    out = run(["bash", str(SCRIPT), "init"], env=env, check=False)
    assert out.returncode != 0 and "LESIONSEG_BUCKET" in out.stderr
    out = run(["bash", str(SCRIPT), "dvc-remote", "--bucket", "b"], cwd=tmp_path, env=env, check=False)
    assert out.returncode != 0 and "not a DVC repository" in out.stderr
    same = {**env, "MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db", "OPTUNA_STORAGE": "postgresql://u@h/db"}
    out = run(["bash", str(SCRIPT), "init", "--bucket", "b"], env=same, check=False)
    assert out.returncode != 0 and "two databases" in out.stderr


def test_server_without_auth_answers_without_credentials(mlflow_server):
    from urllib.request import build_opener, ProxyHandler

    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert build_opener(ProxyHandler({})).open(search, timeout=30).status == 200  # loopback: no logins by default
    assert not (mlflow_server.state_dir / f"basic_auth-{mlflow_server.port}.ini").exists()
    assert "MLFLOW_TRACKING_USERNAME" not in script("env", env=mlflow_server.env).stdout
    with pytest.MonkeyPatch.context() as mp:  # no auth API there: nothing to ask before a long job
        mp.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        assert missing_permission("moving @champion", "registered_model", "lesionseg-mouse", "MANAGE",
                                  mlflow_server.url) is None


def test_script_refuses_passwords_on_the_command_line_and_readable_files(tmp_path):
    env = {**client_env(), "LESIONSEG_BUCKET": "b", "STATE_DIR": str(tmp_path / "state"), "PORT": str(free_port())}
    for option in ("--password", "--admin-password"):
        out = run(["bash", str(SCRIPT), "user", "add", "bob", "--role", "reader", option, "pw-123456789012"],
                  env=env, check=False)
        assert out.returncode != 0 and "never go on the command line" in out.stderr
        assert "pw-123456789012" not in out.stderr
    shared = tmp_path / "shared-password"
    shared.write_text("pw-123456789012\n")
    shared.chmod(0o644)
    out = run(["bash", str(SCRIPT), "user", "add", "bob", "--role", "reader", "--password-file", str(shared)],
              env=env, check=False)
    assert out.returncode != 0 and "lets others read it" in out.stderr and "chmod 600" in out.stderr
    out = run(["bash", str(SCRIPT), "user", "add", "bob", "--role", "admin"], env=env, check=False)
    assert out.returncode != 0 and "--role reader|trainer|maintainer" in out.stderr
    out = run(["bash", str(SCRIPT), "user", "add", "--role", "reader"], env=env, check=False)
    assert out.returncode != 0 and "needs a NAME" in out.stderr


def test_binding_beyond_loopback_turns_logins_on(tmp_path):
    """HOST=0.0.0.0 without an admin password: `up` stops before starting anything; --no-auth is explicit."""
    env = {**client_env(), "LESIONSEG_BUCKET": "b", "STATE_DIR": str(tmp_path / "state"), "PORT": str(free_port()),
           "HOST": "0.0.0.0"}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE"):
        env.pop(name, None)
    out = run(["bash", str(SCRIPT), "up"], env=env, check=False)
    assert out.returncode != 0 and "MLflow logins need the admin's password" in out.stderr
    assert not (tmp_path / "state").exists(), "nothing was started"
    printed = run(["bash", str(SCRIPT), "env"], env=env).stdout
    assert "MLFLOW_TRACKING_USERNAME" in printed
    assert "MLFLOW_TRACKING_USERNAME" not in run(["bash", str(SCRIPT), "env", "--no-auth"], env=env).stdout
    env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"] = str(owner_only_file(tmp_path / "admin", "x" * 16))
    out = run(["bash", str(SCRIPT), "up", "--auth", "--auth-db-uri", "postgresql+psycopg2://u@h/same",
               "--backend-store-uri", "postgresql+psycopg2://u@h/same"], env=env, check=False)
    assert out.returncode != 0 and "need a database of their own" in out.stderr
