#!/bin/bash
# `alembic upgrade head` for the leader-only container command of
# .ebextensions/04-migrations.config. EB runs it on one instance of every environment; only the
# web environment migrates, so each deployment migrates once. (EB ignores a `test` on a
# leader-only command, so the tier check is here.) Runs from the staging directory (the
# bundle's root) before the new version starts; a failure stops the deployment.
set -euo pipefail

# EB's tool for reading environment properties; EB_GET_CONFIG replaces it in tests.
get_config="${EB_GET_CONFIG:-/opt/elasticbeanstalk/bin/get-config}"
role="$("${get_config}" environment -k HIRING_PRO_ROLE 2>/dev/null || true)"
case "${role}" in
  web) ;;
  worker)
    echo "hiring-pro: worker tier, no migrations (the web environment runs them)"
    exit 0
    ;;
  *)
    echo "HIRING_PRO_ROLE must be 'web' or 'worker' (found '${role}'); see DEPLOY.md" >&2
    exit 1
    ;;
esac

# The platform's virtualenv; EB_APP_VENV replaces it in tests.
venv="${EB_APP_VENV:-$(echo /var/app/venv/*)}"
# shellcheck disable=SC1091
source "${venv}/bin/activate"
cd backend
# One transaction under pg_advisory_xact_lock (backend/migrations/env.py): a concurrent deploy
# waits for it, then finds head and does nothing.
python -m alembic upgrade head
echo "hiring-pro: database migrated to head"
