#!/usr/bin/env bash
# lesionseg team stack: MLflow tracking server (PostgreSQL backend store, S3 artifacts served through the
# server), a DVC S3 remote, and the PostgreSQL URL Optuna workers share. See docs/team-stack.md.
#
#   deploy/team-stack.sh init        create the MLflow and Optuna databases and the bucket when missing
#   deploy/team-stack.sh up          init, start `mlflow server` in the background, wait until it is healthy
#   deploy/team-stack.sh down        stop the server `up` started (its process group, from the pid file)
#   deploy/team-stack.sh status      is the server `up` started still running and healthy
#   deploy/team-stack.sh server      run `mlflow server` in the foreground (systemd, containers); no init
#   deploy/team-stack.sh dvc-remote  in a DVC repo: add the S3 remote; credentials go to .dvc/config.local
#   deploy/team-stack.sh env         print what clients export (never a secret)
#
# Settings: standard environment variables, each overridable by an option (option wins).
#   LESIONSEG_BUCKET         --bucket NAME           S3 bucket (MLflow artifacts under mlflow/, DVC under dvc/)
#   MLFLOW_S3_ENDPOINT_URL   --s3-endpoint URL       S3 endpoint when not AWS (MinIO, Ceph, moto); empty = AWS
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN, AWS_DEFAULT_REGION)
#                                                    read by the server and copied by `dvc-remote` into
#                                                    .dvc/config.local; clients of the server need none
#   MLFLOW_BACKEND_STORE_URI --backend-store-uri URI MLflow's database (default: postgresql+psycopg2://PGUSER@PGHOST:PGPORT/MLFLOW_DB)
#   OPTUNA_STORAGE           --optuna-storage URI    Optuna's database (default: postgresql+psycopg2://PGUSER@PGHOST:PGPORT/OPTUNA_DB)
#                            (SQLAlchemy >= 2.1 reads a bare postgresql:// as psycopg 3: name the driver you installed)
#   PGHOST PGPORT PGUSER PGPASSWORD  (libpq's own variables; defaults 127.0.0.1, 5432, postgres; the password
#                            stays out of URLs, command lines and logs: libpq reads PGPASSWORD or ~/.pgpass)
#   MLFLOW_DB=lesionseg_mlflow  OPTUNA_DB=lesionseg_optuna   database names for the default URLs
#                            (MLflow and Optuna both keep an `alembic_version` table: they need two databases)
#   HOST                     --host ADDR             address the server binds (default 127.0.0.1)
#   PORT                     --port N                (default 5000)
#   MLFLOW_TRACKING_URI      --tracking-uri URI      what `env` tells clients to use, when http(s)
#                                                    (default http://HOST:PORT)
#   ALLOWED_HOSTS            --allowed-hosts LIST    MLflow's Host-header allow list, needed when clients use
#                                                    a DNS name (default: MLflow's localhost + private IPs)
#   STATE_DIR                --state-dir DIR         pid and log files of `up` (default ~/.local/state/lesionseg-team-stack)
#   DVC_REMOTE               --remote NAME           DVC remote name (default team)
#   PYTHON, MLFLOW, DVC      interpreter with psycopg2+boto3, and the mlflow / dvc commands (default: from PATH)
#   HEALTH_TIMEOUT           seconds `up` waits for /health (default 180)
set -euo pipefail

die() { echo "team-stack: error: $*" >&2; exit 1; }
say() { echo "team-stack: $*" >&2; }
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#g'; }  # hide a password inside a URL

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

