"""Logins on the team stack: `deploy/team-stack.sh up --auth`, `user add`, roles, and one-line refusals.

Unit tests of lesionseg.tracking.{auth_server, refusals, access_admin} first; then a real `mlflow server` with MLflow's basic-auth app on
127.0.0.1 (PostgreSQL, moto's S3), a reader, a trainer and a maintainer, each through MLflow's client or the
lesionseg command with only their own credentials.
"""
from __future__ import annotations

import base64
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED
from mlflow.tracking import MlflowClient

from conftest import TINY_PARAMS, cell_spec, ctx
from lesionseg.tracking.access_admin import PROJECT_EXPERIMENTS, PROJECT_MODELS, role_grants
from lesionseg.tracking.auth_server import Reserved, reserved_action
from lesionseg.tracking.refusals import ROLE_PERMISSION, missing_permission, mlflow_role, permission_error
from stack import (ADMIN_PASSWORD, AUTH_SECRETS, CLIENT_ENV_DROP, ROOT, USER_PASSWORDS, client_env, command_lines,
                   run)
from stack import auth_server, pg, s3, script  # noqa: F401 (fixtures)

URL = "http://mlflow.lab:5000"
CHAMPION_REFUSED = ("MLflow at {url} refused user '{user}' (403 PERMISSION_DENIED): moving @champion on registered "
                    "model 'lesionseg-mouse' needs MANAGE; ask the server admin to run "
                    "`deploy/team-stack.sh user add {user} --role maintainer`")


# ------------------------------------------------------------------------------------------------- unit
@pytest.mark.parametrize("path, method, params, expected", [
    ("/api/2.0/mlflow/registered-models/alias", "POST", {"name": "m", "alias": "champion", "version": "3"},
     Reserved("moving @champion on registered model 'm'", "MANAGE", "registered_model", "m")),
    ("/ajax-api/2.0/mlflow/registered-models/alias", "POST", {"name": "m", "alias": "champion"},
     Reserved("moving @champion on registered model 'm'", "MANAGE", "registered_model", "m")),
    ("/api/2.0/mlflow/registered-models/alias", "POST", {"name": "m", "alias": "Champion"},
     Reserved("moving @Champion on registered model 'm'", "MANAGE", "registered_model", "m")),
    ("/api/2.0/mlflow/registered-models/alias", "POST", {"name": "m", "alias": "challenger"}, None),
    ("/api/2.0/mlflow/registered-models/alias", "GET", {"name": "m", "alias": "champion"}, None),
    ("/api/2.0/mlflow/registered-models/alias", "DELETE", {"name": "m", "alias": "challenger"},
     Reserved("removing @challenger from registered model 'm'", "MANAGE", "registered_model", "m")),
    ("/api/2.0/mlflow/registered-models/rename", "POST", {"name": "m", "new_name": "n"},
     Reserved("renaming registered model 'm'", "MANAGE", "registered_model", "m")),
    ("/api/2.0/mlflow/experiments/update", "POST", {"experiment_id": "4", "new_name": "x"},
     Reserved("renaming experiment 4", "MANAGE", "experiment", "4")),
    ("/api/2.0/mlflow/experiments/create", "POST", {"name": "mine"}, Reserved("creating experiment 'mine'", "EDIT")),
    ("/api/2.0/mlflow/registered-models/create", "POST", {"name": "m"},
     Reserved("creating registered model 'm'", "EDIT")),
    ("/api/2.0/mlflow/runs/create", "POST", {"experiment_id": "1"}, None),
    ("/health", "GET", {}, None),
])
def test_reserved_actions(path, method, params, expected):
    assert reserved_action(path, method, params) == expected


def test_refusal_names_the_role_that_grants_it():
    assert Reserved("moving @champion on registered model 'm'", "MANAGE").refusal() == \
        "moving @champion on registered model 'm' needs MANAGE (role maintainer)"
    assert Reserved("creating experiment 'x'", "EDIT").refusal() == "creating experiment 'x' needs EDIT (role trainer)"


