#!/usr/bin/env bash
# Regenerates the committed Swift code for Freight's .proto files.
#   scripts/generate-protos.sh          write Sources/*/Generated/*.swift
#   scripts/generate-protos.sh --check  fail when the committed code differs from what the .proto files give
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
(cd tools/protoc-gen && swift build -c release --product protoc-gen-swift >/dev/null \
  && swift build -c release --product protoc-gen-grpc-swift-2 >/dev/null)
bin="$(cd tools/protoc-gen && swift build -c release --show-bin-path)"

check=false
[ "${1:-}" = "--check" ] && check=true
status=0

# generate OUT_DIR "PROTO..." ["GRPC_PROTO..." [GRPC_OPTION]]: messages, plus gRPC stubs for services when asked.
generate() {
  local out=$1 protos=$2 grpc=${3:-} grpc_option=${4:-Server=true}
  local target="$out"
  if $check; then target=$(mktemp -d); fi
  mkdir -p "$target"
  protoc --plugin=protoc-gen-swift="$bin/protoc-gen-swift" --proto_path=proto \
    --swift_opt=Visibility=Public --swift_opt=FileNaming=DropPath \
    --swift_out="$target" $protos
  if [ -n "$grpc" ]; then
    protoc --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" --proto_path=proto \
      --grpc-swift_opt=Visibility=Public --grpc-swift_opt=FileNaming=DropPath --grpc-swift_opt="$grpc_option" \
      --grpc-swift_out="$target" $grpc
  fi
  if $check; then
    if ! diff -r "$out" "$target" >/dev/null; then
      echo "generated code in $out is stale: run scripts/generate-protos.sh and commit" >&2
      diff -r "$out" "$target" | head -20 >&2
      status=1
    fi
    rm -rf "$target"
  fi
}

generate Sources/FreightWire/Generated proto/freight/wire/v1/frames.proto
generate Sources/FreightGRPC/Generated proto/freight/v1/fabric.proto proto/freight/v1/fabric.proto
# etcd's v3 API (vendored by scripts/vendor-etcd-protos.sh): messages, and client stubs for its services.
etcd="proto/etcd/etcdserver/etcdserverpb/rpc.proto proto/etcd/mvcc/mvccpb/kv.proto proto/etcd/auth/authpb/auth.proto"
generate Sources/FreightEtcd/Generated "$etcd" proto/etcd/etcdserver/etcdserverpb/rpc.proto Server=false
if $check && [ $status = 0 ]; then echo "generated protobuf and gRPC code is current"; fi
exit $status
