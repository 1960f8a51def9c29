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
#   deploy/team-stack.sh user add NAME --role reader|trainer|maintainer
#                                    create an MLflow login (or change its role) on a server started with auth
#   deploy/team-stack.sh user passwd NAME    set a new password     deploy/team-stack.sh user remove NAME
#
# Authentication (MLflow's basic-auth app, users and roles; see docs/team-stack.md, "Logins and roles"):
#   AUTH=auto|on|off         --auth / --no-auth      auto (default): on unless HOST is a loopback address
#   MLFLOW_AUTH_ADMIN_USERNAME                       the admin MLflow creates on its first start (default admin)
#   MLFLOW_AUTH_ADMIN_PASSWORD, or MLFLOW_AUTH_ADMIN_PASSWORD_FILE  --admin-password-file FILE
#                            the admin's password: environment or a file only its owner can read (mode 600)
#   LESIONSEG_USER_PASSWORD, or LESIONSEG_USER_PASSWORD_FILE  --password-file FILE
#                            a new password for `user add` / `user passwd` (never an argument: `ps` shows those)
#   MLFLOW_FLASK_SERVER_SECRET_KEY                   default: generated once into STATE_DIR/flask-secret-key
#   MLFLOW_AUTH_DB_URI       --auth-db-uri URI       users and permissions (default: postgresql+psycopg2://PGUSER@PGHOST:PGPORT/AUTH_DB)
#   AUTH_DB=lesionseg_mlflow_auth                    database name for the default URL
#   AUTH_DEFAULT_PERMISSION  NO_PERMISSIONS (default) or READ: what a login holds where no role grants anything
#   AUTH_CACHE_TTL           seconds the server trusts a checked password (default 60; 0: a scrypt hash on every
#                            request). Password changes and removals through the API apply at once (one worker)
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
user_action="" user_name="" role=""
if [ "$command" = user ]; then
  user_action=${1:-}; [ $# -gt 0 ] && shift
  case "${1:-}" in -*|"") ;; *) user_name=$1; shift ;; esac
fi
while [ $# -gt 0 ]; do
  case "$1" in -h|--help|--auth|--no-auth) ;; *) [ $# -ge 2 ] || die "$1 needs a value" ;; esac
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
    --auth) AUTH=on; shift ;;
    --no-auth) AUTH=off; shift ;;
    --auth-db-uri) MLFLOW_AUTH_DB_URI=$2; shift 2 ;;
    --admin-password-file) MLFLOW_AUTH_ADMIN_PASSWORD_FILE=$2; shift 2 ;;
    --password-file) LESIONSEG_USER_PASSWORD_FILE=$2; shift 2 ;;
    --role) role=$2; shift 2 ;;
    --password|--admin-password)
      die "$1: passwords never go on the command line (\`ps\` shows it to everyone); use an environment variable or a file (see --help)" ;;
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
ROOT=$(cd "$(dirname "$0")/.." && pwd)  # the project: lesionseg.tracking.auth_server runs inside the server
AUTH_DB_URI=${MLFLOW_AUTH_DB_URI:-postgresql+psycopg2://${PGUSER_}@${PGHOST_}:${PGPORT_}/${AUTH_DB:-lesionseg_mlflow_auth}}
ADMIN_USER=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
AUTH_DEFAULT_PERMISSION=${AUTH_DEFAULT_PERMISSION:-NO_PERMISSIONS}
AUTH_CACHE_TTL=${AUTH_CACHE_TTL:-60}
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
AUTH_CONFIG=$STATE_DIR/basic_auth-$PORT.ini

loopback() { case "$1" in 127.*|localhost|::1|"[::1]") return 0 ;; *) return 1 ;; esac; }
case "${AUTH:-auto}" in
  on|off) AUTH_MODE=$AUTH ;;
  auto) if loopback "$HOST"; then AUTH_MODE=off; else AUTH_MODE=on; fi ;;
  *) die "AUTH=$AUTH: expected auto, on or off" ;;