def test_roles_grant_one_permission_on_every_project_resource():
    ids = {name: str(i) for i, name in enumerate(PROJECT_EXPERIMENTS, start=1)}
    grants = role_grants(ids, PROJECT_MODELS, "trainer")
    assert grants == {**{("experiment", str(i)): "EDIT" for i in range(1, 5)},
                      ("registered_model", "ratlesnetv2-rat"): "EDIT", ("registered_model", "lesionseg-mouse"): "EDIT"}
    assert ROLE_PERMISSION == {"reader": "READ", "trainer": "EDIT", "maintainer": "MANAGE"}
    assert mlflow_role("reader") == "lesionseg-reader"


def test_project_resources_are_the_ones_the_code_uses():
    from lesionseg.tracking.registry import TARGET_MODEL
    from lesionseg.tracking.store import EXPERIMENTS

    assert set(EXPERIMENTS.values()) == set(PROJECT_EXPERIMENTS)
    assert TARGET_MODEL in PROJECT_MODELS and "ratlesnetv2-rat" in PROJECT_MODELS  # import-weights' default name


def _stock(status_code: int, endpoint: str) -> MlflowException:
    """What MLflow's client raises for a plain-text 401/403 (mlflow.utils.rest_utils.verify_rest_response)."""
    code = UNAUTHENTICATED if status_code == 401 else PERMISSION_DENIED
    return MlflowException(f"API request to endpoint {endpoint} failed with error code {status_code} != 200. "
                           "Response body: 'Permission denied'", error_code=code)


@pytest.mark.parametrize("endpoint, says", [
    ("/api/2.0/mlflow/runs/create", "creating a run in an experiment needs EDIT"),
    ("/api/2.0/mlflow/runs/log-batch", "logging to a run in an experiment needs EDIT"),
    ("/api/2.0/mlflow/logged-models", "logging a model in an experiment needs EDIT"),
    ("/api/2.0/mlflow/model-versions/create", "registering a version of a registered model needs EDIT"),
    ("/api/2.0/mlflow/registered-models/alias", "setting an alias on a registered model needs EDIT"),
    ("/api/2.0/mlflow/runs/delete", "deleting or restoring an experiment needs MANAGE"),
    ("/api/2.0/mlflow/model-versions/delete", "deleting or restoring a registered model needs MANAGE"),
    ("/api/2.0/mlflow/experiments/get-by-name", "reading an experiment (/api/2.0/mlflow/experiments/get-by-name) "
                                                "needs READ"),
])
def test_stock_refusals_become_one_line(endpoint, says):
    role = {"READ": "reader", "EDIT": "trainer", "MANAGE": "maintainer"}[says.split()[-1]]
    line = permission_error(_stock(403, endpoint), URL, "bob")
    assert line == (f"MLflow at {URL} refused user 'bob' (403 PERMISSION_DENIED): {says}; ask the server admin "
                    f"to run `deploy/team-stack.sh user add bob --role {role}`")


def test_the_servers_own_refusal_is_used_as_it_is():
    message = "moving @champion on registered model 'lesionseg-mouse' needs MANAGE (role maintainer)"
    err = RestException({"error_code": "PERMISSION_DENIED", "message": message})
    assert permission_error(err, URL, "bob") == CHAMPION_REFUSED.format(url=URL, user="bob")
    # what the server plugin writes is what the client module reads back (two modules, one wording)
    rule = reserved_action("/api/2.0/mlflow/registered-models/alias", "POST",
                           {"name": "lesionseg-mouse", "alias": "champion"})
    served = RestException({"error_code": "PERMISSION_DENIED", "message": rule.refusal()})
    assert permission_error(served, URL, "bob") == CHAMPION_REFUSED.format(url=URL, user="bob")


def test_stages_import_the_refusals_and_neither_the_server_plugin_nor_the_admin_cli():
    from test_architecture import import_closure

    for entry in sorted((ROOT / "pipelines").glob("*.py")):
        closure = import_closure(entry)
        assert not {"lesionseg/tracking/auth_server.py", "lesionseg/tracking/access_admin.py"} & closure, entry
    assert "lesionseg/tracking/refusals.py" in import_closure(ROOT / "pipelines" / "_stage.py")
    assert "lesionseg/tracking/refusals.py" in import_closure(ROOT / "lesionseg" / "cli.py")


