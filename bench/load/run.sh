#!/usr/bin/env bash
# Capacity run on this machine: the production gunicorn command (gunicorn.conf.py, uvicorn workers)
# against PostgreSQL and a private Redis, driven by tests/load_test.py (locust, headless).
# Everything listens on 127.0.0.1 and stops by itself.
#
# Usage: bench/load/run.sh USERS SPAWN_RATE SECONDS [WORKERS]
# Prints locust's summary, the app's cache hit ratio and rate-limit decisions from /metrics.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
USERS="${1:-100}"; RATE="${2:-10}"; SECONDS_TO_RUN="${3:-60}"; WORKERS="${4:-2}"
DB=hp_bench_load
APP_PORT=8790
REDIS_PORT=6391
OUT="$ROOT/bench/load/out"
mkdir -p "$OUT"

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export ENVIRONMENT=production
JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
export TRUSTED_PROXY_COUNT=1 RATE_LIMIT_ENABLED=true CACHE_ENABLED=true QUEUE_BACKEND=local
export RATE_LIMIT_EXPECTED_PROCESSES="$WORKERS" LOG_LEVEL=WARNING
export GUNICORN_BIND="127.0.0.1:$APP_PORT" GUNICORN_WORKERS="$WORKERS"
# Longer than locust's idle gaps, as a proxy's keep-alive would be: otherwise the server closes
# an idle connection just as the client reuses it and the client sees a reset.
export GUNICORN_KEEPALIVE=75

cd "$ROOT/backend"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
ADMINS=$(( USERS / 10 + 1 ))
"$ROOT/.venv/bin/python" -m devtools.seed --candidates "$USERS" --jobs 500 --admins "$ADMINS"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
cd "$ROOT"
PROMETHEUS_MULTIPROC_DIR="$OUT/metrics" "$ROOT/.venv/bin/gunicorn" --config gunicorn.conf.py app.main:app >"$OUT/gunicorn.log" 2>&1 &
APP_PID=$!
trap 'kill $APP_PID $REDIS_PID 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$APP_PORT/health/ready" >/dev/null && break; sleep 0.2; done

cd "$ROOT/backend"
LOADTEST_CANDIDATES="$USERS" LOADTEST_ADMINS="$ADMINS" "$ROOT/.venv/bin/locust" -f tests/load_test.py --headless \
  --host "http://127.0.0.1:$APP_PORT" -u "$USERS" -r "$RATE" -t "${SECONDS_TO_RUN}s" \
  --only-summary --csv "$OUT/locust" 2>&1 | grep -vE "^\s*$" | tail -45

curl -s "http://127.0.0.1:$APP_PORT/metrics" >"$OUT/metrics.txt"
"$ROOT/.venv/bin/python" - "$OUT/metrics.txt" <<'PY'
import re, sys
from collections import defaultdict
hits, misses = defaultdict(float), defaultdict(float)
decisions = defaultdict(float)
for line in open(sys.argv[1]):
    m = re.match(r'hiringpro_cache_(hits|misses)_total\{([^}]*)\} ([0-9.e+]+)', line)
    if m:
        ns = dict(kv.split("=") for kv in m.group(2).replace('"', "").split(",")).get("namespace", "?")
        (hits if m.group(1) == "hits" else misses)[ns] += float(m.group(3))
    m = re.match(r'hiringpro_rate_limit_decisions_total\{([^}]*)\} ([0-9.e+]+)', line)
    if m:
        labels = dict(kv.split("=") for kv in m.group(1).replace('"', "").split(","))
        decisions[labels.get("outcome", "?")] += float(m.group(2))
total_h, total_m = sum(hits.values()), sum(misses.values())
for ns in sorted(set(hits) | set(misses)):
    h, mi = hits[ns], misses[ns]
    print(f"cache {ns}: hits={h:.0f} misses={mi:.0f} ratio={h / max(h + mi, 1):.1%}")
print(f"cache overall hit ratio: {total_h / max(total_h + total_m, 1):.1%}")
print("rate-limit decisions:", dict(decisions))
PY
