#!/usr/bin/env bash
# Capacity of one box (issue 16): the production stack of common.sh (2 gunicorn workers, a fresh
# hp_bench_capacity database, a private Redis) driven by backend/tests/load_test.py (locust,
# FastHttpUser, headless) through one of its scenarios, with the CPU, memory and connections of
# every process sampled into $OUT/resources.csv (resources.py) and joined with the requests at
# the end (report.py): µs of CPU per request for the app, PostgreSQL and Redis, locust's share.
#
# Usage: bench/capacity/run.sh ramp|spike|stress|soak
# Sizing (environment, read by tests/load_test.py; its docstring has the defaults): LOAD_USERS,
# LOAD_SPAWN_RATE, LOAD_HOLD_SECONDS, LOAD_BASE_USERS, LOAD_BASE_SECONDS, LOAD_SPIKE_RATE,
# LOAD_SPIKE_SECONDS, LOAD_AFTER_SECONDS, LOAD_STEP_USERS, LOAD_STEP_SECONDS, LOAD_SOAK_SECONDS,
# LOAD_SETTLE_SECONDS. Others: LOCUST_PROCESSES (1; locust's --processes, a master and N
# workers), OUT (bench/capacity/out/SCENARIO), SAMPLE_SECONDS (10), FRESH_SEED=1 (common.sh).
# Profiling (profile.sh sets these): PROFILE_SECONDS > 0 records one app worker with py-spy for
# that long, PROFILE_DELAY seconds after locust starts, into $OUT/profile.txt
# (profile_worker.py; PROFILE_RATE, PROFILE_BLOCKING), summed up by profile_summary.py.
# e.g. LOAD_USERS=6000 LOAD_STEP_USERS=500 LOAD_STEP_SECONDS=120 bench/capacity/run.sh stress
# A stress run also draws $OUT/capacity.png (chart.py; `bench/capacity/chart.py` alone draws the
# committed bench/capacity/capacity.png from out/stress).
# Exits with locust's code: 1 when the run as a whole misses the plan's criteria.
set -euo pipefail
SCENARIO=${1:?usage: bench/capacity/run.sh ramp|spike|stress|soak}
source "$(dirname "$0")/common.sh"
OUT="${OUT:-$HERE/out/$SCENARIO}"
LOCUST_PROCESSES="${LOCUST_PROCESSES:-1}"
PROFILE_SECONDS="${PROFILE_SECONDS:-0}"
export LOAD_SCENARIO="$SCENARIO" LOAD_USERS="${LOAD_USERS:-1000}"
# One account per user (candidates; a tenth of the users are admins, each with an account).
export LOADTEST_CANDIDATES="$LOAD_USERS" LOADTEST_ADMINS=$((LOAD_USERS / 10 + 1))
export LOADTEST_PROCESSES="$LOCUST_PROCESSES" LOAD_PHASES_FILE="$OUT/phases.json"
rm -rf "$OUT"
mkdir -p "$OUT"

# The scenario's phases, as the locust file computes them (a bad setting fails here, early).
(cd "$ROOT/backend" && "$PY" -c '
import sys
sys.path.insert(0, "tests")
import load_test
total = sum(phase.seconds for phase in load_test.PHASES)
for phase in load_test.PHASES:
    print(f"  {phase.name:<12} {phase.users:>6} users for {phase.seconds:>5.0f} s")
print(f"load: {total:.0f} s ({total / 60:.1f} min), plus seeding and start-up")
') | tee "$OUT/plan.txt"

fresh_database "$LOADTEST_CANDIDATES" "$LOADTEST_ADMINS"
start_redis
start_app /health/ready app.main:app
echo "app up ($(date +%T)): $HOST, master pid $APP_PID; results in $OUT"

locust_args=(-f tests/load_test.py --headless --host "$HOST" --only-summary
  --csv "$OUT/locust" --csv-full-history --html "$OUT/report.html")
[ "$LOCUST_PROCESSES" != 1 ] && locust_args+=(--processes "$LOCUST_PROCESSES")
(cd "$ROOT/backend" && exec "$ROOT/.venv/bin/locust" "${locust_args[@]}" >"$OUT/locust.log" 2>&1) &
LOCUST_PID=$!
start_sampler "$OUT/resources.csv" --locust-pid "$LOCUST_PID" --interval "${SAMPLE_SECONDS:-10}"

# One app worker under py-spy once the load is steady (profile_worker.py), beside the run.
if [ "$PROFILE_SECONDS" -gt 0 ]; then
  profile_args=(--app-pid "$APP_PID" --out "$OUT" --delay "${PROFILE_DELAY:-0}"
    --seconds "$PROFILE_SECONDS" --rate "${PROFILE_RATE:-200}")
  [ "${PROFILE_BLOCKING:-0}" = 1 ] && profile_args+=(--blocking)
  "$PY" "$HERE/profile_worker.py" "${profile_args[@]}" &
  PROFILER_PID=$!
fi

rc=0
wait "$LOCUST_PID" || rc=$?
LOCUST_PID=""
stop_sampler
curl -s "$HOST/metrics" >"$OUT/metrics.txt" || true
if [ -n "$PROFILER_PID" ]; then
  wait "$PROFILER_PID" || echo "profiling failed; see $OUT/py-spy.log" >&2
  PROFILER_PID=""
fi
stop_app

echo "== locust (its summary in $OUT/locust.log; report.html, locust_*.csv)"
sed -n '/^Scenario .*measured phases:/,/^Verdict over/p' "$OUT/locust.log" | grep -v '^\[' || true
echo "== CPU, memory, connections ($OUT/resources.csv)"
"$PY" "$HERE/report.py" "$OUT" | tee "$OUT/report.txt"
echo "app log lines: $(wc -l <"$OUT/gunicorn.log"), of which errors: $(grep -c '"level": *"ERROR"' "$OUT/gunicorn.log" || true)"
if [ "$SCENARIO" = stress ]; then
  "$PY" "$HERE/chart.py" "$OUT" "$OUT/capacity.png"
fi
if [ -s "$OUT/profile.txt" ]; then
  echo "== profile of one worker ($OUT/profile.txt, profile.svg)"
  "$PY" "$HERE/profile_summary.py" "$OUT/profile.txt" --meta "$OUT/profile.json" \
    --svg "$OUT/profile.svg" | tee "$OUT/profile_summary.txt"
fi
exit "$rc"
