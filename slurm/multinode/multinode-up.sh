#!/usr/bin/env bash
# Start a REAL two-node SLURM cluster on one host: slurmctld on the host, two slurmd compute nodes
# in privileged podman containers (slurm/multinode/image: Debian 12's slurmd, srun, Open MPI, mpi4py,
# PMIx). Host network, so every daemon listens on 127.0.0.1 with a port of its own; each container
# has its own hostname and NodeName. The nodes share the host's munged (its socket is bound in, so
# one key), the cluster dir (config, spool, logs) and the data root, each at the same path as on
# the host: the plugin on the host writes job dirs that both nodes run from.
# Usage: slurm/multinode/multinode-up.sh STATE_DIR DATA_ROOT   -> prints "export SLURM_CONF=..."
# Env: MULTINODE_NAME (il-mpi: container names <name>-1/-2, node names <name>1/<name>2),
#      SLURMCTLD_PORT (6957), SLURMD_PORT (6958: the first node's, the second one's is +1),
#      SLURM_MIN_JOB_AGE (300). Idempotent: a running cluster of that state dir is restarted fresh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
S=${1:?usage: multinode-up.sh STATE_DIR DATA_ROOT}
DATA=${2:?usage: multinode-up.sh STATE_DIR DATA_ROOT}
NAME=${MULTINODE_NAME:-il-mpi}
CTLD_PORT=${SLURMCTLD_PORT:-6957}
NODE_PORT=${SLURMD_PORT:-6958}
case $S$DATA in *[!A-Za-z0-9._/-]*) echo "STATE_DIR and DATA_ROOT: plain absolute paths only" >&2; exit 2 ;; esac
[[ $S == /* && $DATA == /* ]] || { echo "STATE_DIR and DATA_ROOT must be absolute" >&2; exit 2; }
if ! command -v slurmctld >/dev/null || ! command -v munge >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurm-client munge >/dev/null
fi
IMAGE=$(bash "$HERE/multinode-build.sh")
MULTINODE_NAME=$NAME bash "$HERE/multinode-down.sh" "$S" >/dev/null 2>&1 || true
mkdir -p "$S"/{state,spool,log,run} "$DATA"
rm -rf "$S"/state/* "$S"/spool/*
NODES=("${NAME}1" "${NAME}2")
for node in "${NODES[@]}"; do mkdir -p "$S/spool/slurmd-$node"; done
cat > "$S/slurm.conf" <<CONF
ClusterName=ilmpi
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$NODE_PORT
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/slurmd-%n
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$S/log/jobcomp.txt
MinJobAge=${SLURM_MIN_JOB_AGE:-300}
KillWait=5
MessageTimeout=60
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=${NODES[0]} NodeAddr=127.0.0.1 Port=$NODE_PORT CPUs=4 RealMemory=4000 State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=127.0.0.1 Port=$((NODE_PORT + 1)) CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! munge -n >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
fi
export SLURM_CONF="$S/slurm.conf"
slurmctld
hosts=()
for node in "${NODES[@]}"; do hosts+=(--add-host "$node:127.0.0.1"); done
for i in 1 2; do
  node=${NODES[i - 1]}
  # --init: catatonit reaps the daemonized slurmstepds; --privileged: bwrap (runtime none with mounts)
  podman run -d --name "$NAME-$i" --hostname "$node" "${hosts[@]}" --network=host --privileged --init \
    -v /run/munge:/run/munge -v "$S:$S" -v "$DATA:$DATA" -e SLURM_CONF="$SLURM_CONF" \
    "$IMAGE" slurmd -D -N "$node" >/dev/null
done
for _ in $(seq 1 150); do
  if [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = idle ] && [ "$(sinfo -h -N -o %N | wc -l)" = 2 ]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "the two nodes did not become idle; see $S/log and podman logs $NAME-1 / $NAME-2" >&2
exit 1