def test_401_says_how_to_log_in():
    assert permission_error(_stock(401, "/api/2.0/mlflow/experiments/search"), URL, "") == (
        f"MLflow at {URL} needs a login (401 UNAUTHENTICATED): export MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD; the server admin creates accounts with "
        "`deploy/team-stack.sh user add NAME --role reader|trainer|maintainer`")
    assert permission_error(_stock(401, "/api/2.0/mlflow/runs/get"), URL, "bob") == (
        f"MLflow at {URL} refused the login of user 'bob' (401 UNAUTHENTICATED): wrong MLFLOW_TRACKING_PASSWORD "
        "or no such user; ask the server admin to run `deploy/team-stack.sh user passwd bob` "
        "(or `deploy/team-stack.sh user add bob --role ...`)")


def test_artifact_uploads_chained_errors_and_others():
    response = requests.Response()
    response.status_code, response.url = 403, f"{URL}/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.txt"
    response.request = requests.Request("PUT", response.url).prepare()
    line = permission_error(requests.HTTPError("403", response=response), URL, "bob")
    assert "uploading artifacts to an experiment needs EDIT" in line and line.endswith("--role trainer`")
    try:
        try:
            raise _stock(403, "/api/2.0/mlflow/runs/create")
        except MlflowException as err:
            raise RuntimeError("training failed") from err
    except RuntimeError as chained:
        assert "creating a run in an experiment needs EDIT" in permission_error(chained, URL, "bob")
    assert permission_error(ValueError("not an MLflow refusal"), URL, "bob") is None
    assert permission_error(MlflowException("RESOURCE_DOES_NOT_EXIST"), URL, "bob") is None


def test_no_password_in_the_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "bob-SECRET-pw-123")
    line = permission_error(_stock(403, "/api/2.0/mlflow/runs/create"), "https://bob:bob-SECRET-pw-123@mlflow.lab")
    assert "bob-SECRET-pw-123" not in line and "user 'bob'" in line and "https://mlflow.lab" in line


