#!/usr/bin/env bash
# Runs the seeded simulations for as many seeds as asked (the test command runs a bounded slice of each).
#   scripts/simulate.sh 100000        # 100,000 random schedules of the flow table
#   scripts/simulate.sh --seed N      # replays one seed that failed
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--seed" ]; then
  export FREIGHT_FLOW_SEED="$2"
else
  export FREIGHT_FLOW_SEEDS="${1:-10000}"
fi
swift build --build-tests >/dev/null
swift test --skip-build --filter FlowTableSimulationTests
