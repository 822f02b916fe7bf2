#!/usr/bin/env bash
# Stop the local SLURM cluster started by slurm-up.sh. Usage: slurm/slurm-down.sh [STATE_DIR]
S=${1:-/tmp/il-slurm}
for f in "$S"/run/slurmd-*.pid "$S"/run/slurmctld.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f"); kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
done
true
