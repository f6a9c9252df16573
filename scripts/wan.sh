#!/usr/bin/env bash
# A WAN of your choosing between two network namespaces, to try Freight (or anything) across it (docs/wan.md).
#
#   sudo scripts/wan.sh [--links N] [SETTINGS...]      e.g. sudo scripts/wan.sh rate=1gbit rtt=50ms loss=0.1%
#
# Makes namespaces freight-wan-a and freight-wan-b joined only by freight-wan's emulated links: link n joins
# 198.18.(100+n).1 (a) and 198.18.(100+n).2 (b). Run programs on either side with
#   sudo ip netns exec freight-wan-a COMMAND
# and change the link while it runs (another shell):
#   .build/release/freight-wan control /tmp/freight-wan.sock set rate=500mbit rtt=200ms
#   .build/release/freight-wan control /tmp/freight-wan.sock cut        (then: restore, stats)
# Ctrl-C stops the emulator and removes both namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

links=1
if [ "${1:-}" = "--links" ]; then links=$2; shift 2; fi
[ "$(id -u)" = 0 ] || { echo "scripts/wan.sh needs root (network namespaces and TUN devices)" >&2; exit 1; }

swift build -c release --product freight-wan >/dev/null
bin="$(swift build -c release --show-bin-path)/freight-wan"
control=/tmp/freight-wan.sock

cleanup() {
  [ -n "${emulator:-}" ] && kill "$emulator" 2>/dev/null && wait "$emulator" 2>/dev/null || true
  ip netns delete freight-wan-a 2>/dev/null || true
  ip netns delete freight-wan-b 2>/dev/null || true
  rm -f "$control"
}
trap cleanup EXIT INT TERM

for side in a b; do
  ip netns add "freight-wan-$side"
  ip -n "freight-wan-$side" link set lo up
done
arguments=(--control "$control")
for ((n = 0; n < links; n++)); do
  arguments+=(--link "freight-wan-a=198.18.$((100 + n)).1,freight-wan-b=198.18.$((100 + n)).2")
done
"$bin" "${arguments[@]}" "$@" &
emulator=$!
echo "freight-wan running (pid $emulator); control socket $control; Ctrl-C to stop"
wait "$emulator"
