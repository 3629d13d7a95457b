#!/usr/bin/env bash
# Run the whole test command N times in a row (default 3) while two busy loops keep both cores
# loaded, and print each run's wall time: the suite must stay green on a noisy CI machine.
# Usage: scripts/loaded_suite.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
burners=()
stop_burners() { kill "${burners[@]}" 2>/dev/null || true; }
trap stop_burners EXIT
for _ in 1 2; do
  python3 -c 'while True: pass' &
  burners+=("$!")
done
for run in $(seq 1 "$runs"); do
  started=$(date +%s)
  if bash scripts/test.sh > "/tmp/loaded_suite_run_${run}.log" 2>&1; then
    result=passed
  else
    result=FAILED
  fi
  echo "run ${run}: ${result} in $(( $(date +%s) - started )) s (log: /tmp/loaded_suite_run_${run}.log)"
  [ "$result" = passed ] || exit 1
done
