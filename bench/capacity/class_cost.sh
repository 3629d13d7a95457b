#!/usr/bin/env bash
# CPU per request of one class of routes alone (issue 16), at a fixed load that leaves the box
# room: each user sends 0.8 requests/s, with 400 users for bare and the cached reads (320 req/s,
# the same for all three), 200 for uncached_read, 60 for write and 20 for login (about half a
# core of app CPU each). Measured: the app's workers, the gunicorn master, PostgreSQL, Redis and
# locust, between two marks after the users have started and settled (resources.py --mark,
# classes.py CLASS_WINDOW). A run with refused requests (503: the box was saturated, by this
# load or by other work on it) is flagged: its CPU per request is not the unloaded one.
# Every class runs against a fresh start of the production stack of common.sh; `bare` runs
# bare_app.py under the same gunicorn config and worker class, with the real app's cached
# GET /api/jobs body. Classes: cached_jobs cached_read uncached_read write login bare
# (classes.py says what each sends).
#
# Usage: bench/capacity/class_cost.sh [CLASS...]   default: bare cached_jobs cached_read, which
#        prints the ratio of the cached reads' app CPU per request to the bare app's
#        bench/capacity/class_cost.sh all           every class
# Knobs: CLASS_USERS (users of every class, instead of the defaults above), CLASS_RATE (0.8 per
#        user per second), CLASS_SPAWN_RATE (50/s), SETTLE (10 s), MEASURE (30 s), REPEAT (1:
#        runs of each class, interleaved; the table gives each class's median; 3 on a shared
#        box), OUT (bench/capacity/out/class_cost), CLASS_PROFILE=1 (py-spy records one worker
#        through the measured window, summed by profile_summary.py into
#        DIR/profile_summary.txt; sampling costs the worker CPU, so the CPU figures of such a
#        run are not comparable with those of a run without it).
# One class takes about users / spawn rate + SETTLE + MEASURE + 10 s (~60 s by default).
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${OUT:-$HERE/out/class_cost}"
SPAWN_RATE="${CLASS_SPAWN_RATE:-50}"
SETTLE="${SETTLE:-10}"
MEASURE="${MEASURE:-30}"
REPEAT="${REPEAT:-1}"
export CLASS_RATE="${CLASS_RATE:-0.8}"
if [ "$#" -eq 0 ]; then
  set -- bare cached_jobs cached_read
elif [ "$1" = all ]; then
  set -- bare cached_jobs cached_read uncached_read write login
fi
rm -rf "$OUT"
mkdir -p "$OUT"

# An account per user (the per-user rate limits are never shared).
accounts="${CLASS_USERS:-400}"
fresh_database "$((accounts > 400 ? accounts : 400))" 2
start_redis

# Every account with the token a login would give it (signed with this run's JWT_SECRET).
(cd "$ROOT/backend" && PYTHONPATH=. "$PY" "$ROOT/bench/overload/tokens.py" "$OUT/accounts.json")
export CLASS_ACCOUNTS="$OUT/accounts.json"
fetch_jobs_body "$CLASS_ACCOUNTS" "$OUT/jobs_body.json"
export BARE_BODY_FILE="$OUT/jobs_body.json"
echo "GET /api/jobs body: $(wc -c <"$BARE_BODY_FILE") bytes"

# run_class CLASS DIR: one class against a fresh start of its app. OUT is local so the app's
# and the sampler's files land in DIR (common.sh's functions write to $OUT).
run_class() {
  local class=$1 OUT=$2 users
  case $class in
    uncached_read) users=200 ;;
    write) users=60 ;;
    login) users=20 ;;
    *) users=400 ;;
  esac
  users="${CLASS_USERS:-$users}"
  mkdir -p "$OUT"
  if [ "$class" = bare ]; then
    start_app /api/jobs --pythonpath "$HERE" bare_app:app
  else
    start_app /health/ready app.main:app
  fi
  local warmup=$(((users + SPAWN_RATE - 1) / SPAWN_RATE + SETTLE))
  local launched window_start window_end
  launched=$(date +%s)
  # Locust needs a second or two before its first user; the window starts after the warm-up.
  window_start=$((launched + 3 + warmup))
  window_end=$((window_start + MEASURE))
  (cd "$HERE" && CLASS="$class" CLASS_WINDOW="$window_start $window_end" \
    CLASS_RESULT_FILE="$OUT/result.json" exec "$ROOT/.venv/bin/locust" -f classes.py --headless \
    --host "$HOST" -u "$users" -r "$SPAWN_RATE" -t "$((3 + warmup + MEASURE + 2))s" \
    --only-summary --csv "$OUT/locust" >"$OUT/locust.log" 2>&1) &
  LOCUST_PID=$!
  start_sampler "$OUT/resources.csv" --locust-pid "$LOCUST_PID" --interval 5 \
    --mark "$window_start" --mark "$window_end"
  # Redis's command counts over the same window: script calls per request (class_report.py).
  (sleep "$((window_start - $(date +%s)))" \
    && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null && sleep "$MEASURE" \
    && redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/redis_commands.txt") &
  local counter=$!
  if [ "${CLASS_PROFILE:-0}" = 1 ]; then
    "$PY" "$HERE/profile_worker.py" --app-pid "$APP_PID" --out "$OUT" \
      --delay "$((3 + warmup))" --seconds "$MEASURE" --rate 200 &
    PROFILER_PID=$!
  fi
  wait "$LOCUST_PID" || true
  LOCUST_PID=""
  wait "$counter" || true
  stop_sampler
  if [ -n "$PROFILER_PID" ]; then
    wait "$PROFILER_PID" || echo "profiling failed; see $OUT/py-spy.log" >&2
    PROFILER_PID=""
    "$PY" "$HERE/profile_summary.py" "$OUT/profile.txt" --meta "$OUT/profile.json" \
      --svg "$OUT/profile.svg" >"$OUT/profile_summary.txt"
  fi
  # The app's own counters (why requests were refused, cache hits); the bare app has none.
  [ "$class" = bare ] || curl -s "$HOST/metrics" >"$OUT/metrics.txt" || true
  stop_app
}

runs=()
for round in $(seq 1 "$REPEAT"); do
  for class in "$@"; do
    dir="$OUT/$class-$round"
    echo "== $class (round $round, $(date +%T))"
    run_class "$class" "$dir"
    "$PY" "$HERE/class_report.py" "$dir" | tail -n +2
    runs+=("$dir")
  done
done
echo "== CPU per request by class ($OUT)"
"$PY" "$HERE/class_report.py" "${runs[@]}" | tee "$OUT/report.txt"
