#!/usr/bin/env bash
# CPU per shed answer (see shed_cost.py). Needs the database and accounts of a run.sh run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/overload"
OUT="${OUT:-$HERE/out}"
APP_PORT=8796
REDIS_PORT=6396
export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/hp_bench_overload"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export ENVIRONMENT=production LOG_LEVEL=WARNING
# The accounts' tokens were signed with run.sh's secret: sign new ones with this one.
JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
export TRUSTED_PROXY_COUNT=1 CACHE_ENABLED=true QUEUE_BACKEND=local
big='{"capacity": 1000000, "refill": 1000000}'
export RATE_LIMIT_TIERS="{\"auth\": $big, \"ai_heavy\": $big, \"upload\": $big, \"read\": $big,
  \"write\": $big, \"default\": $big}"
export GUNICORN_BIND="127.0.0.1:$APP_PORT" GUNICORN_WORKERS=1
# The limit pinned to 1, no background queue: every background request is shed at once.
# (PINNED=0 keeps the defaults, to compare the cost of served requests.)
if [ "${PINNED:-1}" = 1 ]; then
  export OVERLOAD_MIN_LIMIT=1 OVERLOAD_INITIAL_LIMIT=1 OVERLOAD_MAX_LIMIT=1
  export OVERLOAD_QUEUES='{"critical": {"size": 256, "timeout_seconds": 2},
    "normal": {"size": 128, "timeout_seconds": 1}, "background": {"size": 0, "timeout_seconds": 0}}'
fi
mkdir -p "$OUT/shed-cost"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$OUT/shed-cost/redis.log" 2>&1 &
REDIS_PID=$!
cd "$ROOT/backend"
PYTHONPATH="$ROOT/backend" "$ROOT/.venv/bin/python" "$HERE/tokens.py" "$OUT/shed-cost/accounts.json"
cd "$ROOT"
PROMETHEUS_MULTIPROC_DIR="$OUT/shed-cost/prometheus" "$ROOT/.venv/bin/gunicorn" \
  --config gunicorn.conf.py app.main:app >"$OUT/shed-cost/gunicorn.log" 2>&1 &
APP_PID=$!
trap 'kill $APP_PID $REDIS_PID 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$APP_PORT/health/ready" >/dev/null && break; sleep 0.2; done
WORKER_PID=$(pgrep -P "$APP_PID" | head -1)
"$ROOT/.venv/bin/python" "$HERE/shed_cost.py" "http://127.0.0.1:$APP_PORT" "$APP_PORT" "$WORKER_PID" \
  "$OUT/shed-cost/accounts.json"
