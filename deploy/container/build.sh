#!/usr/bin/env bash
# Build the plugin's container image for one backend, registry-free (podman build --pull=never on
# the local debootstrap base of deploy/minbase.sh). The tag is a content hash of every input (the
# recipe, the plugin's source, the flavour, the uid, the base image), so an unchanged tree is never
# rebuilt; the package version (interlink_plugins/__init__.py) is a second tag, moved to the latest
# build of that version. OCI labels carry version, git revision and build time. The host's CA bundle
# is a build secret: mounted into the build's RUN steps only. podman's build output goes to stderr.
# Usage: deploy/container/build.sh slurm|htcondor [--name-only]   -> the image reference on the last stdout
#        line (--name-only: the name it would have, nothing built)
# Env:   PLUGIN_UID  uid of the image's user `interlink` (990); any uid works at run time with --user
#        PLUGIN_GID  its gid (PLUGIN_UID)
#        HOST_CA     CA bundle for the build ($SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail
FLAVOUR=${1:?usage: build.sh slurm|htcondor [--name-only]}
NAME_ONLY=${2:-}
case "$FLAVOUR" in slurm|htcondor) ;; *) echo "unknown flavour $FLAVOUR (slurm|htcondor)" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
UID_ARG=${PLUGIN_UID:-990}
GID_ARG=${PLUGIN_GID:-$UID_ARG}
CA=${HOST_CA:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
BASE=$("$ROOT/deploy/minbase.sh" bookworm)
CTX=$(mktemp -d /tmp/il-plugin-image.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
# the build context is exactly what is hashed: the recipe and the installable package, no caches
cp "$HERE/Containerfile" "$HERE/build.sh" "$HERE/healthcheck.py" "$ROOT/pyproject.toml" "$ROOT/README.md" \
  "$ROOT/LICENSE" "$CTX/"
cp -r "$ROOT/interlink_plugins" "$CTX/"
find "$CTX" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
HASH=$({ tar -C "$CTX" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - .
         echo "$FLAVOUR $UID_ARG $GID_ARG $(podman image inspect -f '{{.Id}}' "$BASE")"; } | sha256sum | cut -c1-12)
IMAGE=localhost/interlink-plugin-$FLAVOUR:$HASH
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/interlink_plugins/__init__.py")
if [ "$NAME_ONLY" = --name-only ]; then
  echo "$IMAGE"
  exit 0
fi
if ! podman image exists "$IMAGE"; then
  [ -r "$CA" ] || { echo "no CA bundle at $CA (set HOST_CA)" >&2; exit 1; }
  REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  case "$FLAVOUR" in htcondor) EXTRAS=htcondor ;; *) EXTRAS= ;; esac
  # docker format: the OCI image format has no HEALTHCHECK
  podman build --format docker --pull=never --network=host --target "$FLAVOUR" --build-arg "BASE=$BASE" \
    --build-arg "PLUGIN_UID=$UID_ARG" --build-arg "PLUGIN_GID=$GID_ARG" --build-arg "EXTRAS=$EXTRAS" \
    --build-arg "FLAVOUR=$FLAVOUR" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --secret "id=host-ca,src=$CA" \
    -f "$CTX/Containerfile" -t "$IMAGE" "$CTX" >&2
fi
podman tag "$IMAGE" "localhost/interlink-plugin-$FLAVOUR:$VERSION"
echo "$IMAGE"
