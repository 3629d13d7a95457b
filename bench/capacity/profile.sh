#!/usr/bin/env bash
# Where one app worker's time goes under the plan's mix (issue 16): run.sh's ramp scenario with
# LOAD_USERS (1,500) users and, once they are all up and settled, `py-spy record` of one gunicorn
# worker for PROFILE_SECONDS (30) at PROFILE_RATE (200/s), as collapsed stacks
# ($OUT/profile.txt) summed by profile_summary.py into named costs (middleware, JWT, pydantic,
# SQLAlchemy, asyncpg, logging, Prometheus, rate limiter, cache, redis-py, uvicorn, the event
# loop, the thread pool, argon2, idle) and drawn as a flame graph ($OUT/profile.svg).
# run.sh's report (CPU per request, memory, connections) comes with it.
#
# Usage: bench/capacity/profile.sh
# Knobs: LOAD_USERS (1500), LOAD_SPAWN_RATE (20), PROFILE_SECONDS (30), PROFILE_RATE (200),
#        PROFILE_SETTLE (20 s after the last user starts), PROFILE_BLOCKING=1 (py-spy pauses the
#        worker for each sample; by default --nonblocking, whose idle detection works here), OUT
#        (bench/capacity/out/profile), and run.sh's.
# Takes LOAD_USERS / LOAD_SPAWN_RATE + PROFILE_SETTLE + PROFILE_SECONDS + 15 s of load
# (~2.5 min by default), plus seeding (once per size) and start-up.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export LOAD_USERS="${LOAD_USERS:-1500}" LOAD_SPAWN_RATE="${LOAD_SPAWN_RATE:-20}"
export PROFILE_SECONDS="${PROFILE_SECONDS:-30}" PROFILE_RATE="${PROFILE_RATE:-200}"
SETTLE="${PROFILE_SETTLE:-20}"
RAMP=$(python3 -c "import math, sys; print(math.ceil(int(sys.argv[1]) / float(sys.argv[2])))" \
  "$LOAD_USERS" "$LOAD_SPAWN_RATE")
# Locust starts its clock a second or two after it is launched, which is when the delay starts.
export PROFILE_DELAY=$((RAMP + SETTLE + 3))
export LOAD_HOLD_SECONDS=$((SETTLE + PROFILE_SECONDS + 15))
export OUT="${OUT:-$HERE/out/profile}"
exec "$HERE/run.sh" ramp
