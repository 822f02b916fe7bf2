#!/usr/bin/env bash
# Build the kubelet-parity suite's images, registry-free: one Debian bookworm userland
# (Containerfile: python3 3.11, busybox, nginx, git) on deploy/minbase.sh's base, then one thin
# image per name the suite's pods use, each with the CMD/ENTRYPOINT of the image it stands in for.
# Tags carry a content hash of this recipe: an unchanged recipe is never rebuilt.
# Usage: tests/kubelet/images/build.sh   -> prints "NAME IMAGE-ID" per stand-in on stdout
# Needs: podman (podman/podman-setup.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
HASH=$(cat "$HERE/build.sh" "$HERE/Containerfile" | sha256sum | cut -c1-12)
BASE=localhost/il-kubelet-base:$HASH
# name | Containerfile lines after FROM (how the real image starts a container)
STANDINS=(
  "docker.io/library/python:alpine|CMD [\"python3\"]"
  "docker.io/library/python:3.11-alpine|CMD [\"python3\"]"
  "docker.io/library/busybox:1.36|CMD [\"sh\"]"
  "docker.io/library/busybox:latest|CMD [\"sh\"]"
  "docker.io/library/alpine:3.19|CMD [\"/bin/sh\"]"
  "docker.io/library/alpine:3|CMD [\"/bin/sh\"]"
  "docker.io/library/nginx:alpine|STOPSIGNAL SIGQUIT
CMD [\"nginx\", \"-g\", \"daemon off;\"]"
  "docker.io/bitnamilegacy/git:latest|ENTRYPOINT [\"git\"]
CMD [\"--help\"]"
  "ghcr.io/grycap/cowsay:latest|CMD [\"/bin/bash\"]"
)
exec 9>/tmp/il-kubelet-images.lock
flock 9
if ! podman image exists "$BASE"; then
  "$ROOT/deploy/minbase.sh" bookworm >/dev/null
  podman build -q --pull=never --network=host -t "$BASE" "$HERE" >&2
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for entry in "${STANDINS[@]}"; do
  name=${entry%%|*}
  lines=${entry#*|}
  label="il.kubelet.recipe=$HASH"
  if [ "$(podman image inspect --format '{{index .Labels "il.kubelet.recipe"}}' "$name" 2>/dev/null)" != "$HASH" ]; then
    printf 'FROM %s\nLABEL %s\n%s\n' "$BASE" "$label" "$lines" > "$W/Containerfile"
    podman build -q --pull=never -t "$name" "$W" >/dev/null
  fi
  echo "$name $(podman image inspect --format '{{.Id}}' "$name" | cut -c1-12)"
done
