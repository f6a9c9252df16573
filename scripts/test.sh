#!/usr/bin/env bash
# Freight's one test command: installs what the tests need on a fresh machine, checks that the generated
# protobuf code is current, builds once, and runs every test (unit and real node processes on 127.0.0.x).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v protoc >/dev/null; then
  echo "== installing protobuf-compiler (for the generated-code check)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi

echo "== generated code"
scripts/generate-protos.sh --check

echo "== format (.swift-format)"
git ls-files '*.swift' | grep -v '/Generated/' | xargs swift format lint --strict

echo "== build"
swift build --build-tests

echo "== test"
swift test --skip-build
