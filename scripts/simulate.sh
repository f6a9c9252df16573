#!/usr/bin/env bash
# Runs the seeded simulations for as many seeds as asked (the test command runs a bounded slice of each): random
# schedules of one flow table, and a path of three nodes over links that lose stripes, break and come back.
#   scripts/simulate.sh 100000              # 100,000 schedules of each
#   scripts/simulate.sh --seed N            # replays seed N of the flow-table simulation
#   scripts/simulate.sh --fabric-seed N     # replays seed N of the three-node simulation (prints its trace)
#   scripts/simulate.sh --nodes 200         # 200 schedules of three whole nodes over in-process links, cut at
#                                           # seeded byte counts (InProcessChaosTests; the test command runs 6)
#   scripts/simulate.sh --nodes-seed N      # replays schedule N of those
#   scripts/simulate.sh --routes 20         # 20 seeded graphs of 120 clusters exchanging routes (RouteTableTests;
#                                           # the test command runs 1)
#   scripts/simulate.sh --routes-seed N     # replays graph N of those
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --seed) export FREIGHT_FLOW_SEED="$2"; filter=FlowTableSimulationTests ;;
  --fabric-seed) export FREIGHT_FABRIC_SEED="$2" FREIGHT_FABRIC_TRACE=1; filter=FabricSimulationTests ;;
  --nodes) export FREIGHT_NODES_SEEDS="${2:-100}"; filter=InProcessChaosTests ;;
  --nodes-seed) export FREIGHT_NODES_SEED="$2"; filter=InProcessChaosTests ;;
  --routes) export FREIGHT_ROUTE_SEEDS="${2:-10}"; filter=aHundredClustersConverge ;;
  --routes-seed) export FREIGHT_ROUTE_SEED="$2"; filter=aHundredClustersConverge ;;
  *) export FREIGHT_FLOW_SEEDS="${1:-10000}" FREIGHT_FABRIC_SEEDS="${1:-10000}"
     filter='FlowTableSimulationTests|FabricSimulationTests' ;;
esac
swift build --build-tests >/dev/null
swift test --skip-build --filter "$filter"
