#!/usr/bin/env bash
# Serve the API on http://127.0.0.1:8000 with the embedded defaults (SQLite, no Redis, no AWS).
set -euo pipefail
source "$(dirname "$0")/common.sh"
ensure_venv requirements.txt
cd "$REPO_ROOT/backend"
"$VENV/bin/alembic" upgrade head
"$VENV/bin/python" -m devtools.seed
exec "$VENV/bin/uvicorn" app.main:app --host 127.0.0.1 --port "${PORT:-8000}"
