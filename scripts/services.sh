#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis the tests use are installed and running, and that
# PgBouncer is installed. Installs them with apt when missing and we are root; starts PostgreSQL
# and Redis when stopped. The suite starts its own PgBouncer processes (transaction mode, one
# per test worker plus private ones for fault tests; see backend/tests/support/pgbouncer.py),
# the way it starts private redis-server processes.
set -euo pipefail

as_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
  as_root || { echo "missing $*; install it (needs root)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {
  local what="$1"; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$what did not come up" >&2
  exit 1
}

ensure_postgres() {
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-contrib
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    # A fresh Debian install asks for a password over TCP; the tests use local trust auth.
    as_root || { echo "postgres@127.0.0.1 needs trust auth for tests" >&2; exit 1; }
    local hba
    hba="$(su postgres -c "psql -Atqc 'show hba_file'")"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
    wait_for "PostgreSQL trust auth" psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1'
  fi
}

ensure_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
  fi
}

ensure_pgbouncer() {
  [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || apt_install pgbouncer
  # Debian's package enables a system-wide instance on 6432; the tests do not use it.
}

ensure_postgres
ensure_redis
ensure_pgbouncer
# The bundle tests build the Elastic Beanstalk zips (scripts/build_bundle.sh).
command -v zip >/dev/null || apt_install zip
