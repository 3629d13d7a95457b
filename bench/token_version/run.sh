#!/usr/bin/env bash
# Token-version check benchmark (bench/token_version/run.py): a fresh migrated database and a
# private redis-server, then every variant in one process, in alternating rounds.
# Usage: bench/token_version/run.sh   (BENCH_ROUNDS, BENCH_CALLS, BENCH_REQUESTS to change sizes)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DB=hp_bench_token_version
REDIS_PORT=6391
export BENCH_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"
export BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
cd "$ROOT/backend"
DATABASE_URL="$BENCH_DATABASE_URL" "$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
REDIS=$!
trap 'kill $REDIS 2>/dev/null; wait $REDIS 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
PYTHONPATH="$ROOT/backend" "$ROOT/.venv/bin/python" "$ROOT/bench/token_version/run.py"
