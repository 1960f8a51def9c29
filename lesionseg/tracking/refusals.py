"""The client's side of the team server's logins: a 401 or 403 from MLflow as one line a person can act on.

:func:`permission_error` turns a refusal (anywhere in an exception's chain) into one line: what was refused,
the permission it needs and the ``deploy/team-stack.sh user add`` command that grants it;
:func:`missing_permission` asks the server before a long job. This is the only part of the access code that
stages and library modules import (the server plugin is :mod:`lesionseg.tracking.auth_server`, the admin
commands :mod:`lesionseg.tracking.access_admin`), so that DVC stages depend on it alone.

Roles map onto MLflow permissions on the project's experiments and registered models: reader READ, trainer
EDIT, maintainer MANAGE, each an MLflow role ``lesionseg-<role>``. The server states its own refusals as
``WHAT needs PERMISSION (role ROLE)`` (:func:`needs_message`), which :func:`refusal_line` reads back.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

ROLE_PERMISSION = {"reader": "READ", "trainer": "EDIT", "maintainer": "MANAGE"}
PERMISSION_ROLE = {permission: role for role, permission in ROLE_PERMISSION.items()}
RANK = {"NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
ROLE_PREFIX = "lesionseg-"
SCRIPT = "deploy/team-stack.sh"


def mlflow_role(role: str) -> str:
    """The MLflow role that holds a lesionseg role's grants."""
    return f"{ROLE_PREFIX}{role}"


def needs_message(what: str, needs: str) -> str:
    """How the server words a refusal of its own (the client parses it back in :func:`refusal_line`)."""
    return f"{what} needs {needs} (role {PERMISSION_ROLE[needs]})"


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
    user = username if username is not None else current_username()
    return refusal_line(refusal, tracking_uri or _tracking_uri(), user)


def refusal_line(refusal: Refusal, tracking_uri: str, username: str) -> str:
    """The one line for ``refusal`` by ``username`` at ``tracking_uri``."""
    url = redact(tracking_uri)
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


def current_username() -> str:
    """The login MLflow's client sends (``MLFLOW_TRACKING_USERNAME`` or its credentials file); "" for none."""
    try:
        from mlflow.utils.credentials import read_mlflow_creds

        return read_mlflow_creds().username or ""
    except Exception:
        return os.environ.get("MLFLOW_TRACKING_USERNAME", "")


def redact(url: str) -> str:
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
    user = current_username()
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
    return refusal_line(Refusal(403, message=needs_message(what, needs)), uri, user)
