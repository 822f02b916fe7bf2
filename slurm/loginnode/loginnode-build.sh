#!/usr/bin/env bash
# Build the login-node image (Debian sid: slurm, munge, sshd, apptainer, the plugin's Python deps),
# registry-free: debootstrap a sid base once, then `podman build --pull=never` on top of it.
# The tag is a content hash of the recipe, so an unchanged recipe is never rebuilt.
# Usage: slurm/loginnode/loginnode-build.sh [WORK_DIR]   -> prints the image reference on stdout
# Needs: podman (podman/podman-setup.sh), debootstrap. ~70 s from nothing on a 2-core VM.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${1:-/tmp/il-loginnode-build}
BASE=localhost/debian:sid-minbase
HASH=$(cat "$HERE/loginnode-build.sh" "$HERE"/image/* | sha256sum | cut -c1-12)
IMAGE=localhost/il-loginnode:$HASH
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
  debootstrap --variant=minbase sid "$W/rootfs" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  tar -C "$W/rootfs" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$W/rootfs"
fi
podman build -q --pull=never --network=host -t "$IMAGE" "$HERE/image" >&2
echo "$IMAGE"
