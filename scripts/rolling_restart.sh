#!/usr/bin/env bash
# Rolling restart of a gunicorn master's workers, one at a time:
#   scripts/rolling_restart.sh <master pid>
#
# gunicorn's HUP forks all new workers and stops all old ones at once, so for the time the new
# ones take to import the app nothing accepts connections (DEPLOY.md, "Restarting the workers").
# Here the master never has fewer workers accepting than configured. For each worker it had:
#   1. TTIN: the master forks one more worker, which loads the code now on disk;
#   2. wait until that worker accepts connections: it then creates its readiness file,
#      ${GUNICORN_READY_DIR:-/tmp}/hiring-pro-gunicorn-<master pid>/<worker pid>
#      (gunicorn.conf.py, app/gunicorn_worker.py);
#   3. TTOU: the master stops its oldest worker (gunicorn's manage_workers stops the lowest
#      age first), which drains gracefully; wait until the master has reaped it: until then
#      the master still counts it, and the next TTIN would fork nothing.
# Unlike HUP this does not read gunicorn.conf.py again. As with HUP, a new worker that cannot
# boot makes gunicorn stop the whole master: check that the release imports first.
# Run it as the master's user or root, with the master's GUNICORN_READY_DIR if it set one.
# Gives up (exit 1) when one step takes longer than ROLLING_RESTART_TIMEOUT seconds (120).
set -euo pipefail

usage() {
  echo "usage: $0 <gunicorn master pid>" >&2
  exit 2
}

fail() {
  echo "rolling_restart: $*" >&2
  exit 1
}

[ "$#" -eq 1 ] || usage
master="$1"
case "$master" in
  '' | *[!0-9]*) usage ;;
esac
# Through the master's own view of the filesystem: a systemd unit with PrivateTmp has its own /tmp.
ready_dir="/proc/$master/root${GUNICORN_READY_DIR:-/tmp}/hiring-pro-gunicorn-$master"
step_timeout="${ROLLING_RESTART_TIMEOUT:-120}"

kill -0 "$master" 2>/dev/null || fail "no process $master"
[ -d "$ready_dir" ] || fail "no $ready_dir: is $master a master started with gunicorn.conf.py?"

# The master's children are its workers; an exited one stays listed until the master reaps it.
workers() {
  pgrep -P "$master" || true
}

is_worker() {
  workers | grep -qx "$1"
}

# Sets `new` to a worker that was not there before the TTIN and accepts connections.
new_worker_ready() {
  local pid
  for pid in $(workers); do
    if ! grep -qx "$pid" <<<"$before" && [ -e "$ready_dir/$pid" ]; then
      new="$pid"
      return 0
    fi
  done
  return 1
}

# Sets `stopped` to an old worker the master has reaped, and drops it from `remaining`.
old_worker_reaped() {
  local pid
  for pid in $remaining; do
    if ! is_worker "$pid"; then
      stopped="$pid"
      remaining="$(grep -vx "$pid" <<<"$remaining" || true)"
      return 0
    fi
  done
  return 1
}

# Polls until the command succeeds; fails when the master exits or after step_timeout seconds.
wait_for() {
  local what="$1"
  shift
  local deadline=$((SECONDS + step_timeout))
  until "$@"; do
    kill -0 "$master" 2>/dev/null || fail "the master $master exited while waiting for $what"
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.1
  done
}

remaining="$(workers)"
[ -n "$remaining" ] || fail "process $master has no workers"
total="$(wc -l <<<"$remaining")"
for ((done_count = 1; done_count <= total; done_count++)); do
  before="$(workers)"
  new=""
  stopped=""
  kill -TTIN "$master"
  wait_for "a new worker to accept connections" new_worker_ready
  kill -TTOU "$master"
  wait_for "an old worker to stop" old_worker_reaped
  echo "rolling_restart: $done_count/$total: worker $new accepts connections, worker $stopped stopped"
done