command=${1:-}
[ -n "$command" ] || { usage; exit 2; }
shift
while [ $# -gt 0 ]; do
  case "$1" in -h|--help) ;; *) [ $# -ge 2 ] || die "$1 needs a value" ;; esac
  case "$1" in
    --bucket) LESIONSEG_BUCKET=$2; shift 2 ;;
    --s3-endpoint) MLFLOW_S3_ENDPOINT_URL=$2; shift 2 ;;
    --backend-store-uri) MLFLOW_BACKEND_STORE_URI=$2; shift 2 ;;
    --optuna-storage) OPTUNA_STORAGE=$2; shift 2 ;;
    --host) HOST=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --tracking-uri) MLFLOW_TRACKING_URI=$2; shift 2 ;;
    --allowed-hosts) ALLOWED_HOSTS=$2; shift 2 ;;
    --state-dir) STATE_DIR=$2; shift 2 ;;
    --remote) DVC_REMOTE=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see: $0 --help)" ;;
  esac
done

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
PGHOST_=${PGHOST:-127.0.0.1}
PGPORT_=${PGPORT:-5432}
PGUSER_=${PGUSER:-postgres}
BACKEND=${MLFLOW_BACKEND_STORE_URI:-postgresql+psycopg2://${PGUSER_}@${PGHOST_}:${PGPORT_}/${MLFLOW_DB:-lesionseg_mlflow}}
OPTUNA=${OPTUNA_STORAGE:-postgresql+psycopg2://${PGUSER_}@${PGHOST_}:${PGPORT_}/${OPTUNA_DB:-lesionseg_optuna}}
BUCKET=${LESIONSEG_BUCKET:-}
ENDPOINT=${MLFLOW_S3_ENDPOINT_URL:-}
REMOTE=${DVC_REMOTE:-team}
STATE_DIR=${STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/lesionseg-team-stack}
PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
MLFLOW=${MLFLOW:-mlflow}
DVC=${DVC:-dvc}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
case "$HOST" in
  0.0.0.0|"") probe_host=127.0.0.1 ;;
  ::|"[::]") probe_host="[::1]" ;;
  *:*) probe_host="[$HOST]" ;;
  *) probe_host=$HOST ;;
esac
URL=http://${probe_host}:${PORT}  # where this machine reaches the server it runs
case "${MLFLOW_TRACKING_URI:-}" in
  http://*|https://*) CLIENT_URL=$MLFLOW_TRACKING_URI ;;  # e.g. a DNS name or a reverse proxy in front
  *) CLIENT_URL=$URL ;;
esac
PIDFILE=$STATE_DIR/mlflow-$PORT.pid
LOGFILE=$STATE_DIR/mlflow-$PORT.log

need_bucket() { [ -n "$BUCKET" ] || die "no bucket: set LESIONSEG_BUCKET or pass --bucket NAME"; }
need_python() { [ -n "$PYTHON" ] || die "no python3 found; set PYTHON"; }

healthy() {  # 0 when $1/health answers OK
  "$PYTHON" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
try:
    sys.exit(0 if opener.open(sys.argv[1].rstrip("/") + "/health", timeout=3).read().strip() == b"OK" else 1)
except Exception:
    sys.exit(1)
EOF
}

do_init() {
  need_bucket; need_python
  # Databases and bucket, created only when missing. Runs with the server's credentials (environment).
  "$PYTHON" - "$BACKEND" "$OPTUNA" "$BUCKET" "$ENDPOINT" <<'EOF'
import re
import sys

backend, optuna_url, bucket, endpoint = sys.argv[1:5]


def redact(url):
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def ensure_database(url):
    if not url.startswith("postgresql"):
        print(f"team-stack: {redact(url)}: not PostgreSQL, left as it is", file=sys.stderr)
        return
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:  # the driver SQLAlchemy picks for this URL (a bare postgresql:// means psycopg 3 in SQLAlchemy >= 2.1)
        u.get_dialect().import_dbapi()
    except ImportError as err:
        sys.exit(f"team-stack: error: {u.drivername}:// needs a driver that is not installed ({err}); "
                 "pip install psycopg2-binary and write postgresql+psycopg2://, or pip install 'psycopg[binary]'")
    import psycopg2
    from psycopg2 import sql

    args = {k: v for k, v in {"host": u.host, "port": u.port, "user": u.username, "password": u.password}.items() if v}
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=10, **args)
    except psycopg2.Error as err:
        sys.exit(f"team-stack: error: PostgreSQL at {redact(url)} is unreachable: {str(err).strip().splitlines()[0]}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (u.database,))
        if cur.fetchone():
            print(f"team-stack: database {u.database} exists", file=sys.stderr)
        else:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(u.database)))
            print(f"team-stack: created database {u.database}", file=sys.stderr)
    conn.close()


