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
fetch_jobs_body "$OUT/accounts.json" "$OUT/jobs_body.json"
cd "$ROOT/backend"
PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus" PYTHONPATH=. \
  "$PY" "$HERE/layers.py" "$OUT/accounts.json" "$OUT/jobs_body.json" | tee "$OUT/report.txt"
