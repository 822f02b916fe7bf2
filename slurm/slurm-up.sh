#!/usr/bin/env bash
# Start a REAL single-node SLURM cluster on localhost (Debian's slurm-wlm, root, no systemd).
# Usage: slurm/slurm-up.sh [STATE_DIR]   (default /tmp/il-slurm)
# Prints "export SLURM_CONF=..." on success. Idempotent: a running cluster is restarted fresh.
# Env: SLURM_CPUS (32), SLURM_MEM_MB (32000), SLURM_MIN_JOB_AGE (300), SLURMCTLD_PORT (6817), SLURMD_PORT (6818),
#      SLURM_MESSAGE_TIMEOUT (60 s: every job slot of the one node shares this machine's cores; under a
#      burst of job starts slurmd answered launches after SLURM's default 10 s, and slurmctld cancelled the
#      --no-requeue jobs: 'Could not confirm batch launch'),
#      SLURM_EXTRA_CONF (extra slurm.conf lines appended as given, e.g. more partitions or PreemptType; default none),
#      SLURM_NODE_NAME (the node's NodeName, default the short hostname; slurmd runs with -N NAME),
#      SLURM_MEMORY_ENFORCEMENT (how SLURM enforces --mem: none, the default and the cheapest; cgroup:
#        task/cgroup + proctrack/cgroup with ConstrainRAMSpace, the kernel's OOM killer inside the job's
#        memory cgroup, job state OUT_OF_MEMORY; jobacct: jobacct_gather/linux polling every
#        SLURM_ACCT_FREQ (1) seconds with OverMemoryKill, slurmstepd SIGKILLs the step, job state FAILED).
#        With cgroup, give each cluster on one host its own SLURM_NODE_NAME: the cgroups are named
#        slurm_<NodeName> and two slurmds of the same name would share them.
set -euo pipefail
S=${1:-/tmp/il-slurm}
H=${SLURM_NODE_NAME:-$(hostname -s)}
ENFORCE=${SLURM_MEMORY_ENFORCEMENT:-none}
case $ENFORCE in
  none)
    PROCTRACK=proctrack/linuxproc TASK=task/none ACCT="JobAcctGatherType=jobacct_gather/none" ;;
  cgroup)
    PROCTRACK=proctrack/cgroup TASK=task/cgroup ACCT="JobAcctGatherType=jobacct_gather/none" ;;
  jobacct)
    PROCTRACK=proctrack/linuxproc TASK=task/none
    ACCT="JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=${SLURM_ACCT_FREQ:-1}" ;;
  *) echo "SLURM_MEMORY_ENFORCEMENT must be none, cgroup or jobacct, not '$ENFORCE'" >&2; exit 2 ;;
esac
if ! command -v slurmctld >/dev/null || ! command -v munge >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
"$(dirname "$0")/slurm-down.sh" "$S" >/dev/null 2>&1 || true
mkdir -p "$S"/{state,spool,log,run,dev}
rm -rf "$S"/state/* "$S"/spool/*
mkdir -p "$S/spool/slurmd-$H"
echo "$H" > "$S/run/node-name"
# two fake GPU device nodes (char devices aliasing /dev/null) so --gres=gpu:N schedules
for i in 0 1; do [ -c "$S/dev/gpu$i" ] || mknod "$S/dev/gpu$i" c 1 3; done
cat > "$S/slurm.conf" <<CONF
ClusterName=ilcluster
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
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
ProctrackType=$PROCTRACK
TaskPlugin=$TASK
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
$ACCT
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$S/log/jobcomp.txt
MinJobAge=${SLURM_MIN_JOB_AGE:-300}
MaxJobCount=20000
KillWait=5
MessageTimeout=${SLURM_MESSAGE_TIMEOUT:-60}
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=${SLURM_CPUS:-32} Sockets=1 CoresPerSocket=${SLURM_CPUS:-32} ThreadsPerCore=1 RealMemory=${SLURM_MEM_MB:-32000} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
${SLURM_EXTRA_CONF:-}
CONF
echo "NodeName=$H Name=gpu File=$S/dev/gpu[0-1]" > "$S/gres.conf"
# cgroup.conf beside slurm.conf, for task/cgroup and proctrack/cgroup; the cgroup version is
# autodetected (v1 on this machine's hybrid layout; a unified-only host without systemd is untested)
if [ "$ENFORCE" = cgroup ]; then
  printf '%s\n' CgroupPlugin=autodetect ConstrainRAMSpace=yes ConstrainSwapSpace=yes > "$S/cgroup.conf"
else
  rm -f "$S/cgroup.conf"
fi
if ! munge -n >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
fi
export SLURM_CONF="$S/slurm.conf"
slurmctld
slurmd -N "$H"
for _ in $(seq 1 100); do
  [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = idle ] && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.2
done
echo "slurm did not become idle; see $S/log" >&2
exit 1
