#!/usr/bin/env bash
# Stop the local SLURM cluster started by slurm-up.sh. Usage: slurm/slurm-down.sh [STATE_DIR]
S=${1:-/tmp/il-slurm}
for f in "$S"/run/slurmd-*.pid "$S"/run/slurmctld.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f"); kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
done
# the memory cgroups of SLURM_MEMORY_ENFORCEMENT=cgroup (cgroup v1: <controller>/slurm_<NodeName>/...)
# stay behind empty when slurmd stops; remove them, deepest first, for this cluster's node only
if [ -s "$S/run/node-name" ]; then
  node=$(cat "$S/run/node-name")
  for d in /sys/fs/cgroup/*/"slurm_$node"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
fi
true
