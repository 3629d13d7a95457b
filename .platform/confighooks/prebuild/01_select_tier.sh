#!/bin/bash
# Configuration deployments (e.g. a changed environment property) rebuild the proxy and
# process settings too: apply the same tier selection as an application deployment.
set -euo pipefail
exec bash .platform/hooks/prebuild/01_select_tier.sh
