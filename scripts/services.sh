#!/usr/bin/env bash
# Start or stop the services the integration tests use, on loopback only:
#   - PostgreSQL (the dbt `postgres` target and the export read it), run as a non-root user;
#   - an MLflow tracking server (the "remote registry" configuration), SQLite-backed, serving artifacts;
#   - Redis (Debian's redis-server), the Celery broker of the CeleryExecutor test, when installed.
# `scripts/services.sh start` writes $RETRAIN_SERVICES_DIR/env with the URLs the tests read;
# `scripts/services.sh stop` stops both. Used by .ci/run; works the same on a developer machine.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${RETRAIN_SERVICES_DIR:-/tmp/retrain-services}"
PG_PORT="${RETRAIN_TEST_PG_PORT:-55432}"
MLFLOW_PORT="${RETRAIN_TEST_MLFLOW_PORT:-55000}"
REDIS_PORT="${RETRAIN_TEST_REDIS_PORT:-56379}"
PG_USER_OS="${RETRAIN_PG_OS_USER:-retrainpg}"
PY="${PY:-$ROOT/.venv/bin/python}"

pg_bin() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [[ -z "$bin" ]]; then bin="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"; fi
  [[ -x "$bin/initdb" ]] || { echo "services: PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; return 1; }
  echo "$bin"
}

as_pg() {
  if [[ "$(id -u)" == "0" ]]; then runuser -u "$PG_USER_OS" -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin; bin="$(pg_bin)"
  if [[ "$(id -u)" == "0" ]] && ! id "$PG_USER_OS" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_OS"
  fi
  mkdir -p "$DIR/pg"
  [[ "$(id -u)" == "0" ]] && chown -R "$PG_USER_OS" "$DIR/pg"
  if [[ ! -f "$DIR/pg/data/PG_VERSION" ]]; then
    echo "postgres" > "$DIR/pg/pwfile"; [[ "$(id -u)" == "0" ]] && chown "$PG_USER_OS" "$DIR/pg/pwfile"
    as_pg "$bin/initdb" -D "$DIR/pg/data" -U postgres --pwfile="$DIR/pg/pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $DIR/pg -c listen_addresses=127.0.0.1" start >/dev/null
  as_pg "$bin/psql" -h "$DIR/pg" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retrain') THEN
    CREATE ROLE retrain LOGIN PASSWORD 'retrain-test-pw';
  END IF;
END $$;
SELECT 'CREATE DATABASE retrain OWNER retrain' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'retrain')\gexec
SQL
  echo "services: postgres on 127.0.0.1:$PG_PORT"
}

start_mlflow() {
  mkdir -p "$DIR/mlflow"
  # setsid: the server's workers (uvicorn, the job runner) share its process group, so stop() ends them all.
  setsid nohup "$PY" -m mlflow server \
    --backend-store-uri "sqlite:///$DIR/mlflow/mlflow.db" \
    --artifacts-destination "$DIR/mlflow/artifacts" --serve-artifacts \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >"$DIR/mlflow/server.log" 2>&1 &
  echo $! > "$DIR/mlflow/pid"
  for _ in $(seq 1 120); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1; then
      echo "services: mlflow on 127.0.0.1:$MLFLOW_PORT"; return 0
    fi
    sleep 1
  done
  echo "services: mlflow server did not start; log:" >&2; tail -30 "$DIR/mlflow/server.log" >&2; return 1
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: redis-server not installed (apt-get install -y redis-server): no Celery broker" >&2
    return 0
  fi
  mkdir -p "$DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$DIR/redis" --pidfile "$DIR/redis/pid" --logfile "$DIR/redis/server.log"
  for _ in $(seq 1 50); do
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
      echo "services: redis on 127.0.0.1:$REDIS_PORT"
      echo "export RETRAIN_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" > "$DIR/redis/env"
      return 0
    fi
    sleep 0.2
  done
  echo "services: redis did not start; log:" >&2; tail -20 "$DIR/redis/server.log" >&2; return 1
}

write_env() {
  cat > "$DIR/env" <<ENV
export RETRAIN_TEST_PG_URL=postgresql://retrain:retrain-test-pw@127.0.0.1:$PG_PORT/retrain
export RETRAIN_TEST_MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT
ENV
  if [[ -f "$DIR/redis/env" ]]; then cat "$DIR/redis/env" >> "$DIR/env"; fi
  echo "services: environment in $DIR/env"
}

stop() {
  if [[ -f "$DIR/redis/pid" ]]; then
    kill "$(cat "$DIR/redis/pid")" 2>/dev/null || true
    rm -f "$DIR/redis/pid" "$DIR/redis/env"
  fi
  if [[ -f "$DIR/mlflow/pid" ]]; then
    local pid; pid="$(cat "$DIR/mlflow/pid")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    rm -f "$DIR/mlflow/pid"
  fi
  if [[ -f "$DIR/pg/data/postmaster.pid" ]]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null || true
  fi
}

case "${1:-}" in
  start) mkdir -p "$DIR"; [[ "$(id -u)" == "0" ]] && chmod 755 "$DIR"; start_postgres; start_mlflow; start_redis; write_env ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
