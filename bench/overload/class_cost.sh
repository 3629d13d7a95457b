#!/usr/bin/env bash
# CPU per request of one class alone at a light rate, split by process (the app's workers,
# PostgreSQL, the private Redis, the generator), from /proc over 10 s of a 16 s load.
# Needs the database of a run.sh run. Usage: bench/overload/class_cost.sh CLASS RATE
# e.g. bench/overload/class_cost.sh critical 40   (classes: critical login normal background)
set -euo pipefail
CLASS=$1 RATE=$2
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/overload"
OUT="${OUT:-$HERE/out}/class-cost"
APP_PORT=8797
REDIS_PORT=6397
mkdir -p "$OUT"
export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/hp_bench_overload"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" ENVIRONMENT=production LOG_LEVEL=WARNING
JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
export TRUSTED_PROXY_COUNT=1 CACHE_ENABLED=true QUEUE_BACKEND=local RATE_LIMIT_EXPECTED_PROCESSES=2
big='{"capacity": 1000000, "refill": 1000000}'
export RATE_LIMIT_TIERS="{\"auth\": {\"capacity\": 1000000, \"refill\": 1000000, \"key_by\": \"ip\"},
  \"ai_heavy\": $big, \"upload\": $big, \"read\": $big, \"write\": $big, \"default\": $big}"
export GUNICORN_BIND="127.0.0.1:$APP_PORT" GUNICORN_WORKERS=2
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
cd "$ROOT/backend"
PYTHONPATH="$ROOT/backend" "$ROOT/.venv/bin/python" "$HERE/tokens.py" "$OUT/accounts.json"
cd "$ROOT"
PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus" "$ROOT/.venv/bin/gunicorn" --config gunicorn.conf.py \
  app.main:app >"$OUT/gunicorn.log" 2>&1 &
APP_PID=$!
trap 'kill $APP_PID $REDIS_PID 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$APP_PORT/health/ready" >/dev/null && break; sleep 0.2; done
START_AT=$(python3 -c 'import time; print(time.time() + 1)')
"$ROOT/.venv/bin/python" - "$APP_PID" "$REDIS_PID" <<'PY' &
import sys
import time

import psutil

app, redis = int(sys.argv[1]), int(sys.argv[2])


def snapshot() -> dict[str, float]:
    totals: dict[str, float] = {}
    for process in psutil.process_iter(["username", "cmdline"]):
        try:
            times = process.cpu_times()
            parent = process.ppid()
        except psutil.Error:
            continue
        command = " ".join(process.info["cmdline"] or [])
        if process.pid == redis:
            key = "redis"
        elif process.info["username"] == "postgres":
            key = "postgres"
        elif app in (process.pid, parent):
            key = "app (gunicorn)"
        elif "loadgen.py" in command:
            key = "generator"
        else:
            key = "other"
        totals[key] = totals.get(key, 0.0) + times.user + times.system
    return totals


time.sleep(4)
before = snapshot()
time.sleep(10)
after = snapshot()
for key in sorted(after):
    print(f"{key}: {(after[key] - before.get(key, 0.0)) / 10:.3f} cores")
PY
SAMPLER=$!
"$ROOT/.venv/bin/python" "$HERE/loadgen.py" --host "http://127.0.0.1:$APP_PORT" \
  --accounts "$OUT/accounts.json" --start-at "$START_AT" --out "$OUT/requests-0.csv" \
  --summary "$OUT/generator-0.json" --scenario ramp --rates "$RATE" --step-seconds 16 --only "$CLASS"
wait "$SAMPLER"
python3 -c "
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ok = sum(1 for row in rows if row['status'].startswith('2'))
print(f'{len(rows)} requests in 16 s ({len(rows) / 16:.1f}/s), {ok} ok')
" "$OUT/requests-0.csv"
