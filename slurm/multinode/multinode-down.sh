#!/usr/bin/env bash
# Stop the two-node cluster of multinode-up.sh: both node containers, then slurmctld.
# Usage: slurm/multinode/multinode-down.sh STATE_DIR   (Env: MULTINODE_NAME, as for -up)
S=${1:?usage: multinode-down.sh STATE_DIR}
NAME=${MULTINODE_NAME:-il-mpi}
for i in 1 2; do
  podman rm -f -t 5 "$NAME-$i" >/dev/null 2>&1
done
f=$S/run/slurmctld.pid
if [ -f "$f" ]; then
  pid=$(cat "$f"); kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
fi
rm -f "$S"/run/slurmd-*.pid
true
