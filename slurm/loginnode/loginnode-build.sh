#!/usr/bin/env bash
# Build the login-node image (Debian sid: slurm, munge, sshd, apptainer, the plugin's Python deps),
# registry-free: debootstrap a sid base once, then `podman build --pull=never` on top of it.
# The tag is a content hash of the recipe, so an unchanged recipe is never rebuilt.
# Usage: slurm/loginnode/loginnode-build.sh   -> prints the image reference on stdout
# Needs: podman (podman/podman-setup.sh); the base image comes from deploy/minbase.sh. ~70 s from nothing on a 2-core VM.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HASH=$(cat "$HERE/loginnode-build.sh" "$HERE"/image/* | sha256sum | cut -c1-12)
IMAGE=localhost/il-loginnode:$HASH
if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
"$ROOT/deploy/minbase.sh" sid >/dev/null
podman build -q --pull=never --network=host -t "$IMAGE" "$HERE/image" >&2
echo "$IMAGE"
