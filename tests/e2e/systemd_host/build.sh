#!/usr/bin/env bash
# Build the systemd test host image (Containerfile here), registry-free, on deploy/minbase.sh's bookworm
# base. The tag is a content hash of the recipe and the base image: an unchanged recipe is never rebuilt.
# Usage: tests/e2e/systemd_host/build.sh   -> the image reference on the last stdout line
# Env:   HOST_CA  CA bundle for apt in the build ($SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CA=${HOST_CA:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
BASE=$("$ROOT/deploy/minbase.sh" bookworm)
HASH=$({ cat "$HERE/Containerfile" "$HERE/build.sh"; podman image inspect -f '{{.Id}}' "$BASE"; } | sha256sum | cut -c1-12)
IMAGE=localhost/il-systemd-host:$HASH
if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
[ -r "$CA" ] || { echo "no CA bundle at $CA (set HOST_CA)" >&2; exit 1; }
exec 9>/tmp/il-systemd-host-build.lock  # concurrent test runs build it once
flock 9
if ! podman image exists "$IMAGE"; then
  podman build --pull=never --network=host --build-arg "BASE=$BASE" --secret "id=host-ca,src=$CA" \
    -t "$IMAGE" "$HERE" >&2
fi
echo "$IMAGE"
