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
#        HTCONDOR_CPUS   CPUs the startd offers (job slots)     (8)
#        HTCONDOR_CPU_SHARES  cpu weight of the pool container (1024 = a normal process; lower keeps a
#                        benchmark's jobs from starving the plugin they are measured against) (unset)
# Prints "export CONDOR_CONFIG=..." (a client config for tools and the bindings) on success.
#
# Jobs run as condortest, uid 2001 (CLAIMTOBE identity of the tests, or the token's subject): a
# plugin running as root hands each job directory to that uid (HTCondorJobUser: 2001).
set -euo pipefail
IMAGE=${1:?usage: htcondor-up.sh IMAGE}
NAME=${HTCONDOR_NAME:-il-htcondor}
D=${HTCONDOR_DIR:-/tmp/il-htcondor}
PORT=${HTCONDOR_PORT:-9618}
CPUS=${HTCONDOR_CPUS:-8}
weight=()
[ -n "${HTCONDOR_CPU_SHARES:-}" ] && weight=(--cpu-shares "$HTCONDOR_CPU_SHARES")
mkdir -p "$D"
mounts=()
for dir in ${HTCONDOR_SHARED:-/tmp}; do
  mkdir -p "$dir"
  mounts+=(-v "$dir:$dir")
done
podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
podman run -d --name "$NAME" --hostname il-htcondor --add-host il-htcondor:127.0.0.1 --network=host --privileged "${weight[@]}" \
  -e "_CONDOR_IL_COLLECTOR_PORT=$PORT" -e "_CONDOR_NUM_CPUS=$CPUS" -e _CONDOR_FILESYSTEM_DOMAIN=il-pool -e _CONDOR_UID_DOMAIN=il-pool "${mounts[@]}" "$IMAGE" >/dev/null
for _ in $(seq 1 120); do
  if podman exec "$NAME" condor_status -af Name 2>/dev/null | grep -q slot; then
    cat >"$D/client.config" <<CONF
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:$PORT
ENABLE_IPV6 = False
SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE
SEC_CLAIMTOBE_USER = condortest
FILESYSTEM_DOMAIN = il-pool
UID_DOMAIN = il-pool
CONF
    echo "export CONDOR_CONFIG=$D/client.config"
    exit 0
  fi
  sleep 0.5
done
echo "HTCondor pool did not come up; podman logs $NAME; podman exec $NAME cat /var/log/condor/MasterLog" >&2
exit 1
