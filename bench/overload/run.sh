#!/usr/bin/env bash
# Overload bench (issue 15): an assessment window with a surge to 3x capacity, against three
# variants of the production command (`gunicorn --config gunicorn.conf.py app.main:app`, 2 uvicorn
# workers), side by side in one run:
#   a  today's app without shedding: OVERLOAD_ENABLED=false, CONCURRENCY_LIMIT_ENABLED=false,
#      password hashing unbounded as before (6 threads per process = the old default pool,
#      cores + 4; no queue bound)
#   b  as a, plus uvicorn's static limit_concurrency (bench/overload/limited_worker.py), tuned:
#      each value of LIMITS runs a short window first, the best one runs the full window
#   c  ours: every OVERLOAD_* / PASSWORD_HASH_* / CONCURRENCY_LIMIT_* default
# First the box's capacity: the same generator ramps the surge mix up against variant a.
# Everything listens on 127.0.0.1 (PostgreSQL at :5432, a private Redis, the app) and stops by
# itself. Results in $OUT (default bench/overload/out): per run the requests' CSVs, the
# generator's summaries, /metrics samples and vmstat; then report.md and overload.png.
#
# Usage: bench/overload/run.sh                      (the measured run, ~15 minutes)
#        QUICK=1 bench/overload/run.sh              (a tiny run to check the machinery)
# Knobs (environment): CAPACITY (skip the ramp), RAMP_RATES, LIMITS, SURGE_FACTOR, VARIANTS,
#        EXTRA_C_ENV (settings tried on variant c, e.g. "OVERLOAD_MAX_LIMIT=64").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/overload"
PY="$ROOT/.venv/bin/python"
OUT="${OUT:-$HERE/out}"
DB=hp_bench_overload
APP_PORT=8795
REDIS_PORT=6395
WORKERS=2
GENERATORS=2
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  CANDIDATES=300 ADMINS=6
  RAMP_RATES="${RAMP_RATES:-20,40}" STEP_SECONDS=5
  WINDOW=(--warmup 2 --steady 4 --surge 6 --after 6)
  TUNE_WINDOW=(--warmup 2 --steady 3 --surge 4 --after 3)
  LIMITS="${LIMITS:-16}"
else
  CANDIDATES=4000 ADMINS=50
  RAMP_RATES="${RAMP_RATES:-100,150,200,250,300,350,400,450,500,550,600,700,800,1000}"
  STEP_SECONDS=10
  WINDOW=(--warmup 10 --steady 30 --surge 45 --after 45)
  TUNE_WINDOW=(--warmup 8 --steady 10 --surge 25 --after 15)
  LIMITS="${LIMITS:-16 32 64 128}"
fi
SURGE_FACTOR="${SURGE_FACTOR:-3}"
VARIANTS="${VARIANTS:-a b c}"
HOST="http://127.0.0.1:$APP_PORT"
mkdir -p "$OUT"

# The production settings of bench/load, with the per-minute rate limits raised out of the way
# (the limiter still runs and costs what it costs): they protect one client from another and
# are not what this bench measures. Each simulated user has its own X-Forwarded-For anyway.
export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export ENVIRONMENT=production LOG_LEVEL=WARNING
JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
export TRUSTED_PROXY_COUNT=1 RATE_LIMIT_ENABLED=true CACHE_ENABLED=true QUEUE_BACKEND=local
export RATE_LIMIT_EXPECTED_PROCESSES="$WORKERS"
big='{"capacity": 1000000, "refill": 1000000}'
export RATE_LIMIT_TIERS="{\"auth\": {\"capacity\": 1000000, \"refill\": 1000000, \"key_by\": \"ip\"},
  \"ai_heavy\": $big, \"upload\": $big, \"read\": $big, \"write\": $big, \"default\": $big}"
export GUNICORN_BIND="127.0.0.1:$APP_PORT" GUNICORN_WORKERS="$WORKERS"

