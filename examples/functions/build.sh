#!/usr/bin/env bash
# Assembles every example module (examples/functions/*.wat) into WebAssembly (*.wasm) with `freight fn assemble`
# (WasmKit's WAT), checking each as a node would load it (docs/functions.md).
#   examples/functions/build.sh            with the freight on PATH, or FREIGHT=path/to/freight
set -euo pipefail
cd "$(dirname "$0")"
freight=${FREIGHT:-$(command -v freight || echo "$PWD/../../.build/release/freight")}
for source in *.wat; do
  "$freight" fn assemble "$source" -o "${source%.wat}.wasm"
done