def test_missing_permission_asks_nothing_without_a_login(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert missing_permission("moving @champion", "registered_model", "m", "MANAGE", "http://127.0.0.1:9") is None
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert missing_permission("moving @champion", "registered_model", "m", "MANAGE", "sqlite:///x.db") is None


# ---------------------------------------------------------------------------------------- real server
@pytest.fixture
def as_user(auth_server, monkeypatch):
    """Make this process a client of the auth server as one user (no S3 keys); returns a switch."""
    for name in (*CLIENT_ENV_DROP, "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    mlflow.set_tracking_uri(auth_server.url)
    mlflow.set_registry_uri(auth_server.url)

    def switch(role: str | None) -> MlflowClient:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        for name, value in (auth_server.credentials(role) if role else {}).items():
            monkeypatch.setenv(name, value)
        return MlflowClient(auth_server.url, auth_server.url)

    yield switch
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    registry_utils._registry_uri = None
    tracking_utils._tracking_uri = None


def _refused(call) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def trainer_version(auth_server, tiny_data, tmp_path_factory):
    """A real lesionseg fine-tune (tiny UNet, 2 epochs) by the trainer, registered as lesionseg-mouse."""
    from lesionseg.tracking.registry import TARGET_MODEL
    from lesionseg.tracking.run import train_tracked

    root = tmp_path_factory.mktemp("trainer-project")
    shutil.copytree(tiny_data / "data", root / "data")
    shutil.copytree(tiny_data / "models", root / "models")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        for name in (*CLIENT_ENV_DROP, "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        for name, value in {"MLFLOW_TRACKING_URI": auth_server.url, **auth_server.credentials("trainer")}.items():
            mp.setenv(name, value)
        spec = cell_spec(TINY_PARAMS, "unet", "scratch", 4, "noaug", root)
        result = train_tracked(spec, ctx(root), root / "models" / "finetune" / "t", root / "checkpoints" / "t",
                               register_as=TARGET_MODEL, progress=False)
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    registry_utils._registry_uri = None
    tracking_utils._tracking_uri = None
    return root, result


@pytest.mark.integration
def test_no_credentials_get_401_the_admin_gets_in(auth_server):
    search = f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _get(f"{auth_server.url}/health") == 200
    assert _get(search) == 401
    assert _get(search, "admin", "wrong-password-123") == 401
    assert _get(search, "admin", ADMIN_PASSWORD) == 200
    assert _get(search, "reader", USER_PASSWORDS["reader"]) == 200


@pytest.mark.integration
def test_up_made_the_project_resources_and_roles(auth_server, as_user):
    from mlflow.server.auth.client import AuthServiceClient

    admin = as_user("admin")
    experiments = {e.name: e.experiment_id for e in admin.search_experiments()}
    assert set(PROJECT_EXPERIMENTS) <= set(experiments)
    assert {m.name for m in admin.search_registered_models()} >= set(PROJECT_MODELS)
    auth = AuthServiceClient(auth_server.url)
    roles = {r.name: r for r in auth.list_roles("default")}
    for role, permission in ROLE_PERMISSION.items():
        held = {(p.resource_type, p.resource_pattern): p.permission
                for p in auth.list_role_permissions(roles[mlflow_role(role)].id)}
        assert held == role_grants({n: experiments[n] for n in PROJECT_EXPERIMENTS}, PROJECT_MODELS, role)
        assert [r.name for r in auth.list_user_roles(auth_server.users[role])] == [mlflow_role(role)]
    assert oct(auth_server.server.state_dir.stat().st_mode & 0o777) == "0o700"
    for name in (f"basic_auth-{auth_server.server.port}.ini", "flask-secret-key"):
        assert oct((auth_server.server.state_dir / name).stat().st_mode & 0o777) == "0o600"


@pytest.mark.integration
def test_the_reader_reads_but_cannot_log_a_run_or_register(auth_server, as_user, trainer_version):
    _, result = trainer_version
    reader = as_user("reader")
    assert {e.name for e in reader.search_experiments()} == set(PROJECT_EXPERIMENTS)  # nothing else (no default)
    finetune = reader.get_experiment_by_name("lesionseg-finetune")
    assert reader.get_run(result["run_id"]).info.status == "FINISHED"
    assert reader.get_registered_model("lesionseg-mouse").name == "lesionseg-mouse"
    expected = ("MLflow at {url} refused user 'reader' (403 PERMISSION_DENIED): {what} needs EDIT; ask the server "
                "admin to run `deploy/team-stack.sh user add reader --role trainer`")
    err = _refused(lambda: reader.create_run(finetune.experiment_id))
    assert permission_error(err) == expected.format(url=auth_server.url, what="creating a run in an experiment")
    err = _refused(lambda: reader.create_model_version("lesionseg-mouse", result["model_uri"], result["run_id"]))
    assert permission_error(err) == expected.format(url=auth_server.url,
                                                    what="registering a version of a registered model")
    err = _refused(lambda: reader.create_experiment("readers-own"))
    assert permission_error(err) == expected.format(url=auth_server.url, what="creating experiment 'readers-own'")
    err = _refused(lambda: reader.create_registered_model("readers-model"))
    assert permission_error(err) == expected.format(url=auth_server.url,
                                                    what="creating registered model 'readers-model'")


@pytest.mark.integration
def test_the_trainer_logs_and_registers_but_cannot_move_champion(auth_server, as_user, trainer_version, s3):
    _, result = trainer_version
    trainer = as_user("trainer")
    run_ = trainer.get_run(result["run_id"])
    assert run_.info.status == "FINISHED" and run_.info.user_id  # logged by the trainer, through the server
    assert trainer.get_experiment(run_.info.experiment_id).name == "lesionseg-finetune"
    assert any(k.startswith(f"mlflow/{run_.info.experiment_id}/{run_.info.run_id}/") for k in s3.keys("mlflow/"))
    version = trainer.get_model_version("lesionseg-mouse", result["version"])
    assert version.run_id == run_.info.run_id and version.status == "READY"
    trainer.set_registered_model_alias("lesionseg-mouse", "challenger", version.version)  # EDIT is enough

    err = _refused(lambda: trainer.set_registered_model_alias("lesionseg-mouse", "champion", version.version))
    assert permission_error(err) == CHAMPION_REFUSED.format(url=auth_server.url, user="trainer")
    assert missing_permission("moving @champion on registered model 'lesionseg-mouse'", "registered_model",
                              "lesionseg-mouse", "MANAGE") == CHAMPION_REFUSED.format(url=auth_server.url,
                                                                                       user="trainer")
    err = _refused(lambda: trainer.delete_run(run_.info.run_id))
    assert "deleting or restoring an experiment needs MANAGE" in permission_error(err)
    err = _refused(lambda: trainer.rename_registered_model("lesionseg-mouse", "mine-now"))
    assert "renaming registered model 'lesionseg-mouse' needs MANAGE" in permission_error(err)
    admin = as_user("admin")
    assert "champion" not in admin.get_registered_model("lesionseg-mouse").aliases
    assert admin.get_run(run_.info.run_id).info.lifecycle_stage == "active"


@pytest.mark.integration
def test_the_maintainer_moves_champion(auth_server, as_user, trainer_version):
    _, result = trainer_version
    maintainer = as_user("maintainer")
    assert missing_permission("moving @champion", "registered_model", "lesionseg-mouse", "MANAGE") is None
    maintainer.set_registered_model_alias("lesionseg-mouse", "champion", result["version"])
    assert maintainer.get_model_version_by_alias("lesionseg-mouse", "champion").version == result["version"]
    maintainer.delete_registered_model_alias("lesionseg-mouse", "champion")  # as it was, for the other tests
    assert "champion" not in maintainer.get_registered_model("lesionseg-mouse").aliases


def _promote(auth_server, root: Path, version: str, credentials: dict[str, str], *args: str):
    """`python -m lesionseg.cli promote` of lesionseg-mouse ``version`` with only ``credentials``."""
    env = {**client_env(), "MLFLOW_TRACKING_URI": auth_server.url, **credentials}
    out = run([sys.executable, "-m", "lesionseg.cli", "promote", "--model", "lesionseg-mouse", "--candidate", version,
               "--project", str(root), *args], cwd=ROOT, env=env, timeout=600, check=False)
    auth_server.outputs.append(out.stdout + out.stderr)
    return out


@pytest.fixture(scope="module")
def trainer_promotes(auth_server, trainer_version):
    """`lesionseg promote` of the trainer's version by the trainer: its output and the version's tags after it."""
    root, result = trainer_version
    out = _promote(auth_server, root, result["version"], auth_server.credentials("trainer"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in auth_server.credentials("admin").items():
            mp.setenv(name, value)
        version = MlflowClient(auth_server.url, auth_server.url).get_model_version("lesionseg-mouse", result["version"])
        aliases = MlflowClient(auth_server.url, auth_server.url).get_registered_model("lesionseg-mouse").aliases
    return out, version.tags, aliases


@pytest.mark.integration
def test_promote_refuses_the_trainer_in_one_line(auth_server, trainer_promotes):
    refused, _, aliases = trainer_promotes
    assert refused.returncode == 1 and "champion" not in aliases
    assert "Traceback" not in refused.stderr, "lesionseg.cli main must print access.permission_error's line"
    assert refused.stderr.strip().splitlines()[-1] == "error: " + CHAMPION_REFUSED.format(url=auth_server.url,
                                                                                          user="trainer")


@pytest.mark.integration
def test_a_refused_promotion_leaves_no_record(trainer_promotes):
    _, tags, _ = trainer_promotes
    assert not any(k.startswith("promot") for k in tags)


@pytest.mark.integration
def test_the_maintainer_promotes_with_the_cli(auth_server, as_user, trainer_version, trainer_promotes):
    root, result = trainer_version
    promoted = _promote(auth_server, root, result["version"], auth_server.credentials("maintainer"))
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    admin = as_user("admin")
    assert admin.get_model_version_by_alias("lesionseg-mouse", "champion").version == result["version"]
    admin.delete_registered_model_alias("lesionseg-mouse", "champion")  # as it was, for the other tests


@pytest.mark.integration
def test_a_wrong_password_is_one_line_from_the_cli(auth_server, trainer_version):
    root, result = trainer_version
    wrong = {**auth_server.credentials("trainer"), "MLFLOW_TRACKING_PASSWORD": "lesionseg-WRONG-PW-0000"}
    out = _promote(auth_server, root, result["version"], wrong, "--dry-run")
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr and "lesionseg-WRONG-PW-0000" not in out.stderr
    assert last == (f"error: MLflow at {auth_server.url} refused the login of user 'trainer' (401 UNAUTHENTICATED): "
                    "wrong MLFLOW_TRACKING_PASSWORD or no such user; ask the server admin to run "
                    "`deploy/team-stack.sh user passwd trainer` "
                    "(or `deploy/team-stack.sh user add trainer --role ...`)")


@pytest.mark.integration
def test_no_password_anywhere(auth_server, as_user, trainer_version, s3):
    secret_key = (auth_server.server.state_dir / "flask-secret-key").read_text().strip()
    secrets = (*AUTH_SECRETS, secret_key)
    admin = as_user("admin")
    seen: list[tuple[str, str]] = []
    for exp in admin.search_experiments(view_type=ViewType.ALL):
        seen.append((f"experiment {exp.name}", repr((exp.artifact_location, exp.tags))))
        for run_ in admin.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            seen.append((f"run {run_.info.run_id}", repr((run_.data.params, run_.data.tags, run_.info.user_id))))
        for logged in admin.search_logged_models([exp.experiment_id]):
            seen.append((f"logged model {logged.model_id}", repr((logged.params, logged.tags))))
    for model in admin.search_registered_models():
        seen.append((f"registered model {model.name}", repr((model.tags, model.description, model.aliases))))
        for version in admin.search_model_versions(f"name = '{model.name}'"):
            seen.append((f"{model.name} v{version.version}", repr((version.tags, version.description))))
    for key in s3.keys():
        seen.append((f"s3 {key}", key + "\n" + s3.read(key).decode("latin-1")))
    seen += [(f"script output {i}", text) for i, text in enumerate(auth_server.outputs)]
    seen.append(("mlflow server log", auth_server.server.log()))
    seen += [("process list", line) for line in auth_server.processes.seen | command_lines()]
    seen.append(("ps -eo args", run(["ps", "-eo", "args"]).stdout))
    assert len([w for w, _ in seen if w.startswith("run ")]) >= 1 and len(auth_server.processes.seen) > 10
    assert any("lesionseg.tracking.access_admin user-add" in line for _, line in seen), "the watch saw `user add` run"
    leaks = [(where, [s for s in secrets if s in text]) for where, text in seen if any(s in text for s in secrets)]
    assert not leaks, leaks


@pytest.mark.integration
def test_user_passwd_and_remove(auth_server):
    search = f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    env = {**auth_server.server.env, "LESIONSEG_USER_PASSWORD": "lesionseg-TEMP-PW-5512"}
    out = script("user", "add", "temp", "--role", "reader", env=env, timeout=120)
    assert "created user temp" in out.stderr
    assert _get(search, "temp", "lesionseg-TEMP-PW-5512") == 200
    env["LESIONSEG_USER_PASSWORD"] = "lesionseg-TEMP-PW-new1"
    out = script("user", "passwd", "temp", env=env, timeout=120)
    assert "new password set for user temp" in out.stderr
    assert _get(search, "temp", "lesionseg-TEMP-PW-5512") == 401
    assert _get(search, "temp", "lesionseg-TEMP-PW-new1") == 200
    out = script("user", "add", "temp", "--role", "trainer", env=env, timeout=120)
    assert "user temp exists; password unchanged" in out.stderr and "removed role reader" in out.stderr
    assert "user temp has role trainer" in out.stderr
    script("user", "remove", "temp", env=env, timeout=120)
    assert _get(search, "temp", "lesionseg-TEMP-PW-new1") == 401
    wrong_admin = {**env, "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": "", "MLFLOW_AUTH_ADMIN_PASSWORD": "not-the-admin-pw"}
    out = script("user", "add", "temp2", "--role", "reader", env=wrong_admin, timeout=120, check=False)
    assert out.returncode == 1 and "refused the admin login of user 'admin'" in out.stderr
    assert "Traceback" not in out.stderr and "not-the-admin-pw" not in out.stderr
