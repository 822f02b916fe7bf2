#!/usr/bin/env bash
# Start the personal HTCondor pool (collector, negotiator, schedd, startd) in a podman container
# on 127.0.0.1 and wait until the startd is in the collector. Idempotent: a running pool is
# replaced by a fresh one (empty queue and history).
# Usage: htcondor/htcondor-up.sh IMAGE      (IMAGE: what htcondor-build.sh printed)
# Env:   HTCONDOR_NAME   container name                       (il-htcondor)
#        HTCONDOR_DIR    client config and tokens go here      (/tmp/il-htcondor)
#        HTCONDOR_SHARED host dirs mounted at the same path, space-separated: the "shared
#                        filesystem" of the pool                (/tmp)
#        HTCONDOR_PORT   collector port                         (9618)
# Prints "export CONDOR_CONFIG=..." (a client config for tools and the bindings) on success.
#
# Jobs run as condortest (uid 2001 in the container). That uid is mapped to the host's root, so a
# test job reads and writes the plugin's (root-owned, 0700) job directories on the shared paths
# the way a site's jobs act as the plugin's service account. Test kit only: never at a site.
set -euo pipefail
IMAGE=${1:?usage: htcondor-up.sh IMAGE}
NAME=${HTCONDOR_NAME:-il-htcondor}
D=${HTCONDOR_DIR:-/tmp/il-htcondor}
PORT=${HTCONDOR_PORT:-9618}
mkdir -p "$D"
mounts=()
for dir in ${HTCONDOR_SHARED:-/tmp}; do
  mkdir -p "$dir"
  mounts+=(-v "$dir:$dir")
done
podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
# container uid/gid 0-2000 -> host 100000+, 2001 (condortest) -> host 0, the rest -> host 102002+
idmap=()
for kind in uidmap gidmap; do
  idmap+=("--$kind" 0:100000:2001 "--$kind" 2001:0:1 "--$kind" 2002:102002:63534)
done
podman run -d --name "$NAME" --hostname il-htcondor --network=host --privileged "${idmap[@]}" \
  -e "_CONDOR_IL_COLLECTOR_PORT=$PORT" "${mounts[@]}" "$IMAGE" >/dev/null
for _ in $(seq 1 120); do
  if podman exec "$NAME" condor_status -af Name 2>/dev/null | grep -q slot; then
    cat >"$D/client.config" <<CONF
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:$PORT
ENABLE_IPV6 = False
SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE
SEC_CLAIMTOBE_USER = condortest
CONF
    echo "export CONDOR_CONFIG=$D/client.config"
    exit 0
  fi
  sleep 0.5
done
echo "HTCondor pool did not come up; podman logs $NAME; podman exec $NAME cat /var/log/condor/MasterLog" >&2
exit 1