esac
case "$AUTH_DEFAULT_PERMISSION" in NO_PERMISSIONS|READ) ;; *) die "AUTH_DEFAULT_PERMISSION: NO_PERMISSIONS or READ" ;; esac
[[ "$AUTH_CACHE_TTL" =~ ^[0-9]+$ ]] || die "AUTH_CACHE_TTL: a number of seconds"

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
  # The URLs travel in the environment, not as arguments: `ps` shows arguments to every user.
  local auth_db=""
  if [ "$AUTH_MODE" = on ]; then auth_db=$AUTH_DB_URI; fi
  TS_BACKEND=$BACKEND TS_OPTUNA=$OPTUNA TS_AUTH_DB=$auth_db TS_BUCKET=$BUCKET TS_ENDPOINT=$ENDPOINT "$PYTHON" - <<'EOF'
import os
import re
import sys

backend, optuna_url, auth_db = os.environ["TS_BACKEND"], os.environ["TS_OPTUNA"], os.environ["TS_AUTH_DB"]
bucket, endpoint = os.environ["TS_BUCKET"], os.environ["TS_ENDPOINT"]


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
if auth_db in (backend, optuna_url):
    sys.exit("team-stack: error: MLflow's logins need a database of their own (MLFLOW_AUTH_DB_URI)")
ensure_database(backend)
ensure_database(optuna_url)
if auth_db:
    ensure_database(auth_db)
ensure_bucket(bucket, endpoint)
EOF
}

server_args() {
  # The backend URI travels in MLFLOW_BACKEND_STORE_URI (mlflow's own variable), not on the command line.
  args=(server --artifacts-destination "s3://$BUCKET/mlflow" --serve-artifacts
        --host "$HOST" --port "$PORT" --workers 1)
  if [ -n "${ALLOWED_HOSTS:-}" ]; then args+=(--allowed-hosts "$ALLOWED_HOSTS"); fi
  if [ "$AUTH_MODE" = on ]; then args+=(--app-name basic-auth); fi
}

