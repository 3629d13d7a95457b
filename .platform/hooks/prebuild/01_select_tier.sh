#!/bin/bash
# Choose this environment's process and proxy settings from its HIRING_PRO_ROLE property.
#
# One source tree serves the web and the worker environment. Before EB builds the
# application (and before it copies .platform/nginx into place), this hook copies
#   Procfile.<role>                  -> Procfile
#   .platform/nginx/tiers/<role>.conf -> .platform/nginx/conf.d/elasticbeanstalk/00_application.conf
# An environment without the property fails its deployment instead of guessing.
# Runs from the staging directory (the bundle's root); also used by the confighooks.
set -euo pipefail

# EB's tool for reading environment properties (hooks do not get them as variables);
# EB_GET_CONFIG replaces it in tests.
get_config="${EB_GET_CONFIG:-/opt/elasticbeanstalk/bin/get-config}"
role="$("${get_config}" environment -k HIRING_PRO_ROLE 2>/dev/null || true)"
case "${role}" in
  web | worker) ;;
  *)
    echo "HIRING_PRO_ROLE must be 'web' or 'worker' (found '${role}'); see DEPLOY.md" >&2
    exit 1
    ;;
esac

install -m 0644 "Procfile.${role}" Procfile
install -D -m 0644 ".platform/nginx/tiers/${role}.conf" \
  .platform/nginx/conf.d/elasticbeanstalk/00_application.conf
echo "hiring-pro: configured the ${role} tier"
