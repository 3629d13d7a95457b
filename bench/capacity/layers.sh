#!/usr/bin/env bash
# What each layer of the request path costs a cached GET /api/jobs (layers.py): the real app
# in-process with one part switched off at a time, next to the bare route, against the stack of
# common.sh (PostgreSQL, a private Redis, production settings, multiprocess metrics files).
# Usage: bench/capacity/layers.sh   Knobs: layers.py's (REQUESTS, CONCURRENCY, ROUNDS,
# VARIANTS), OUT (bench/capacity/out/layers). Takes about 2 minutes with the defaults.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${OUT:-$HERE/out/layers}"
rm -rf "$OUT"
mkdir -p "$OUT/prometheus"
fresh_database 400 2
start_redis
(cd "$ROOT/backend" && PYTHONPATH=. "$PY" "$ROOT/bench/overload/tokens.py" "$OUT/accounts.json")
# The real app's cached GET /api/jobs body, for the bare route.
start_app /health/ready app.main:app
BEARER=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["candidates"][0]["token"])' \
  "$OUT/accounts.json")
curl -sf -H "Authorization: Bearer $BEARER" -H 'X-Forwarded-For: 198.19.255.254' \
  "$HOST/api/jobs" -o "$OUT/jobs_body.json"
stop_app
cd "$ROOT/backend"
PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus" PYTHONPATH=. \
  "$PY" "$HERE/layers.py" "$OUT/accounts.json" "$OUT/jobs_body.json" | tee "$OUT/report.txt"
