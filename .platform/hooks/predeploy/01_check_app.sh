#!/bin/bash
# Fail the deployment (before the new version replaces the running one) if the selected
# Procfile's app cannot be imported with the installed dependencies.
set -euo pipefail

app_path="$(sed -n 's/^web: .* \(app\.[a-z_]*:app\)$/\1/p' Procfile)"
if [ -z "${app_path}" ]; then
  echo "Procfile has no 'web: gunicorn ... app.<module>:app' line" >&2
  exit 1
fi
module="${app_path%%:*}"
# shellcheck disable=SC1090
source /var/app/venv/*/bin/activate
cd backend
# EB gives hooks the environment properties (secrets included), but this check does not lean
# on them: the import builds the app with development defaults, which proves the code and its
# dependencies load, nothing more. The production settings are checked when gunicorn starts
# (the postdeploy hook waits for /health).
ENVIRONMENT=development DATA_DIR="$(mktemp -d)" python -c "import ${module}"
echo "hiring-pro: ${app_path} imports"
