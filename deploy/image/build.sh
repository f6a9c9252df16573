#!/usr/bin/env bash
# Builds Freight's OCI image without a Docker engine (docs/deploy.md, "The image"):
#   deploy/image/build.sh [--binary PATH | --static] [--out DIR] [TAG]
#     -> DIR/freight-image.oci.tar (image freight:TAG; DIR defaults to .build-image, TAG to latest)
# 1. the release freight (`swift build -c release --product freight`; its Swift runtime libraries come along
#    through ldd, as every other library), or the one given with --binary, stripped; with --static, one with the
#    Swift standard library linked in (--static-swift-stdlib: a release build of its own, tried by hand, not by the
#    tests; no smaller an image: the runtime moves into the binary);
# 2. a root file system with it, exactly the shared libraries ldd names (and the dynamic loader), CA certificates,
#    a non-root user (freight, 65532), /tmp and /run/freight, in DIR/context/rootfs beside the Containerfile;
# 3. buildah (Debian's; --isolation chroot, vfs storage) builds the Containerfile FROM scratch and writes an OCI
#    archive that podman load, docker load (through skopeo), and registries take. The same context builds with
#    `docker build DIR/context` where Docker is.
# Prints the image's size beside a Debian 12 slim base image's (about 75 MiB unpacked, before any package).
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=""
static=0
out=.build-image
tag=latest
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --static) static=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) tag="$1"; shift ;;
  esac
done
command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 1; }

if [ -z "$binary" ] && [ "$static" = 1 ]; then
  swift build -c release --product freight --static-swift-stdlib
  binary="$(swift build -c release --product freight --static-swift-stdlib --show-bin-path)/freight"
elif [ -z "$binary" ]; then
  swift build -c release --product freight
  binary="$(swift build -c release --product freight --show-bin-path)/freight"
fi
[ -x "$binary" ] || { echo "no freight binary at $binary" >&2; exit 1; }

context="$out/context"
rootfs="$context/rootfs"
rm -rf "$context"
mkdir -p "$rootfs/usr/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/run/freight"
install -m 0755 "$binary" "$rootfs/usr/bin/freight"
strip "$rootfs/usr/bin/freight"
# Exactly the libraries the binary loads, at the paths it loads them from (the loader's too).
ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u | while read -r library; do
  mkdir -p "$rootfs$(dirname "$library")"
  cp -L "$library" "$rootfs$library"
  case "$library" in */ld-linux*) ;; *) strip --strip-unneeded "$rootfs$library" 2>/dev/null || true ;; esac
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
else
  echo "warning: no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates): the image has no CA bundle" >&2
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nfreight:x:65532:65532:freight:/tmp:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nfreight:x:65532:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/run/freight"
cp deploy/image/Containerfile "$context/Containerfile"

# vfs storage and chroot isolation: no kernel overlay, no user namespaces, no daemon needed.
storage=(--storage-driver vfs)
buildah "${storage[@]}" bud --quiet --isolation chroot --format oci -t "freight:$tag" "$context" >/dev/null
archive="$out/freight-image.oci.tar"
rm -f "$archive"
buildah "${storage[@]}" push --quiet "freight:$tag" "oci-archive:$archive:freight:$tag"
unpacked=$(du -sm "$rootfs" | cut -f1)
packed=$(( $(stat -c %s "$archive") >> 20 ))
echo "image freight:$tag: $unpacked MiB unpacked, $packed MiB as an OCI archive ($archive); a Debian 12 slim base alone is about 75 MiB unpacked"
