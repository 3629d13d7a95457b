#!/usr/bin/env bash
# Install test dependencies, make sure PostgreSQL, Redis and PgBouncer are there, and run the
# whole suite: once on direct connections, then the API and worker suites again
# through a transaction-mode PgBouncer with USE_EXTERNAL_POOLER=true (the production path).
# Extra arguments go to pytest and run one pass only (e.g. scripts/test.sh tests/routers -x;
# USE_EXTERNAL_POOLER=true scripts/test.sh tests/routers for the pooled pass of a module).
set -euo pipefail
source "$(dirname "$0")/common.sh"
ensure_venv requirements-dev.txt
bash "$REPO_ROOT/scripts/services.sh"
cd "$REPO_ROOT/backend"
"$VENV/bin/ruff" check app devtools ops tests migrations ../bench
"$VENV/bin/ruff" format --check app devtools ops tests migrations ../bench
"$VENV/bin/mypy" app devtools ops tests
"$VENV/bin/lint-imports" --no-cache --no-logo
# pytest exits 5 when it collected nothing: that is a failure here too.
pytest=("$VENV/bin/pytest" -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider)
if [ "$#" -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
"${pytest[@]}"
echo "Pooled pass: every route and worker task through PgBouncer (transaction mode)"
USE_EXTERNAL_POOLER=true exec "${pytest[@]}" tests/routers tests/worker
