#!/usr/bin/env bash
# Install test dependencies, make sure PostgreSQL and Redis are up, and run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/routers -x).
set -euo pipefail
source "$(dirname "$0")/common.sh"
ensure_venv requirements-dev.txt
bash "$REPO_ROOT/scripts/services.sh"
cd "$REPO_ROOT/backend"
"$VENV/bin/ruff" check app devtools tests migrations ../bench
"$VENV/bin/ruff" format --check app devtools tests migrations ../bench
"$VENV/bin/mypy" app devtools tests
"$VENV/bin/lint-imports" --no-cache --no-logo
# pytest exits 5 when it collected nothing: that is a failure here too.
exec "$VENV/bin/pytest" -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@"
