"""Who may do what on the team's MLflow server (``deploy/team-stack.sh up --auth``).

Roles map onto MLflow permissions on the project's experiments and registered models:
reader READ, trainer EDIT, maintainer MANAGE. Each is an MLflow role (``lesionseg-<role>``).

MLflow lets EDIT move any alias, so the server authenticates through :func:`authenticate_request`
(named in its ``basic_auth.ini``): MLflow's basic auth, then the rules of :func:`reserved_action`.
Moving ``@champion``, removing an alias or renaming needs MANAGE; creating an experiment or a
registered model needs the trainer or maintainer role.

Clients: :func:`permission_error` turns a 401 or 403 into one line; :func:`missing_permission`
asks the server before a long job. ``python -m lesionseg.tracking.access`` is the admin side of
``deploy/team-stack.sh`` (project resources, roles, users); passwords come from the environment.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

ROLE_PERMISSION = {"reader": "READ", "trainer": "EDIT", "maintainer": "MANAGE"}
PERMISSION_ROLE = {permission: role for role, permission in ROLE_PERMISSION.items()}
RANK = {"NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
CREATOR_ROLES = ("trainer", "maintainer")
PROTECTED_ALIASES = frozenset({"champion"})
ROLE_PREFIX = "lesionseg-"
WORKSPACE = "default"  # MLflow's workspace when workspaces are off
MIN_PASSWORD_LENGTH = 12
SCRIPT = "deploy/team-stack.sh"
PROJECT_EXPERIMENTS = ("lesionseg-pretrain", "lesionseg-finetune", "lesionseg-tune", "lesionseg-eval")
PROJECT_MODELS = ("ratlesnetv2-rat", "lesionseg-mouse")
USER_PASSWORD_ENV = "LESIONSEG_USER_PASSWORD"
_AUTHORIZED = "lesionseg_authorization"


def mlflow_role(role: str) -> str:
    """The MLflow role that holds a lesionseg role's grants."""
    return f"{ROLE_PREFIX}{role}"


# ------------------------------------------------------------------------------------------------ server
@dataclass(frozen=True)
class Reserved:
    """A request the project reserves: what it does, and what it needs on which resource."""

    what: str
    needs: str  # MLflow permission name
    resource_type: str = ""  # "" when the role decides (creating)
    resource_id: str = ""

    def refusal(self) -> str:
        return f"{self.what} needs {self.needs} (role {PERMISSION_ROLE[self.needs]})"


def reserved_action(path: str, method: str, params: Mapping[str, Any]) -> Reserved | None:
    """The project's rule for a REST request, or None when MLflow's own checks suffice."""
    route = path.split("/mlflow/", 1)[1] if "/mlflow/" in path else ""
    name, alias = str(params.get("name", "")), str(params.get("alias", ""))
    if route == "registered-models/alias" and method == "DELETE":
        return Reserved(f"removing @{alias} from registered model '{name}'", "MANAGE", "registered_model", name)
    if route == "registered-models/alias" and method == "POST" and alias.lower() in PROTECTED_ALIASES:
        return Reserved(f"moving @{alias} on registered model '{name}'", "MANAGE", "registered_model", name)
    if route == "registered-models/rename" and method == "POST":
        return Reserved(f"renaming registered model '{name}'", "MANAGE", "registered_model", name)
    if route == "experiments/update" and method == "POST" and params.get("new_name"):
        experiment_id = str(params.get("experiment_id", ""))
        return Reserved(f"renaming experiment {experiment_id}", "MANAGE", "experiment", experiment_id)
    if route == "experiments/create" and method == "POST":
        return Reserved(f"creating experiment '{name}'", "EDIT")
    if route == "registered-models/create" and method == "POST":
        return Reserved(f"creating registered model '{name}'", "EDIT")
    return None


def authenticate_request():
    """MLflow's basic auth, then the project's rules: the server's ``authorization_function``.

    MLflow calls it several times per request; the first answer is kept for the request (``flask.g``).
    """
    from flask import g, request
    from mlflow.server import auth

    if g.get(_AUTHORIZED) is not None:
        return g.get(_AUTHORIZED)
    authorization = auth.authenticate_request_basic_auth()
    if not hasattr(authorization, "username"):
        return authorization  # MLflow's 401 response
    body = request.get_json(silent=True)
    params = {**request.args.to_dict(), **(body if isinstance(body, dict) else {})}
    rule = reserved_action(request.path, request.method, params)
    if rule is not None and not _allowed(auth, authorization.username, rule):
        return _forbidden(rule.refusal())
    setattr(g, _AUTHORIZED, authorization)
    return authorization


