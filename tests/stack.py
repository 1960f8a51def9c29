"""Real servers for the team-stack integration tests, all on 127.0.0.1: PostgreSQL databases (on the running
cluster, started when it is down), moto's standalone S3 server, and `mlflow server` started by
deploy/team-stack.sh, without logins (``mlflow_server``) or with them (``auth_server``). Import the fixtures
into a test module: ``from stack import pg, s3, mlflow_server``.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from servers import free_port  # noqa: F401 (team-stack tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "team-stack.sh"
BIN = Path(sys.executable).parent

# Fake secrets: distinctive, so a leak shows up in any grep.
AWS_KEY_ID = "lesionseg-test-key-id"
AWS_SECRET = "lesionseg-TEST-SECRET-9f3a"
PG_PASSWORD = "lesionseg-PG-SECRET-51c7"  # trust auth ignores it; it only has to ride along in the URLs
SECRETS = (AWS_SECRET, PG_PASSWORD)
ADMIN_PASSWORD = "lesionseg-ADMIN-PW-7d2e"
USER_PASSWORDS = {"reader": "lesionseg-READER-PW-30aa", "trainer": "lesionseg-TRAINER-PW-b41f",
                  "maintainer": "lesionseg-MAINT-PW-e9c2"}
AUTH_SECRETS = (*SECRETS, ADMIN_PASSWORD, *USER_PASSWORDS.values())

PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("PGPORT", "5432"))
PG_USERS = ("postgres", "root")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
CLIENT_ENV_DROP = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                   "AWS_DEFAULT_PROFILE", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment with no S3 credentials or endpoint at all (not even a credentials file)."""
    env = {k: v for k, v in (base or os.environ).items() if k not in CLIENT_ENV_DROP}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_EC2_METADATA_DISABLED": "true", "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}",
                **GIT_ENV})
    return env


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 300,
        check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def sha256_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------- PostgreSQL
def _pg_connect(dbname: str = "postgres"):
    import psycopg2

    last = None
    for user in PG_USERS:
        try:
            return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, connect_timeout=5), user
        except psycopg2.OperationalError as err:
            last = err
    raise last  # type: ignore[misc]


def _start_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        return "no cluster under /etc/postgresql"
    out = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                         capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip()


@dataclass
class Postgres:
    """The running cluster; databases made here are dropped at teardown."""

    user: str
    created: list[str] = field(default_factory=list)

    def url(self, dbname: str, password: str | None = PG_PASSWORD) -> str:
        auth = f"{self.user}:{password}" if password else self.user
        # the driver named: SQLAlchemy >= 2.1 reads a bare postgresql:// as psycopg 3, which is not required here
        return f"postgresql+psycopg2://{auth}@{PG_HOST}:{PG_PORT}/{dbname}"

    def reserve(self, prefix: str) -> str:
        """A fresh name, dropped at teardown if something created it."""
        name = unique(prefix)
        self.created.append(name)
        return name

    def create(self, prefix: str) -> str:
        from psycopg2 import sql

        name = self.reserve(prefix)
        conn, _ = _pg_connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.close()
        return name

    def query(self, dbname: str, statement: str) -> list[tuple]:
        conn, _ = _pg_connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()

    def drop_all(self) -> None:
        from psycopg2 import sql

        conn, _ = _pg_connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in self.created:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.close()


@pytest.fixture(scope="module")
def pg():
    """PostgreSQL on 127.0.0.1 (started with pg_ctlcluster when down); skips only when it cannot be had."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    try:
        conn, user = _pg_connect()
    except psycopg2.OperationalError as first:
        started = _start_cluster()
        deadline, conn = time.time() + 30, None
        while time.time() < deadline:
            try:
                conn, user = _pg_connect()
                break
            except psycopg2.OperationalError:
                time.sleep(1)
        if conn is None:
            pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT} is unreachable ({str(first).strip().splitlines()[0]}) "
                        f"and could not be started ({started[-200:]})")
    conn.close()
    server = Postgres(user)
    yield server
    server.drop_all()


# ---------------------------------------------------------------------------------------------------- S3
@dataclass
class S3:
    endpoint: str
    bucket: str
    server: object

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=AWS_KEY_ID,
                            aws_secret_access_key=AWS_SECRET, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [o["Key"] for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                for o in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server in a thread of this process, on a free port of 127.0.0.1, with one bucket."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    store = S3(f"http://{host}:{port}", unique("lesionseg").replace("_", "-").lower(), server)
    store.client().create_bucket(Bucket=store.bucket)
    yield store
    server.stop()


# ------------------------------------------------------------------------------------------- MLflow server
@dataclass
class MlflowServer:
    url: str
    port: int
    backend_db: str
    optuna_db: str
    optuna_url: str
    env: dict[str, str]
    state_dir: Path
    up_output: subprocess.CompletedProcess | None = None

    def pid(self) -> int | None:
        path = self.state_dir / f"mlflow-{self.port}.pid"
        return int(path.read_text()) if path.exists() else None

    def log(self) -> str:
        path = self.state_dir / f"mlflow-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/health", timeout=2).read().strip() == b"OK"
    except OSError:
        return False


def script(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: int = 300,
           check: bool = True) -> subprocess.CompletedProcess:
    return run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, timeout=timeout, check=check)


def server_env(pg: Postgres, s3: S3, port: int, backend_db: str, optuna_db: str, state_dir: Path) -> dict[str, str]:
    """What a lab exports on the server machine: PostgreSQL URLs, the bucket, the S3 endpoint and keys."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "MLFLOW_TRACKING_URI")}
    env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "PYTHON": sys.executable,
                "MLFLOW_BACKEND_STORE_URI": pg.url(backend_db), "OPTUNA_STORAGE": pg.url(optuna_db),
                "LESIONSEG_BUCKET": s3.bucket, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
                "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1", "PORT": str(port), "STATE_DIR": str(state_dir),
                "HEALTH_TIMEOUT": "240"})
    return env