APP_PID="" REDIS_PID="" VMSTAT_PID=""
cleanup() {
  for pid in $APP_PID $VMSTAT_PID $REDIS_PID; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
cd "$ROOT/backend"
"$ROOT/.venv/bin/alembic" upgrade head >/dev/null 2>&1
"$PY" -m devtools.seed --candidates "$CANDIDATES" --jobs 500 --admins "$ADMINS"
PYTHONPATH="$ROOT/backend" "$PY" "$HERE/tokens.py" "$OUT/accounts.json"
cd "$ROOT"

# start_app VARIANT [LIMIT]: the production command with the variant's settings.
start_app() {
  local variant=$1 limit=${2:-} dir=$3
  local -a env=(PROMETHEUS_MULTIPROC_DIR="$dir/prometheus") args=()
  case $variant in
    a|b) env+=(OVERLOAD_ENABLED=false CONCURRENCY_LIMIT_ENABLED=false
               PASSWORD_HASH_CONCURRENCY=6 PASSWORD_HASH_QUEUE_MAX=1000000
               PASSWORD_HASH_WAIT_SECONDS=3600) ;;
    c) read -r -a extra <<<"${EXTRA_C_ENV:-}"; env+=("${extra[@]}") ;;
  esac
  if [ "$variant" = b ]; then
    env+=(PYTHONPATH="$HERE" BENCH_LIMIT_CONCURRENCY="$limit")
    args+=(--worker-class limited_worker.LimitedUvicornWorker)
  fi
  printf '%s\n' "${env[@]}" >"$dir/settings.txt"
  # Every run starts from the same state: the seed, no attempts, an empty Redis.
  psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "TRUNCATE answers, test_attempts, notifications"
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  env "${env[@]}" "$ROOT/.venv/bin/gunicorn" --config gunicorn.conf.py "${args[@]}" app.main:app \
    >"$dir/gunicorn.log" 2>&1 &
  APP_PID=$!
  for _ in $(seq 1 150); do curl -sf "$HOST/health/ready" >/dev/null && return; sleep 0.2; done
  echo "the app did not start; see $dir/gunicorn.log" >&2
  exit 1
}

stop_app() {
  kill -TERM "$APP_PID" 2>/dev/null || true
  wait "$APP_PID" 2>/dev/null || true
  APP_PID=""
}

# load DIR ARGS...: the generators (GENERATORS processes) against the running app.
load() {
  local dir=$1; shift
  local start_at pids=()
  start_at=$(python3 -c 'import time; print(time.time() + 2)')
  vmstat -n 1 >"$dir/vmstat.txt" &
  VMSTAT_PID=$!
  for i in $(seq 0 $((GENERATORS - 1))); do
    local extra=()
    [ "$i" = 0 ] && extra=(--metrics-out "$dir/metrics.csv")
    "$PY" "$HERE/loadgen.py" --host "$HOST" --accounts "$OUT/accounts.json" \
      --start-at "$start_at" --index "$i" --processes "$GENERATORS" \
      --out "$dir/requests-$i.csv" --summary "$dir/generator-$i.json" "${extra[@]}" "$@" &
    pids+=($!)
  done
  wait "${pids[@]}"
  kill "$VMSTAT_PID" 2>/dev/null || true
  wait "$VMSTAT_PID" 2>/dev/null || true
  VMSTAT_PID=""
  curl -s "$HOST/metrics" >"$dir/metrics-final.txt" || true
}

# run NAME VARIANT LIMIT ARGS...: one variant, one load, results in $OUT/NAME.
run() {
  local name=$1 variant=$2 limit=$3; shift 3
  local dir="$OUT/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  echo "== $name ($(date +%T))"
  start_app "$variant" "$limit" "$dir"
  load "$dir" "$@"
  stop_app
}

# The capacity: the surge mix at rising rates against variant a, one load per step, until two
# steps in a row miss the plan's criteria.
if [ -z "${CAPACITY:-}" ]; then
  dir="$OUT/capacity"
  rm -rf "$dir"; mkdir -p "$dir"
  echo "== capacity ($(date +%T))"
  start_app a "" "$dir"
  misses=0
  for rate in ${RAMP_RATES//,/ }; do
    mkdir -p "$dir/r$rate"
    load "$dir/r$rate" --scenario ramp --rates "$rate" --step-seconds "$STEP_SECONDS"
    if "$PY" "$HERE/analyze.py" step "$dir/r$rate"; then misses=0; else misses=$((misses + 1)); fi
    [ "$misses" -ge 2 ] && break
  done
  stop_app
  CAPACITY=$("$PY" "$HERE/analyze.py" capacity "$dir")
fi
echo "capacity: $CAPACITY req/s"
echo "$CAPACITY" >"$OUT/capacity.txt"
window=(--scenario window --capacity "$CAPACITY" --factor "$SURGE_FACTOR")
for variant in $VARIANTS; do
  if [ "$variant" = b ]; then
    for limit in $LIMITS; do
      run "tune-b$limit" b "$limit" "${window[@]}" "${TUNE_WINDOW[@]}"
    done
    # shellcheck disable=SC2086
    best=$("$PY" "$HERE/analyze.py" tune "$OUT" $LIMITS)
    echo "best limit_concurrency: $best"
    run b b "$best" "${window[@]}" "${WINDOW[@]}"
  else
    run "$variant" "$variant" "" "${window[@]}" "${WINDOW[@]}"
  fi
done
"$PY" "$HERE/analyze.py" report "$OUT" >"$OUT/report.md"
# The committed chart comes from the full run into the default OUT; other runs keep theirs.
chart="$OUT/overload.png"
[ "$OUT" = "$HERE/out" ] && [ "$QUICK" != 1 ] && chart="$HERE/overload.png"
"$PY" "$HERE/chart.py" "$OUT" "$chart"
echo "report: $OUT/report.md; chart: $chart"
