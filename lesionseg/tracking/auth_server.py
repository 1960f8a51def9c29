"""The team MLflow server's authorization plugin (``deploy/team-stack.sh up --auth``): runs inside
``mlflow server --app-name basic-auth``, named in its ``basic_auth.ini`` as
``authorization_function = lesionseg.tracking.auth_server:authenticate_request``.

MLflow lets EDIT move any alias, so :func:`authenticate_request` is MLflow's basic auth, then the rules of
:func:`reserved_action`: moving ``@champion``, removing an alias or renaming needs MANAGE; creating an experiment
or a registered model needs the trainer or maintainer role. Refusals are worded by
:func:`lesionseg.tracking.refusals.needs_message`, which the client reads back into one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lesionseg.tracking.refusals import RANK, mlflow_role, needs_message

CREATOR_ROLES = ("trainer", "maintainer")
PROTECTED_ALIASES = frozenset({"champion"})
_AUTHORIZED = "lesionseg_authorization"


@dataclass(frozen=True)
class Reserved:
    """A request the project reserves: what it does, and what it needs on which resource."""

    what: str
    needs: str  # MLflow permission name
    resource_type: str = ""  # "" when the role decides (creating)
    resource_id: str = ""

    def refusal(self) -> str:
        return needs_message(self.what, self.needs)


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
