#!/usr/bin/env bash
# One command, fresh Debian 12 as root: install everything, start a REAL local SLURM cluster,
# serve the plugin against it, run a demo pod through it the way interLink does, show status and logs.
# Usage: bash slurm/demo.sh            (the plugin keeps serving on 127.0.0.1:4000 until Ctrl-C)
#        DEMO_EXIT=1 bash slurm/demo.sh   (stop after the demo)
# Env: DEMO_PORT (4000), DEMO_DIR (/tmp/il-demo), IL_SLURM_STATE (/tmp/il-slurm), and slurm-up.sh's
#      SLURMCTLD_PORT/SLURMD_PORT: where the demo's plugin, files and cluster go.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for cmd in slurmctld:slurmctld slurmd:slurmd squeue:slurm-client munge:munge bwrap:bubblewrap curl:curl; do
  command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
[ -x .venv/bin/interlink-plugin ] || .venv/bin/pip install -q --disable-pip-version-check -e . >/dev/null 2>&1
CLUSTER=${IL_SLURM_STATE:-/tmp/il-slurm}
PORT=${DEMO_PORT:-4000}
URL=http://127.0.0.1:$PORT
eval "$(bash slurm/slurm-up.sh "$CLUSTER")"
D=${DEMO_DIR:-/tmp/il-demo}; mkdir -p "$D"
cat > "$D/plugin.yaml" <<CONF
Backend: slurm
ContainerRuntime: none
DataRootFolder: $D/jobs
StateDir: $D/state
SidecarPort: $PORT
PollInterval: 1
$( [ "$(id -u)" = 0 ] && echo 'AllowRootJobs: true  # demo only: a root plugin runs no pod as root unless allowed; a site sets DefaultUID' )
CONF
.venv/bin/interlink-plugin check --config "$D/plugin.yaml"
.venv/bin/interlink-plugin serve --config "$D/plugin.yaml" > "$D/plugin.log" 2>&1 &
PLUGIN=$!
trap 'kill $PLUGIN 2>/dev/null; bash slurm/slurm-down.sh "$CLUSTER"' EXIT
for _ in $(seq 50); do curl -sf $URL/healthz >/dev/null && break; sleep 0.2; done
UID_=$(cat /proc/sys/kernel/random/uuid)
POD=$(cat <<JSON
{"metadata": {"name": "demo", "namespace": "default", "uid": "$UID_"},
 "spec": {"restartPolicy": "Never",
   "volumes": [{"name": "cfg", "configMap": {"name": "demo-cfg"}}],
   "containers": [{"name": "hello", "image": "ignored-by-runtime-none",
     "command": ["sh", "-c", "echo hello from a SLURM job on node \$(hostname); cat /etc/demo/greeting; echo \$GREETING"],
     "env": [{"name": "GREETING", "value": "env arrives byte for byte: \$(not run) 'q'"}],
     "volumeMounts": [{"name": "cfg", "mountPath": "/etc/demo"}],
     "resources": {"requests": {"cpu": "1", "memory": "128Mi"}}}]}}
JSON
)
echo "== POST /create"
CREATED=$(curl -s -X POST -H 'Content-Type: application/json' $URL/create \
  -d "{\"pod\": $POD, \"container\": [{\"name\": \"hello\", \"configMaps\": [{\"metadata\": {\"name\": \"demo-cfg\"}, \"data\": {\"greeting\": \"a configMap file\\n\"}}]}]}")
echo "$CREATED"
JID=$(printf '%s' "$CREATED" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["PodJID"])')
# the pod is a real SLURM job: its id is the PodJID, its comment names the pod (containers get the pod's
# env only, as in Kubernetes: SLURM's variables are the job's, not the container's)
echo "== squeue -j $JID: job id, state, comment"
squeue -h -j "$JID" -o '%i %T %k'
for _ in $(seq 60); do
  S=$(curl -s -X GET -H 'Content-Type: application/json' $URL/status -d "[$POD]")
  case "$S" in *terminated*) break;; esac; sleep 1
done
echo "== GET /status"; echo "$S"
echo "== GET /getLogs"
curl -s -X GET -H 'Content-Type: application/json' $URL/getLogs \
  -d "{\"Namespace\": \"default\", \"PodUID\": \"$UID_\", \"PodName\": \"demo\", \"ContainerName\": \"hello\", \"Opts\": {}}"
echo "== GET /status [] (ping)"; curl -s -X GET -H 'Content-Type: application/json' $URL/status -d '[]'; echo
echo "== POST /delete"; curl -s -X POST -H 'Content-Type: application/json' $URL/delete -d "$POD"; echo
[ "${DEMO_EXIT:-0}" = 1 ] && exit 0
echo "plugin serving on $URL (log: $D/plugin.log); Ctrl-C to stop"
wait $PLUGIN
