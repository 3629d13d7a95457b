#!/usr/bin/env bash
# Read-route benchmark: one uvicorn worker (uvloop, httptools) pinned to CPU 0, wrk pinned to CPU 1,
# 64 connections, the 20 newest of 5,000 jobs. Routes are measured in alternation (ABCABC) so drift
# on a shared machine hits them alike. Usage: bench/read_routes/run.sh [seconds-per-run]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${1:-10}"
DB=hp_bench_read
PORT=8765
export BENCH_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
cd "$ROOT/backend"
DATABASE_URL="$BENCH_DATABASE_URL" "$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
DATABASE_URL="$BENCH_DATABASE_URL" "$ROOT/.venv/bin/python" -m devtools.seed --candidates 1 --jobs 5000
psql -q -h 127.0.0.1 -U postgres -d $DB -c "VACUUM ANALYZE"

PYTHONPATH="$ROOT/backend:$ROOT/bench/read_routes" taskset -c 0 "$ROOT/.venv/bin/uvicorn" bench_app:app \
  --host 127.0.0.1 --port $PORT --loop uvloop --http httptools --no-access-log --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/api/jobs" >/dev/null && break; sleep 0.1; done
for path in /api/jobs /bench/raw /bench/orm; do
  echo "$path: $(curl -s "http://127.0.0.1:$PORT$path" | wc -c) bytes"
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT$path" >/dev/null  # warm-up
done
for round in 1 2; do
  for path in /api/jobs /bench/raw /bench/orm; do
    echo "== round $round $path"
    taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT$path" \
      | grep -E "Requests/sec|^ +(50|99)%|Non-2xx|Socket errors"
  done
done