@contextmanager
def running_stack(env: dict[str, str], server: MlflowServer, *up_args: str) -> Iterator[MlflowServer]:
    """`deploy/team-stack.sh up UP_ARGS` with ``env``; `down` (then a kill of its process group) afterwards."""
    try:
        up = script("up", *up_args, env=env, timeout=300, check=False)
        assert up.returncode == 0, f"team-stack.sh up failed:\n{up.stderr[-3000:]}\n{server.log()[-3000:]}"
        assert healthy(server.url), server.log()[-3000:]
        server.up_output = up
        yield server
    finally:
        pid = server.pid()
        script("down", env=env, timeout=120, check=False)
        if pid and _alive(pid):  # `down` failed: stop what we started, by its process group id
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def mlflow_server(pg, s3, tmp_path_factory):
    """`deploy/team-stack.sh up` (HOST unset: 127.0.0.1) on a free port; `down` (then a kill) at teardown.

    The MLflow database is made here with psycopg2; the Optuna one is left for the script's `init` to create.
    """
    port = free_port()
    backend_db, optuna_db = pg.create("lesionseg_mlflow"), pg.reserve("lesionseg_optuna")
    state_dir = tmp_path_factory.mktemp("stack-state")
    env = server_env(pg, s3, port, backend_db, optuna_db, state_dir)
    server = MlflowServer(f"http://127.0.0.1:{port}", port, backend_db, optuna_db, pg.url(optuna_db), env, state_dir)
    with running_stack(env, server) as running:
        yield running


# ------------------------------------------------------------------------------------ processes and logins
class ProcessWatch:
    """Every command line (``/proc/*/cmdline``, what ``ps -eo args`` shows) seen while it runs, polled."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.seen: set[str] = set()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen.update(command_lines())
            self._stop.wait(self._interval_s)


def command_lines() -> set[str]:
    """The argument lists of all processes now, space-joined."""
    lines = set()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            raw = Path(path).read_bytes()
        except OSError:  # the process ended
            continue
        if raw:
            lines.add(raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))
    return lines


@dataclass
class AuthStack:
    """A server started with `up --auth`, its logins, and everything its scripts printed."""

    server: MlflowServer
    users: dict[str, str]  # role -> user name (the password is USER_PASSWORDS[role])
    admin_password_file: Path
    outputs: list[str] = field(default_factory=list)
    processes: ProcessWatch | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def credentials(self, role: str) -> dict[str, str]:
        """The client environment of the user holding ``role`` ("admin" for the admin)."""
        if role == "admin":
            return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        return {"MLFLOW_TRACKING_USERNAME": self.users[role], "MLFLOW_TRACKING_PASSWORD": USER_PASSWORDS[role]}


def owner_only_file(path: Path, text: str) -> Path:
    """``text`` in a new file only its owner can read (mode 600)."""
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return path


@pytest.fixture(scope="module")
def auth_server(pg, s3, tmp_path_factory):
    """`deploy/team-stack.sh up --auth` on 127.0.0.1 (its own auth database, created by `init`), then
    `user add` for a reader (password in the environment), a trainer and a maintainer (owner-only files).
    Every command line of the machine is watched meanwhile, for the tests to search for passwords."""
    port = free_port()
    backend_db, optuna_db = pg.create("lesionseg_mlflow"), pg.reserve("lesionseg_optuna")
    auth_db = pg.reserve("lesionseg_mlflow_auth")
    state_dir = tmp_path_factory.mktemp("auth-state")
    secrets_dir = tmp_path_factory.mktemp("auth-secrets")
    env = server_env(pg, s3, port, backend_db, optuna_db, state_dir)
    admin_file = owner_only_file(secrets_dir / "admin-password", ADMIN_PASSWORD)
    env.update({"MLFLOW_AUTH_DB_URI": pg.url(auth_db), "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": str(admin_file)})
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "LESIONSEG_USER_PASSWORD", "LESIONSEG_USER_PASSWORD_FILE"):
        env.pop(name, None)
    server = MlflowServer(f"http://127.0.0.1:{port}", port, backend_db, optuna_db, pg.url(optuna_db), env, state_dir)
    with ProcessWatch() as processes, running_stack(env, server, "--auth") as running:
        stack = AuthStack(running, {role: role for role in USER_PASSWORDS}, admin_file, processes=processes)
        stack.outputs.append(running.up_output.stdout + running.up_output.stderr)
        stack.outputs.append(add_user(stack, "reader", env={"LESIONSEG_USER_PASSWORD": USER_PASSWORDS["reader"]}))
        for role in ("trainer", "maintainer"):
            file = owner_only_file(secrets_dir / f"{role}-password", USER_PASSWORDS[role])
            stack.outputs.append(add_user(stack, role, "--password-file", str(file)))
        yield stack


def add_user(stack: AuthStack, role: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`deploy/team-stack.sh user add ROLE --role ROLE ARGS`; returns what it printed."""
    out = script("user", "add", stack.users[role], "--role", role, *args, env={**stack.server.env, **(env or {})},
                 timeout=120)
    return out.stdout + out.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in glob.glob("/proc/net/tcp") + glob.glob("/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state != "0A" or int(hex_port, 16) != port:
                continue
            if len(address) == 8:
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                raw = bytes.fromhex(address)
                found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found
