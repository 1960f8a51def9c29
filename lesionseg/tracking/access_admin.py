"""The admin side of ``deploy/team-stack.sh`` (``python -m lesionseg.tracking.access_admin``): the project's
experiments and registered models, its three roles, and users.

Roles: reader READ, trainer EDIT, maintainer MANAGE on the project's experiments and registered models, each an
MLflow role ``lesionseg-<role>`` (:mod:`lesionseg.tracking.refusals`). The admin login comes from
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, a new user's password from ``LESIONSEG_USER_PASSWORD``; no password
is ever an argument.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Mapping, Sequence

from lesionseg.tracking.refusals import (ROLE_PERMISSION, SCRIPT, current_username, find_refusal, mlflow_role,
                                         permission_error, redact)

WORKSPACE = "default"  # MLflow's workspace when workspaces are off
MIN_PASSWORD_LENGTH = 12
PROJECT_EXPERIMENTS = ("lesionseg-pretrain", "lesionseg-finetune", "lesionseg-tune", "lesionseg-eval")
PROJECT_MODELS = ("ratlesnetv2-rat", "lesionseg-mouse")
USER_PASSWORD_ENV = "LESIONSEG_USER_PASSWORD"


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

    parser = argparse.ArgumentParser(prog="python -m lesionseg.tracking.access_admin")
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
        return (f"MLflow at {redact(tracking_uri)} refused the admin login of user '{current_username()}': MLflow keeps "
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
    if args.username == current_username():
        raise ValueError(f"{args.username} is the admin login this command uses; it stays")
    AuthServiceClient(args.tracking_uri).delete_user(args.username)
    return [f"removed user {args.username}"]


if __name__ == "__main__":
    sys.exit(main())
