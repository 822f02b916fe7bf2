#!/usr/bin/env bash
# Load local images into the pool's job storage (rootless podman of condortest, the jobs' user),
# registry-free: podman save on the host, podman load in the pool container.
# Usage: htcondor/htcondor-images.sh IMAGE...     (the pool must be up: htcondor-up.sh)
# Env:   HTCONDOR_NAME  container name (il-htcondor)
set -euo pipefail
NAME=${HTCONDOR_NAME:-il-htcondor}
[ $# -gt 0 ] || { echo "usage: htcondor-images.sh IMAGE..." >&2; exit 2; }
missing=()
for image in "$@"; do
  want=$(podman image inspect --format '{{.Id}}' "$image")
  have=$(podman exec -u condortest "$NAME" il-job-podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  [ "$want" = "$have" ] || missing+=("$image")
done
[ ${#missing[@]} -gt 0 ] || exit 0
A=$(mktemp -d /tmp/il-htcondor-images.XXXXXX)
trap 'rm -rf "$A"' EXIT
chmod 0755 "$A"
podman save -q -m --format docker-archive -o "$A/images.tar" "${missing[@]}"
chmod 0644 "$A/images.tar"
podman exec -u condortest "$NAME" il-job-podman load -q -i "$A/images.tar" >/dev/null