def _allowed(auth: Any, username: str, rule: Reserved) -> bool:
    """Admins always; otherwise a creator role, or the permission on the resource."""
    user = auth.store.get_user(username)
    if user.is_admin:
        return True
    if not rule.resource_type:
        roles = {role.name for role in auth.store.list_user_roles(user.id)}
        return any(mlflow_role(role) in roles for role in CREATOR_ROLES)
    permission = auth._resolve_user_permission_for_resource(username, rule.resource_type, rule.resource_id)
    return RANK.get(permission.name, 0) >= RANK[rule.needs]


def _forbidden(message: str):
    from flask import jsonify

    response = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    response.status_code = 403
    return response


# ------------------------------------------------------------------------------------------------ client
@dataclass(frozen=True)
class Refusal:
    """A 401 or 403 from the server, as the client saw it."""

    status: int
    endpoint: str = ""
    method: str = ""
    message: str = ""


# (endpoint pattern, what, permission): MLflow's own 403s say only "Permission denied"; first match wins.
_ENDPOINT_NEEDS = (
    (r"/(delete|restore)$|/model-versions/delete-tag$", "deleting or restoring {noun}", "MANAGE"),
    (r"/rename$", "renaming {noun}", "MANAGE"),
    (r"/runs/create$", "creating a run in {noun}", "EDIT"),
    (r"/runs/(log-[\w-]+|set-tag|update)$", "logging to a run in {noun}", "EDIT"),
    (r"/logged-models(/[^/]+(/params|/tags)?)?$", "logging a model in {noun}", "EDIT"),
    (r"/model-versions/create$", "registering a version of {noun}", "EDIT"),
    (r"/registered-models/alias$", "setting an alias on {noun}", "EDIT"),
    (r"/(create|update|set-tag|delete-tag)$", "creating or changing {noun}", "EDIT"),
)
_NOUNS = (("registered-models", "a registered model"), ("model-versions", "a registered model"),
          ("/experiments/", "an experiment"), ("/runs/", "an experiment"), ("logged-models", "an experiment"),
          ("mlflow-artifacts", "an experiment"))


def permission_error(err: BaseException, tracking_uri: str | None = None, username: str | None = None) -> str | None:
    """One line for a 401/403 from MLflow (anywhere in ``err``'s chain): what was refused, the permission
    it needs and who grants it; None for any other error. Never contains a password."""
    refusal = find_refusal(err)
    if refusal is None:
        return None
    return refusal_line(refusal, tracking_uri or _tracking_uri(), username if username is not None else _username())


def refusal_line(refusal: Refusal, tracking_uri: str, username: str) -> str:
    """The one line for ``refusal`` by ``username`` at ``tracking_uri``."""
    url = _redact(tracking_uri)
    if refusal.status == 401:
        return _login_refused(url, username)
    what, needs = _what_and_needs(refusal)
    head = f"MLflow at {url} refused user '{username}' (403 PERMISSION_DENIED): {what} needs {needs}"
    if needs not in PERMISSION_ROLE:
        return f"{head}; ask the server admin which role you need"
    return f"{head}; ask the server admin to run `{SCRIPT} user add {username} --role {PERMISSION_ROLE[needs]}`"


