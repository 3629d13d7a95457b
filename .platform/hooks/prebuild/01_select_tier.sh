#!/bin/bash
# Choose this environment's process and proxy settings from its HIRING_PRO_ROLE property.
#
# One source tree serves the web and the worker environment; scripts/build_bundle.sh <role>
# builds each one's bundle (its tier's .ebextensions on top, the tier written to
# .platform/bundle_tier). Before EB builds the application (and before it copies
# .platform/nginx into place), this hook copies
#   Procfile.<role>                  -> Procfile
#   .platform/nginx/tiers/<role>.conf -> .platform/nginx/conf.d/elasticbeanstalk/00_application.conf
# A deployment fails instead of guessing when the property is missing, or when the bundle was
# not built for this tier (the repository tree itself, or the other tier's bundle: their
# .ebextensions settings would be wrong for this environment).
# Runs from the staging directory (the bundle's root); also used by the confighooks.
set -euo pipefail

# EB's tool for reading environment properties (hooks also get them as variables, but
# get-config is the documented reader); EB_GET_CONFIG replaces it in tests.
get_config="${EB_GET_CONFIG:-/opt/elasticbeanstalk/bin/get-config}"
role="$("${get_config}" environment -k HIRING_PRO_ROLE 2>/dev/null || true)"
case "${role}" in
  web | worker) ;;
  *)
    echo "HIRING_PRO_ROLE must be 'web' or 'worker' (found '${role}'); see DEPLOY.md" >&2
    exit 1
    ;;
esac

bundle_tier="$(cat .platform/bundle_tier 2>/dev/null || true)"
if [ "${bundle_tier}" != "${role}" ]; then
  echo "this bundle was built for tier '${bundle_tier:-none}', but HIRING_PRO_ROLE is" \
    "'${role}': deploy the bundle of scripts/build_bundle.sh ${role} (DEPLOY.md)" >&2
  exit 1
fi

install -m 0644 "Procfile.${role}" Procfile
install -D -m 0644 ".platform/nginx/tiers/${role}.conf" \
  .platform/nginx/conf.d/elasticbeanstalk/00_application.conf
echo "hiring-pro: configured the ${role} tier"
