#!/usr/bin/env bash
# Regenerates the committed Swift code for Freight's .proto files.
#   scripts/generate-protos.sh          write Sources/*/Generated/*.pb.swift
#   scripts/generate-protos.sh --check  fail when the committed code differs from what the .proto files give
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
(cd tools/protoc-gen && swift build -c release --product protoc-gen-swift >/dev/null)
plugin="$(cd tools/protoc-gen && swift build -c release --show-bin-path)/protoc-gen-swift"

out=Sources/FreightWire/Generated
target="$out"
if [ "${1:-}" = "--check" ]; then target=$(mktemp -d); trap 'rm -rf "$target"' EXIT; fi
mkdir -p "$target"
protoc --plugin=protoc-gen-swift="$plugin" --proto_path=proto \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=DropPath \
  --swift_out="$target" proto/freight/wire/v1/frames.proto
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" "$target" >/dev/null; then
    echo "generated protobuf code is stale: run scripts/generate-protos.sh and commit" >&2
    diff -r "$out" "$target" | head -20 >&2
    exit 1
  fi
  echo "generated protobuf code is current"
fi
