#!/usr/bin/env bash
# Build the personal-pool image from Debian 13's htcondor, registry-free (debootstrap + podman build).
# The tag is a content hash of the recipe, so an unchanged recipe is never rebuilt.
# Usage: htcondor/htcondor-build.sh   -> prints the image reference on stdout
# Needs: podman (podman/podman-setup.sh); the base image comes from deploy/minbase.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HASH=$(cat "$HERE/htcondor-build.sh" "$HERE"/image/* | sha256sum | cut -c1-12)
IMAGE=localhost/il-htcondor:$HASH
if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
"$ROOT/deploy/minbase.sh" trixie >/dev/null
podman build -q --pull=never --network=host -t "$IMAGE" "$HERE/image" >&2
echo "$IMAGE"
