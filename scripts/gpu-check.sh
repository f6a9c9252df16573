#!/usr/bin/env bash
# The GPU checks of docs/gpu.md ("Checked on real hardware"), in two steps:
#   scripts/gpu-check.sh build     here, with the Swift toolchain: a release freight with the Swift standard library
#                                  linked in (--static-swift-stdlib) and stripped, in .build-gpu/freight (about
#                                  100 MiB, a third of it ICU's data), and gzipped, .build-gpu/freight.gz (about
#                                  36 MiB), to carry to a GPU machine that has no Swift toolchain.
#   scripts/gpu-check.sh run OUT   on a machine with an NVIDIA GPU and its driver: records the machine's topology
#                                  (scripts/record-topology.sh) and what `freight gpu` sees, and runs
#                                  `freight gpu --check` (copies both ways through pinned memory with their rates, an
#                                  IPC handle opened by another process), then sends 1 GiB device bodies through a
#                                  node of its own from the CLI (freight send --device to freight recv --gpu 0
#                                  --check); every record and figure lands under OUT.
# Nothing in CI needs a GPU: the tests run the same calls against a stand-in driver (Tests/StandInCUDA).
# FREIGHT_CUDA_DRIVER=LIB runs `run` against another driver library (the stand-in, to rehearse the script on a
# machine without a GPU: the topology record is then skipped, and every figure is the stand-in's, not a GPU's).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
build)
  swift build -c release --product freight --static-swift-stdlib
  mkdir -p .build-gpu
  cp "$(swift build -c release --product freight --static-swift-stdlib --show-bin-path)/freight" .build-gpu/freight
  strip .build-gpu/freight
  gzip -9 -c .build-gpu/freight > .build-gpu/freight.gz
  ls -l .build-gpu/freight .build-gpu/freight.gz
  ;;
run)
  out="${2:?usage: scripts/gpu-check.sh run OUT}"
  bin="${FREIGHT_BIN:-.build-gpu/freight}"
  driver="${FREIGHT_CUDA_DRIVER:-libcuda.so.1}"
  mkdir -p "$out"
  # Carried gzipped: unpacked beside it.
  if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then
    gunzip -c "$bin.gz" > "$bin"
    chmod +x "$bin"
  fi
  if command -v nvidia-smi > /dev/null; then
    name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9._-')"
    count="$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)"
    # A machine with one GPU is not a DGX: the fixture's name says what it is.
    scripts/record-topology.sh "${count}x-${name}" "$out/fixtures"
  else
    echo "no nvidia-smi: no topology recorded" | tee "$out/no-topology.txt"
  fi
  "$bin" gpu --driver "$driver" --json > "$out/gpu.json"
  "$bin" gpu --driver "$driver" | tee "$out/gpu.txt"
  status=0
  "$bin" gpu --driver "$driver" --check --size 1GiB --json > "$out/gpu-check.json" || status=$?
  cat "$out/gpu-check.json"
  # The CLI's path: a node, a receiver that opens GPU 0, three 1 GiB bodies sent from GPU memory.
  work="$(mktemp -d)"
  "$bin" node --cluster gpu-check --name g1 --listen 127.0.0.1:0 --socket "$work/node.sock" --json \
    --cuda-driver "$driver" \
    > "$out/cli-node.log" 2>&1 &
  node=$!
  recv=""
  trap 'kill $recv $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 100); do [ -S "$work/node.sock" ] && break; sleep 0.1; done
  "$bin" recv gpu/cli --via "$work/node.sock" --gpu 0 --cuda-driver "$driver" --check --count 3 --json \
    > "$out/cli-recv.json" &
  recv=$!
  for _ in $(seq 100); do "$bin" resolve gpu/cli --via "$work/node.sock" > /dev/null 2>&1 && break; sleep 0.1; done
  # What the node's planner makes of two apps on GPU 0 (a CUDA IPC hand-over where the driver allows it).
  "$bin" resolve gpu/cli --via "$work/node.sock" --explain --size 1GiB --from-gpu 0 --to-gpu 0 --json \
    > "$out/cli-plan.json" || status=$?
  "$bin" send gpu/cli --via "$work/node.sock" --size 1GiB --device --cuda-driver "$driver" --count 3 --json \
    > "$out/cli-send.json" \
    || status=$?
  wait "$recv" || status=$?
  recv=""
  cat "$out/cli-send.json" "$out/cli-recv.json"
  exit "$status"
  ;;
*)
  echo "usage: scripts/gpu-check.sh build | run OUT" >&2
  exit 2
  ;;
esac
