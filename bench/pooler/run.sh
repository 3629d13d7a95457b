#!/usr/bin/env bash
# Pooler benchmark (issue 11): the app through a transaction-mode PgBouncer against the direct
# path. One uvicorn worker per configuration (uvloop, httptools) pinned to CPU 0, wrk -c64
# pinned to CPU 1, measured in alternation (round by round, route by route, configuration by
# configuration, every other round in reverse order) so drift on a shared machine hits them
# alike; then the database work of one request counted through a proxy (wire_counter.py), and
# the cost of opening one connection (connect_cost.py) and of the read pool's reset query
# (read_pool_reset.py).
# Usage: bench/pooler/run.sh [seconds-per-run] [rounds]. Needs wrk (apt-get install wrk) and
# pgbouncer; everything it starts is stopped, and the bench database dropped, on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${1:-10}"
ROUNDS="${2:-2}"
DB=hp_bench_pooler
POOL_SIZE=10  # PgBouncer server connections for the bench database (see RESULTS.md)
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
command -v wrk >/dev/null || { echo "bench/pooler needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$PGBOUNCER" ] || { echo "bench/pooler needs pgbouncer" >&2; exit 1; }
PY="$ROOT/.venv/bin/python"
export PYTHONPATH="$ROOT/backend:$ROOT/bench/pooler"
unset REDIS_URL DATABASE_DIRECT_URL
WORK="$(mktemp -d /tmp/bench-pooler.XXXXXX)"

cleanup() {
  for pidfile in "$WORK"/pgbouncer*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# PgBouncer refuses to run as root: then it runs as postgres, in a directory postgres owns.
as_pooler_user() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_pgbouncer() {  # name port [extra ini lines]
  local name=$1 port=$2 extra=${3:-}
  cat >"$WORK/$name.ini" <<EOF
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $WORK/users.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
server_reset_query =
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $WORK/$name.log
pidfile = $WORK/$name.pid
$extra
EOF
  [ "$(id -u)" = 0 ] && chown -R postgres "$WORK"
  as_pooler_user "$PGBOUNCER" -d "$WORK/$name.ini"
  for _ in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$port" -U postgres -Atc 'SHOW VERSION' pgbouncer >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

echo "== $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "load $(cut -d' ' -f1-3 /proc/loadavg); $("$PGBOUNCER" --version | head -1);" \
  "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW server_version')"

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DIRECT_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"
cd "$ROOT/backend"
DATABASE_URL="$DIRECT_URL" USE_EXTERNAL_POOLER=false "$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
DATABASE_URL="$DIRECT_URL" USE_EXTERNAL_POOLER=false "$PY" -m devtools.seed --candidates 1000 --jobs 5000
psql -q -h 127.0.0.1 -U postgres -d $DB -c "VACUUM ANALYZE"

echo '"postgres" ""' >"$WORK/users.txt"
PGB_PORT="$(free_port)"
start_pgbouncer pgbouncer "$PGB_PORT"
# A second PgBouncer, client side TLS only (self-signed, RSA 2048), for the connection cost.
mkdir "$WORK/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" \
  -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
chmod 600 "$WORK/tls/key.pem"
TLS_PORT="$(free_port)"
start_pgbouncer pgbouncer-tls "$TLS_PORT" "client_tls_sslmode = require
client_tls_key_file = $WORK/tls/key.pem
client_tls_cert_file = $WORK/tls/cert.pem"
echo "PgBouncer: transaction mode, default_pool_size $POOL_SIZE, port $PGB_PORT (TLS: $TLS_PORT)"

"$PY" "$ROOT/bench/pooler/measure.py" --db $DB --workdir "$WORK" --pgbouncer-port "$PGB_PORT" \
  --tls-port "$TLS_PORT" \
  --seconds "$DURATION" --rounds "$ROUNDS"
POSTMASTER_PID="$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW data_directory' | xargs -I{} head -1 {}/postmaster.pid)"
"$PY" "$ROOT/bench/pooler/connect_cost.py" --db $DB --pgbouncer-port "$PGB_PORT" \
  --pgbouncer-pid "$(cat "$WORK/pgbouncer.pid")" --tls-port "$TLS_PORT" \
  --tls-pid "$(cat "$WORK/pgbouncer-tls.pid")" --postmaster-pid "$POSTMASTER_PID"
"$PY" "$ROOT/bench/pooler/read_pool_reset.py" --db $DB --pgbouncer-port "$PGB_PORT" \
  --pgbouncer-pid "$(cat "$WORK/pgbouncer.pid")"
echo "== done, load $(cut -d' ' -f1-3 /proc/loadavg)"
