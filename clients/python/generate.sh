#!/usr/bin/env bash
# Generates the Python stubs of proto/freight/v1/fabric.proto into freight_client/_generated (not committed).
# Needs grpcio-tools: pip install grpcio-tools
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/freight_client/_generated"
python="${PYTHON:-python3}"
rm -rf "$out"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$here/../../proto" --python_out="$out" --grpc_python_out="$out" \
  "$here/../../proto/freight/v1/fabric.proto"
touch "$out/__init__.py"
echo "generated $out"
