#!/usr/bin/env bash
# A minimal Debian base image, registry-free: debootstrap --variant=minbase, then `podman import`.
# Built once per suite (localhost/debian:SUITE-minbase); concurrent callers wait on a lock. The
# rootfs is made in a work dir of its own (never a caller's), removed without crossing mounts.
# Usage: deploy/minbase.sh SUITE [WORK_DIR]   -> prints the image reference on stdout
# Needs: podman, debootstrap (installed from Debian when missing).
set -euo pipefail
SUITE=${1:?usage: minbase.sh SUITE [WORK_DIR]}
W=${2:-/tmp/il-minbase-$SUITE}
BASE=localhost/debian:$SUITE-minbase
if podman image exists "$BASE"; then
  echo "$BASE"
  exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
# remove_rootfs: what a failed debootstrap left, its mounts (proc, sys) first, deepest first
remove_rootfs() {
  findmnt -rno TARGET | awk -v root="$W/rootfs/" 'index($0, root) == 1' | sort -r | while read -r m; do
    umount -l "$m"
  done
  rm -rf --one-file-system "$W/rootfs"
}
mkdir -p "$W"
exec 9>"/tmp/il-minbase-$SUITE.lock"  # one lock per suite, whatever the work dir
flock 9
if ! podman image exists "$BASE"; then
  remove_rootfs
  debootstrap --variant=minbase "$SUITE" "$W/rootfs" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; remove_rootfs; exit 1; }
  tar -C "$W/rootfs" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  remove_rootfs
fi
echo "$BASE"