def ensure_bucket(name, endpoint):
    import boto3
    import botocore.exceptions

    s3 = boto3.client("s3", endpoint_url=endpoint or None)
    try:
        s3.head_bucket(Bucket=name)
        print(f"team-stack: bucket {name} exists", file=sys.stderr)
    except botocore.exceptions.NoCredentialsError:
        sys.exit("team-stack: error: no S3 credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            sys.exit(f"team-stack: error: bucket {name}: {err}")
        s3.create_bucket(Bucket=name)
        print(f"team-stack: created bucket {name}", file=sys.stderr)
    except botocore.exceptions.EndpointConnectionError as err:
        sys.exit(f"team-stack: error: S3 endpoint unreachable: {err}")


if backend == optuna_url:
    sys.exit("team-stack: error: MLflow and Optuna need two databases (both keep an alembic_version table)")
ensure_database(backend)
ensure_database(optuna_url)
ensure_bucket(bucket, endpoint)
EOF
}

server_args() {
  # The backend URI travels in MLFLOW_BACKEND_STORE_URI (mlflow's own variable), not on the command line.
  args=(server --artifacts-destination "s3://$BUCKET/mlflow" --serve-artifacts
        --host "$HOST" --port "$PORT" --workers 1)
  if [ -n "${ALLOWED_HOSTS:-}" ]; then args+=(--allowed-hosts "$ALLOWED_HOSTS"); fi
}

do_server() {
  need_bucket
  command -v "$MLFLOW" >/dev/null || die "'$MLFLOW' not found; activate the environment or set MLFLOW"
  if [ -z "${AWS_ACCESS_KEY_ID:-}" ] && [ -n "$ENDPOINT" ]; then
    say "warning: AWS_ACCESS_KEY_ID is not set; the server needs S3 credentials to store artifacts"
  fi
  # Only the server talks to S3: it needs MLFLOW_S3_ENDPOINT_URL and AWS_* (exported from this environment).
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_BACKEND_STORE_URI=$BACKEND
  if [ -n "$ENDPOINT" ]; then export MLFLOW_S3_ENDPOINT_URL=$ENDPOINT; fi
  server_args
  say "mlflow server on $HOST:$PORT, store $(echo "$BACKEND" | redact), artifacts s3://$BUCKET/mlflow (proxied)"
  exec "$MLFLOW" "${args[@]}"
}

