#!/usr/bin/env bash
# Checks Freight's deployment files offline (docs/deploy.md, "Checks"):
#   deploy/check.sh [OUT]     (OUT defaults to .build-deploy; the rendered overlays land in OUT/rendered)
# 1. every overlay under deploy/kubernetes/overlays renders (`kubectl kustomize`: kubectl 1.21 or later; Debian's
#    kubernetes-client 1.20 carries a kustomize too old for these files);
# 2. each rendered overlay validates against the Kubernetes schemas, rejecting unknown fields
#    (kubernetes-validate --strict, from PyPI);
# 3. checkov (PyPI) passes on the rendered manifests and on the image's Containerfile; every finding accepted is
#    skipped where it arises, with its reason (the checkov.io/skipN annotations of the manifests).
# The Python tools go into OUT/venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.build-deploy}"
kubernetes_version="${FREIGHT_KUBERNETES_VERSION:-1.31.0}"

command -v kubectl >/dev/null || {
  echo "deploy/check.sh: kubectl 1.21 or later is needed to render the overlays (kubectl kustomize)" >&2
  exit 3
}
if [ ! -x "$out/venv/bin/checkov" ] || [ ! -x "$out/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/python" -m pip install -q --disable-pip-version-check kubernetes-validate checkov pyyaml
fi

rm -rf "$out/rendered"
mkdir -p "$out/rendered"
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/rendered/$name.yaml"
  echo "rendered $name: $(grep -c '^kind:' "$out/rendered/$name.yaml") objects"
done
"$out/venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$out"/rendered/*.yaml
echo "kubernetes-validate --strict (Kubernetes $kubernetes_version): every object of every overlay valid"

# checkov finds a Dockerfile by its name: the Containerfile is checked as one.
cp deploy/image/Containerfile "$out/rendered/Dockerfile"
checkov=("$out/venv/bin/checkov" --compact --quiet --skip-download)
"${checkov[@]}" --framework kubernetes $(printf -- '-f %s ' "$out"/rendered/*.yaml)
"${checkov[@]}" --framework dockerfile -f "$out/rendered/Dockerfile"
echo "checkov: no failed check in the manifests or the Containerfile"