# ------------------------------------------------------------------------------------------------ auth
read_secret_file() {  # read_secret_file FILE VAR: VAR = first line of FILE, which only its owner may read
  local file=$1 mode
  [ -f "$file" ] || die "$file: no such file"
  [ -O "$file" ] || die "$file: not owned by $(id -un); a password file must be yours alone"
  mode=$(stat -c %a "$file" 2>/dev/null || stat -f %Lp "$file")
  if (( 8#$mode & 8#077 )); then die "$file: mode $mode lets others read it; run: chmod 600 $file"; fi
  IFS= read -r "$2" <"$file" || true
  [ -n "${!2}" ] || die "$file: empty"
}

load_admin_password() {  # MLFLOW_AUTH_ADMIN_PASSWORD, from its file when one is named
  if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD_FILE:-}" ]; then
    read_secret_file "$MLFLOW_AUTH_ADMIN_PASSWORD_FILE" MLFLOW_AUTH_ADMIN_PASSWORD
  fi
  [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || die "MLflow logins need the admin's password: export" \
    "MLFLOW_AUTH_ADMIN_PASSWORD or MLFLOW_AUTH_ADMIN_PASSWORD_FILE=FILE (mode 600), or pass --admin-password-file FILE"
  export MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_AUTH_ADMIN_USERNAME=$ADMIN_USER
}

load_user_password() {  # LESIONSEG_USER_PASSWORD, from its file when one is named
  if [ -n "${LESIONSEG_USER_PASSWORD_FILE:-}" ]; then
    read_secret_file "$LESIONSEG_USER_PASSWORD_FILE" LESIONSEG_USER_PASSWORD
  fi
  if [ -n "${LESIONSEG_USER_PASSWORD:-}" ]; then export LESIONSEG_USER_PASSWORD; fi
}

load_secret_key() {  # MLFLOW_FLASK_SERVER_SECRET_KEY, else one generated once and kept in STATE_DIR
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    local file=$STATE_DIR/flask-secret-key
    if [ ! -s "$file" ]; then
      (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$file")
    fi
    read_secret_file "$file" MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  export MLFLOW_FLASK_SERVER_SECRET_KEY
}

write_auth_config() {  # MLflow's basic_auth.ini (mode 600; no password unless the database URL holds one)
  (umask 077; printf '%s\n' "[mlflow]" "default_permission = $AUTH_DEFAULT_PERMISSION" \
    "database_uri = ${AUTH_DB_URI//%/%%}" "admin_username = $ADMIN_USER" \
    "authorization_function = lesionseg.tracking.auth_server:authenticate_request" \
    "auth_cache_ttl_seconds = $AUTH_CACHE_TTL" >"$AUTH_CONFIG")
  chmod 600 "$AUTH_CONFIG"
  export MLFLOW_AUTH_CONFIG_PATH=$AUTH_CONFIG PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
}

prepare_auth() {  # everything `mlflow server --app-name basic-auth` reads, in its environment
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  load_admin_password
  load_secret_key
  write_auth_config
}

warn_exposure() {  # what binding beyond loopback means with the chosen AUTH_MODE
  loopback "$HOST" && return 0
  if [ "$AUTH_MODE" = off ]; then
    say "warning: no logins (--no-auth) on $HOST: whoever reaches port $PORT can read, change and delete everything"
  elif [[ "$CLIENT_URL" != https://* ]]; then
    say "warning: logins over plain http send passwords in the clear: put a TLS proxy in front (docs/team-stack.md, TLS)"
  fi
}

run_admin() {  # run_admin URL ARGS...: python -m lesionseg.tracking.access_admin ARGS as the MLflow admin
  local url=$1
  shift
  load_admin_password
  healthy "$url" || die "no MLflow server answers at $url (start it: $0 up --auth; or set MLFLOW_TRACKING_URI, PORT)"
  MLFLOW_TRACKING_URI=$url MLFLOW_TRACKING_USERNAME=$ADMIN_USER MLFLOW_TRACKING_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD \
    PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" -m lesionseg.tracking.access_admin "$@"
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
  if [ "$AUTH_MODE" = on ]; then
    need_python
    prepare_auth
    say "logins on (basic-auth, admin '$ADMIN_USER', users in $(echo "$AUTH_DB_URI" | redact))"
  fi
  warn_exposure
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
  if [ "$AUTH_MODE" = on ]; then load_admin_password; fi  # fail before anything starts
  warn_exposure
  do_init
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  # The child reads its settings from the environment (options included), not from its command line,
  # so no password shows in `ps`.
  export LESIONSEG_BUCKET=$BUCKET MLFLOW_BACKEND_STORE_URI=$BACKEND HOST PORT MLFLOW_S3_ENDPOINT_URL=$ENDPOINT
  export STATE_DIR AUTH=$AUTH_MODE MLFLOW_AUTH_DB_URI=$AUTH_DB_URI
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
  if [ "$AUTH_MODE" = on ]; then
    run_admin "$URL" setup || { do_down; die "could not set up the project's experiments, models and roles"; }
  fi
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
  if [ "$AUTH_MODE" = on ]; then
    cat <<'EOF'
# Logins: each member their own (the admin runs: deploy/team-stack.sh user add NAME --role reader|trainer|maintainer)
# export MLFLOW_TRACKING_USERNAME=NAME; read -rsp 'MLflow password: ' MLFLOW_TRACKING_PASSWORD; export MLFLOW_TRACKING_PASSWORD
EOF
  fi
}

do_user() {
  need_python
  case "$user_action" in
    add|passwd|remove) ;;
    *) die "user: add NAME --role reader|trainer|maintainer, passwd NAME, or remove NAME" ;;
  esac
  [[ "$user_name" =~ ^[A-Za-z0-9][A-Za-z0-9._@-]*$ ]] || die "user $user_action needs a NAME (letters, digits, . _ @ -)"
  case "$user_action" in
    add)
      case "$role" in reader|trainer|maintainer) ;; *) die "user add $user_name needs --role reader|trainer|maintainer" ;; esac
      load_user_password
      run_admin "$CLIENT_URL" user-add "$user_name" --role "$role" ;;
    passwd)
      load_user_password
      run_admin "$CLIENT_URL" user-passwd "$user_name" ;;
    remove) run_admin "$CLIENT_URL" user-remove "$user_name" ;;
  esac
}

case "$command" in
  init) do_init ;;
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  server) do_server ;;
  dvc-remote) do_dvc_remote ;;
  env) do_env ;;
  user) do_user ;;
  help|-h|--help) usage ;;
  *) die "unknown command '$command' (init, up, down, status, server, dvc-remote, env, user)" ;;
esac