running_pid() {  # the pid from the pid file, if that process still runs
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

do_up() {
  need_python
  if pid=$(running_pid); then
    healthy "$URL" && { say "already running (pid $pid) at $URL"; do_env; return 0; }
    die "pid $pid from $PIDFILE runs but $URL/health does not answer; run '$0 down' first"
  fi
  if healthy "$URL"; then die "something else already answers at $URL; choose another PORT"; fi
  do_init
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  # The child reads its settings from the environment (options included), not from its command line,
  # so no password shows in `ps`.
  export LESIONSEG_BUCKET=$BUCKET MLFLOW_BACKEND_STORE_URI=$BACKEND HOST PORT MLFLOW_S3_ENDPOINT_URL=$ENDPOINT
  if [ -n "${ALLOWED_HOSTS:-}" ]; then export ALLOWED_HOSTS; fi
  # A new session (setsid): the server and its workers form one process group that `down` stops.
  if command -v setsid >/dev/null; then
    setsid "${BASH:-bash}" "$0" server </dev/null >"$LOGFILE" 2>&1 &
  else
    nohup "${BASH:-bash}" "$0" server </dev/null >"$LOGFILE" 2>&1 &
  fi
  echo $! >"$PIDFILE"
  say "started mlflow server (pid $(cat "$PIDFILE"), log $LOGFILE); waiting for $URL/health"
  local waited=0
  until healthy "$URL"; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      tail -n 30 "$LOGFILE" | redact >&2
      rm -f "$PIDFILE"
      die "mlflow server exited; log above ($LOGFILE)"
    fi
    [ "$waited" -lt "$HEALTH_TIMEOUT" ] || { do_down; die "no answer from $URL/health after ${HEALTH_TIMEOUT}s"; }
    sleep 1; waited=$((waited + 1))
  done
  say "ready at $URL after ${waited}s"
  do_env
}

do_down() {
  local pid
  if ! pid=$(running_pid); then say "not running (no live pid in $PIDFILE)"; rm -f "$PIDFILE"; return 0; fi
  # setsid made the server a group leader: signal its group (server + workers), else the pid alone.
  if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then target=-$pid; else target=$pid; fi
  kill -TERM -- "$target" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "$target" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  say "stopped mlflow server (pid $pid)"
}

do_status() {
  need_python
  if pid=$(running_pid) && healthy "$URL"; then say "running (pid $pid) at $URL"; return 0; fi
  say "not running at $URL"; return 1
}

do_dvc_remote() {
  need_bucket
  command -v "$DVC" >/dev/null || die "'$DVC' not found; activate the environment or set DVC"
  [ -d .dvc ] || die "$(pwd) is not a DVC repository (run it at the project root, after 'dvc init')"
  # Tracked (.dvc/config): where the data live. Nothing secret.
  "$DVC" remote add --default --force "$REMOTE" "s3://$BUCKET/dvc"
  if [ -n "$ENDPOINT" ]; then "$DVC" remote modify "$REMOTE" endpointurl "$ENDPOINT"; fi
  if [ -n "${AWS_DEFAULT_REGION:-}" ]; then "$DVC" remote modify "$REMOTE" region "$AWS_DEFAULT_REGION"; fi
  # Per machine (.dvc/config.local, git-ignored by dvc init): the credentials.
  if [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
    [ -n "${AWS_SECRET_ACCESS_KEY:-}" ] || die "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
    "$DVC" remote modify --local "$REMOTE" access_key_id "$AWS_ACCESS_KEY_ID"
    "$DVC" remote modify --local "$REMOTE" secret_access_key "$AWS_SECRET_ACCESS_KEY"
    if [ -n "${AWS_SESSION_TOKEN:-}" ]; then "$DVC" remote modify --local "$REMOTE" session_token "$AWS_SESSION_TOKEN"; fi
    chmod 600 .dvc/config.local
  else
    say "no AWS_ACCESS_KEY_ID: DVC will use the machine's AWS credential chain (profile, instance role)"
  fi
  if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1 && [ -f .dvc/config.local ] \
     && ! git check-ignore -q .dvc/config.local; then
    die ".dvc/config.local is NOT git-ignored: add '/config.local' to .dvc/.gitignore before committing"
  fi
  say "DVC remote '$REMOTE' = s3://$BUCKET/dvc${ENDPOINT:+ at $ENDPOINT} (default); commit .dvc/config, never .dvc/config.local"
}

do_env() {
  cat <<EOF
# lesionseg team stack: clients need only these (no S3 keys: artifacts go through the server)
export MLFLOW_TRACKING_URI=$CLIENT_URL
# Optuna workers: lesionseg tune --storage "\$OPTUNA_STORAGE" ... (password from PGPASSWORD or ~/.pgpass)
export OPTUNA_STORAGE=$(echo "$OPTUNA" | sed -E 's#(://[^:/@]*):[^@/]*@#\1@#')
EOF
}

case "$command" in
  init) do_init ;;
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  server) do_server ;;
  dvc-remote) do_dvc_remote ;;
  env) do_env ;;
  help|-h|--help) usage ;;
  *) die "unknown command '$command' (init, up, down, status, server, dvc-remote, env)" ;;
esac