def find_refusal(err: BaseException) -> Refusal | None:
    """The first 401/403 in ``err``, its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        refusal = _as_refusal(current)
        if refusal is not None:
            return refusal
        current = current.__cause__ or current.__context__
    return None


def _as_refusal(err: BaseException) -> Refusal | None:
    code = getattr(err, "error_code", None)
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        text = str(getattr(err, "message", err))
        endpoint = re.search(r"endpoint (\S+) failed", text)
        return Refusal(401 if code == "UNAUTHENTICATED" else 403, endpoint.group(1) if endpoint else "", "",
                       re.sub(r"^PERMISSION_DENIED: ", "", text))
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        method = getattr(getattr(response, "request", None), "method", "") or ""
        return Refusal(status, urlsplit(getattr(response, "url", "") or "").path, method, "")
    return None


def _what_and_needs(refusal: Refusal) -> tuple[str, str]:
    """From the project's own refusal message, else from the endpoint MLflow refused."""
    stated = re.match(r"(.+) needs ([A-Z_]+)\b", refusal.message)
    if stated:
        return stated.group(1), stated.group(2)
    endpoint = refusal.endpoint
    noun = next((noun for key, noun in _NOUNS if key in endpoint), "this resource")
    if "mlflow-artifacts" in endpoint and refusal.method:
        if refusal.method in ("PUT", "POST"):
            return f"uploading artifacts to {noun}", "EDIT"
        if refusal.method == "DELETE":
            return f"deleting artifacts of {noun}", "MANAGE"
    for pattern, what, needs in _ENDPOINT_NEEDS:
        if re.search(pattern, endpoint):
            return what.format(noun=noun), needs
    if endpoint:
        return f"reading {noun} ({endpoint})", "READ"
    return "this request", "a permission you lack"


def _login_refused(url: str, user: str) -> str:
    if not user:
        return (f"MLflow at {url} needs a login (401 UNAUTHENTICATED): export MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD; the server admin creates accounts with "
                f"`{SCRIPT} user add NAME --role reader|trainer|maintainer`")
    return (f"MLflow at {url} refused the login of user '{user}' (401 UNAUTHENTICATED): wrong "
            f"MLFLOW_TRACKING_PASSWORD or no such user; ask the server admin to run `{SCRIPT} user passwd {user}` "
            f"(or `{SCRIPT} user add {user} --role ...`)")


def _tracking_uri() -> str:
    try:
        import mlflow

        return mlflow.get_tracking_uri()
    except Exception:
        return os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")


def _username() -> str:
    try:
        from mlflow.utils.credentials import read_mlflow_creds

        return read_mlflow_creds().username or ""
    except Exception:
        return os.environ.get("MLFLOW_TRACKING_USERNAME", "")


def _redact(url: str) -> str:
    """The tracking URL without its user:password part (``urllib.parse``), for messages."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def missing_permission(what: str, resource_type: str, resource_id: str, needs: str,
                       tracking_uri: str | None = None) -> str | None:
    """Ask the server first: the :func:`permission_error` line when this user lacks ``needs`` on the
    resource; None when it holds it or the server has no authentication (no login configured, no auth API)."""
    uri = tracking_uri or _tracking_uri()
    user = _username()
    if not uri.startswith(("http://", "https://")) or not user:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    try:
        held = AuthServiceClient(uri).get_user_permission(user, resource_type, resource_id).permission
    except MlflowException as err:
        if err.error_code == "ENDPOINT_NOT_FOUND":
            return None
        return permission_error(err, uri, user)
    if RANK.get(held, 0) >= RANK[needs]:
        return None
    return refusal_line(Refusal(403, message=Reserved(what, needs).refusal()), uri, user)


# ------------------------------------------------------------------------------------------------- admin
def ensure_project(tracking_uri: str) -> dict[str, str]:
    """Create the project's experiments and registered models (as the caller, the admin) where missing;
    returns experiment name -> id. Owned by the admin, no trainer becomes their creator (MANAGE)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    ids = {}
    for name in PROJECT_EXPERIMENTS:
        found = client.get_experiment_by_name(name)
        ids[name] = found.experiment_id if found else client.create_experiment(name)
    for name in PROJECT_MODELS:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
    return ids


def role_grants(experiment_ids: Mapping[str, str], models: Sequence[str], role: str) -> dict[tuple[str, str], str]:
    """(resource type, id or name) -> MLflow permission for one lesionseg role."""
    permission = ROLE_PERMISSION[role]
    grants = {("experiment", experiment_id): permission for experiment_id in experiment_ids.values()}
    grants.update({("registered_model", name): permission for name in models})
    return grants


