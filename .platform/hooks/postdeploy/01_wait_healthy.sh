#!/bin/bash
# After the new version started: wait until it answers its liveness probe on the instance,
# so a broken release fails this batch of a rolling deployment instead of the next ones.
# Readiness (database, Redis) is reported but does not fail the deployment: a dependency
# outage is not a reason to keep the previous code.
set -uo pipefail

for _ in $(seq 1 60); do
  if curl --silent --fail --max-time 2 http://127.0.0.1:8000/health > /dev/null; then
    ready="$(curl --silent --max-time 5 http://127.0.0.1:8000/health/ready || true)"
    echo "hiring-pro: live; readiness: ${ready}"
    exit 0
  fi
  sleep 1
done
echo "hiring-pro: the app did not answer /health on 127.0.0.1:8000 within 60 s" >&2
exit 1
