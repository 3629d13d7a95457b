# Sourced by bench/capacity/*.sh: the production stack of one box for a capacity run, and its
# teardown. The caller sets OUT (a directory) before calling these functions.
#
# The stack: the production command (`gunicorn --config gunicorn.conf.py app.main:app`, uvicorn
# workers) with GUNICORN_WORKERS=2, ENVIRONMENT=production and the deploy's LOG_LEVEL (INFO: one
# access line per request, whose cost is part of what is measured), rate limiter and cache on,
# against PostgreSQL at 127.0.0.1:5432 (database hp_bench_capacity) and a private redis-server.
# Everything listens on 127.0.0.1 and stops with the calling script (cleanup, on EXIT).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/capacity"
PY="$ROOT/.venv/bin/python"
DB=hp_bench_capacity
APP_PORT=8810
REDIS_PORT=6410
WORKERS=2
HOST="http://127.0.0.1:$APP_PORT"
APP_PID="" REDIS_PID="" LOCUST_PID="" SAMPLER_PID="" PROFILER_PID=""

export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$DB"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export ENVIRONMENT=production LOG_LEVEL=INFO
unset LOG_FORMAT ENABLE_REQUEST_LOGGING
JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
export TRUSTED_PROXY_COUNT=1 RATE_LIMIT_ENABLED=true CACHE_ENABLED=true QUEUE_BACKEND=local
export RATE_LIMIT_EXPECTED_PROCESSES="$WORKERS"
export GUNICORN_BIND="127.0.0.1:$APP_PORT" GUNICORN_WORKERS="$WORKERS"
# Longer than the load's idle gaps, as a proxy's keep-alive would be: otherwise the server closes
# an idle connection just as the client reuses it and the client sees a reset.
export GUNICORN_KEEPALIVE=75

cleanup() {
  local pid
  for pid in $PROFILER_PID $LOCUST_PID $SAMPLER_PID $APP_PID $REDIS_PID; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

psql_admin() {
  psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"
}

# fresh_database CANDIDATES ADMINS: hp_bench_capacity, new, with the seed's accounts.
# Seeding is slow for big counts (devtools/seed.py), so each size is seeded once into a template
# database (hp_bench_capacity_tpl_C_A) and every run gets a copy of it, migrated to the current
# head. FRESH_SEED=1 seeds the template again (after a change to the seed).
fresh_database() {
  local candidates=$1 admins=$2
  local template="${DB}_tpl_${candidates}_${admins}" started
  local exists
  exists=$(psql_admin -Atc "SELECT 1 FROM pg_database WHERE datname = '$template'")
  if [ "${FRESH_SEED:-0}" = 1 ] || [ "$exists" != 1 ]; then
    started=$(date +%s)
    echo "seeding $candidates candidates and $admins admins into $template (once per size)"
    psql_admin -c "DROP DATABASE IF EXISTS $template WITH (FORCE)" -c "CREATE DATABASE $template"
    (
      cd "$ROOT/backend"
      # No Redis yet: the seed runs as development, against the template only.
      export DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$template"
      export ENVIRONMENT=development
      unset REDIS_URL
      "$ROOT/.venv/bin/alembic" upgrade head >/dev/null
      "$PY" -m devtools.seed --candidates "$candidates" --jobs 500 --admins "$admins"
    )
    echo "seeded in $(($(date +%s) - started)) s"
  fi
  psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB TEMPLATE $template"
  (cd "$ROOT/backend" && ENVIRONMENT=development "$ROOT/.venv/bin/alembic" upgrade head >/dev/null)
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start; see $OUT/redis.log" >&2
  exit 1
}

# start_app READY_PATH GUNICORN_ARGS...: the production command (the app module among the
# arguments), its output in $OUT/gunicorn.log; returns once READY_PATH answers 200.
start_app() {
  local ready=$1
  shift
  mkdir -p "$OUT/prometheus"
  (cd "$ROOT" && PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus" exec "$ROOT/.venv/bin/gunicorn" \
    --config gunicorn.conf.py "$@" >"$OUT/gunicorn.log" 2>&1) &
  APP_PID=$!
  for _ in $(seq 1 150); do curl -sf "$HOST$ready" >/dev/null && return; sleep 0.2; done
  echo "the app did not start; see $OUT/gunicorn.log" >&2
  exit 1
}

stop_app() {
  kill -TERM "$APP_PID" 2>/dev/null || true
  wait "$APP_PID" 2>/dev/null || true
  APP_PID=""
}

# fetch_jobs_body ACCOUNTS_JSON FILE: the real app's cached GET /api/jobs body, as the bare
# route (bare_app.py) serves it. Asked twice: the second answer is the cache hit.
fetch_jobs_body() {
  local accounts=$1 file=$2 bearer
  start_app /health/ready app.main:app
  bearer=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["candidates"][0]["token"])' \
    "$accounts")
  for _ in 1 2; do
    curl -sf -H "Authorization: Bearer $bearer" -H 'X-Forwarded-For: 198.19.255.254' \
      "$HOST/api/jobs" -o "$file"
  done
  stop_app
}

# start_sampler CSV ARGS...: resources.py in the background (see there), stopped by stop_sampler.
start_sampler() {
  local csv=$1
  shift
  "$PY" "$HERE/resources.py" --out "$csv" --app-pid "$APP_PID" --redis-pid "$REDIS_PID" \
    --database "$DB" --app-port "$APP_PORT" --redis-port "$REDIS_PORT" "$@" &
  SAMPLER_PID=$!
}

stop_sampler() {
  kill -TERM "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=""
}
