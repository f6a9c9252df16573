#!/usr/bin/env bash
# Vendors etcd's v3 API .proto files (Apache-2.0, from Debian's golang-etcd-server-dev) into proto/etcd, with the
# gogoproto and google.api annotations stripped (they only steer Go code generation and the HTTP gateway).
# Run it to update them; the result is committed, and scripts/generate-protos.sh generates Swift from it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download golang-etcd-server-dev >/dev/null && dpkg -x golang-etcd-server-dev_*.deb x)
src="$work/x/usr/share/gocode/src/go.etcd.io/etcd"
version=$(dpkg-deb -f "$work"/golang-etcd-server-dev_*.deb Version)
for file in etcdserver/etcdserverpb/rpc.proto mvcc/mvccpb/kv.proto auth/authpb/auth.proto; do
  mkdir -p "proto/etcd/$(dirname "$file")"
  python3 - "$src/$file" "proto/etcd/$file" "$version" <<'PY'
import re, sys
source, target, version = sys.argv[1:]
text = open(source).read()
text = re.sub(r'import "(gogoproto/gogo|google/api/annotations)\.proto";\n', "", text)
text = re.sub(r'option \(gogoproto\.[a-z_]+\) = [a-z]+;\n', "", text)
text = re.sub(r'\s*\[\(gogoproto\.[a-z_]+\)\s*=\s*[^\]]+\]', "", text)
# `option (google.api.http) = { ... };` may nest braces (additional_bindings): cut each to its matching brace.
while (start := text.find("option (google.api.http) = {")) >= 0:
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    end = text.index(";", i) + 1
    text = text[:start].rstrip(" ") + text[end:].lstrip("\n")
text = re.sub(r'\{\s*\}', "{}", text)
text = re.sub(r'// for grpc-gateway\n', "", text)
header = (f"// Vendored from etcd {version} (Debian golang-etcd-server-dev), Apache License 2.0 (proto/etcd/LICENSE),\n"
          "// by scripts/vendor-etcd-protos.sh: gogoproto and google.api annotations removed, nothing else changed.\n")
open(target, "w").write(header + text)
PY
done
cp /usr/share/common-licenses/Apache-2.0 proto/etcd/LICENSE
echo "vendored etcd $version protos into proto/etcd"
