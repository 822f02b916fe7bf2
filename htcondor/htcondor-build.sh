#!/usr/bin/env bash
# Build the personal-pool image from Debian 13's htcondor, registry-free (debootstrap + podman build).
# The tag is a content hash of the recipe, so an unchanged recipe is never rebuilt.
# Usage: htcondor/htcondor-build.sh [WORK_DIR]   -> prints the image reference on stdout
# Needs: podman (podman/podman-setup.sh), debootstrap.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${1:-/tmp/il-htcondor-build}
BASE=localhost/debian:trixie-minbase
HASH=$(cat "$HERE/htcondor-build.sh" "$HERE"/image/* | sha256sum | cut -c1-12)
IMAGE=localhost/il-htcondor:$HASH
if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
if ! podman image exists "$BASE"; then
  rm -rf "$W/rootfs"
  mkdir -p "$W"
  debootstrap --variant=minbase trixie "$W/rootfs" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  tar -C "$W/rootfs" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$W/rootfs"
fi
podman build -q --pull=never --network=host -t "$IMAGE" "$HERE/image" >&2
echo "$IMAGE"