def ensure_roles(tracking_uri: str, experiment_ids: Mapping[str, str]) -> dict[str, int]:
    """The three MLflow roles with their grants (added or corrected, never removed); role -> role id."""
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(tracking_uri)
    existing = {r.name: r.id for r in auth.list_roles(WORKSPACE)}
    ids = {}
    for role in ROLE_PERMISSION:
        name = mlflow_role(role)
        role_id = existing.get(name) or auth.create_role(WORKSPACE, name, f"lesionseg {role} ({SCRIPT})").id
        held = {(p.resource_type, p.resource_pattern): p for p in auth.list_role_permissions(role_id)}
        for (resource_type, resource_id), permission in role_grants(experiment_ids, PROJECT_MODELS, role).items():
            current = held.get((resource_type, resource_id))
            if current is None:
                auth.add_role_permission(role_id, resource_type, resource_id, permission)
            elif current.permission != permission:
                auth.update_role_permission(current.id, permission)
        ids[role] = role_id
    return ids


def setup(tracking_uri: str) -> dict[str, int]:
    """Project resources and roles; returns role -> MLflow role id."""
    return ensure_roles(tracking_uri, ensure_project(tracking_uri))


def add_user(tracking_uri: str, username: str, role: str, password: str | None) -> list[str]:
    """Create ``username`` (when new) and give it exactly one lesionseg role; returns what was done."""
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(tracking_uri)
    role_ids = setup(tracking_uri)
    done = []
    if user_exists(auth, username):
        done.append(f"user {username} exists; password unchanged (`{SCRIPT} user passwd {username}` resets it)")
    else:
        auth.create_user(username, check_password(password))
        done.append(f"created user {username}")
    held = {r.name: r.id for r in auth.list_user_roles(username)}
    for other in ROLE_PERMISSION:
        if other != role and mlflow_role(other) in held:
            auth.unassign_role(username, held[mlflow_role(other)])
            done.append(f"removed role {other}")
    if mlflow_role(role) not in held:
        auth.assign_role(username, role_ids[role])
    done.append(f"user {username} has role {role}: {ROLE_PERMISSION[role]} on the project's experiments and models")
    return done


def user_exists(auth: Any, username: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def check_password(password: str | None) -> str:
    """``password``, when it is long enough (ValueError otherwise)."""
    if not password:
        raise ValueError(f"no password: export {USER_PASSWORD_ENV} or pass --password-file FILE (a file only you "
                         "can read)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    """Admin commands for deploy/team-stack.sh; the admin login comes from MLFLOW_TRACKING_USERNAME/_PASSWORD."""
    from mlflow.exceptions import MlflowException

    parser = argparse.ArgumentParser(prog="python -m lesionseg.tracking.access")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    add = sub.add_parser("user-add")
    add.add_argument("username")
    add.add_argument("--role", choices=list(ROLE_PERMISSION), required=True)
    sub.add_parser("user-passwd").add_argument("username")
    sub.add_parser("user-remove").add_argument("username")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=r"starlette\.middleware\.wsgi is deprecated")
    try:
        for line in _run(args):
            print(f"team-stack: {line}", file=sys.stderr)
    except (MlflowException, ValueError) as err:
        print(f"team-stack: error: {_admin_error(err, args.tracking_uri)}", file=sys.stderr)
        return 1
    return 0


def _admin_error(err: BaseException, tracking_uri: str) -> str:
    """One line for what stopped an admin command."""
    refusal = find_refusal(err)
    if refusal is not None and refusal.status == 401:
        return (f"MLflow at {_redact(tracking_uri)} refused the admin login of user '{_username()}': MLflow keeps "
                "the admin password of the server's first start (MLFLOW_AUTH_ADMIN_PASSWORD is read only when the "
                "admin user is created)")
    if refusal is not None:
        return permission_error(err, tracking_uri)
    return str(err).splitlines()[0][:300]


def _run(args: argparse.Namespace) -> list[str]:
    from mlflow.server.auth.client import AuthServiceClient

    password = os.environ.get(USER_PASSWORD_ENV)
    if args.command == "setup":
        roles = setup(args.tracking_uri)
        return [f"project experiments, registered models and roles ready ({', '.join(roles)})"]
    if args.command == "user-add":
        return add_user(args.tracking_uri, args.username, args.role, password)
    if args.command == "user-passwd":
        AuthServiceClient(args.tracking_uri).update_user_password(args.username, check_password(password))
        return [f"new password set for user {args.username}"]
    if args.username == _username():
        raise ValueError(f"{args.username} is the admin login this command uses; it stays")
    AuthServiceClient(args.tracking_uri).delete_user(args.username)
    return [f"removed user {args.username}"]


if __name__ == "__main__":
    sys.exit(main())
