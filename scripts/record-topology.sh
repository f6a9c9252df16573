#!/usr/bin/env bash
# Records this machine's nvidia-smi topology outputs as a parser fixture:
#   scripts/record-topology.sh NAME [FOLDER]  ->  FOLDER/recorded-NAME/ (FOLDER: Tests/FreightRoutingTests/Fixtures)
# Run it on a GPU machine (DGX, HGX, one GPU, ...), then copy the folder into Tests/FreightRoutingTests/Fixtures, run
# the tests and commit it.
set -euo pipefail
name="${1:?usage: scripts/record-topology.sh NAME [FOLDER] (e.g. dgx-h100)}"
[[ "$name" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || { echo "NAME: use a-z 0-9 . _ -" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "nvidia-smi is not on PATH" >&2; exit 1; }
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${2:-$root/Tests/FreightRoutingTests/Fixtures}/recorded-$name"
mkdir -p "$out"
nvidia-smi topo -m > "$out/topo-m.txt"
nvidia-smi nvlink --status > "$out/nvlink-status.txt" || true
nvidia-smi -q > "$out/query.txt"
{
  echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | sort | uniq -c
} > "$out/machine.txt"
echo "wrote $out; run: swift test --filter TopologyFixtureTests"
