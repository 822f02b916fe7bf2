#!/usr/bin/env bash
# Build the compute-node image of the two-node test cluster (Debian 12: slurmd, srun, Open MPI,
# mpi4py, PMIx), registry-free on the local bookworm base. The tag is a content hash of the recipe,
# so an unchanged recipe is never rebuilt.
# Usage: slurm/multinode/multinode-build.sh   -> prints the image reference on stdout
# Needs: podman (podman/podman-setup.sh); the base image comes from deploy/minbase.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HASH=$(cat "$HERE/multinode-build.sh" "$HERE"/image/* | sha256sum | cut -c1-12)
IMAGE=localhost/il-slurmnode:$HASH
if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
"$ROOT/deploy/minbase.sh" bookworm >/dev/null
podman build -q --pull=never --network=host -t "$IMAGE" "$HERE/image" >&2
echo "$IMAGE"
