#!/bin/bash
# PID 1 of the login-node container: munge, sshd, slurmctld, slurmd; clean stop on SIGTERM.
set -euo pipefail
SSH_PORT=${SSH_PORT:-2222}
sed -i -e "s/^SlurmctldPort=.*/SlurmctldPort=${SLURMCTLD_PORT:-7817}/" \
       -e "s/^SlurmdPort=.*/SlurmdPort=${SLURMD_PORT:-7818}/" /etc/slurm/slurm.conf
mkdir -p /run/munge /run/sshd /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /var/log/sshd
chown munge:munge /run/munge
# non-root apptainer mounts SIFs with squashfuse; podman --privileged gives a root-only /dev/fuse
chmod 0666 /dev/fuse 2>/dev/null || true
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
[ -s /etc/ssh/user_ca.pub ] || : > /etc/ssh/user_ca.pub
runuser -u munge -- /usr/sbin/munged
# sshd logs to a file (no syslog here): tests count "Accepted publickey" lines in it
/usr/sbin/sshd -p "$SSH_PORT" -E /var/log/sshd/sshd.log
# sacct -c opens JobCompLoc for append: pre-create it owned by the non-root test user
[ -e /var/log/slurm/jobcomp.txt ] || install -m 0644 -o hpcuser -g hpcuser /dev/null /var/log/slurm/jobcomp.txt
slurmctld
slurmd
stop() {
  for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/sshd.pid /run/munge/munged.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  exit 0
}
trap stop TERM INT
echo "loginnode: daemons started (ssh port $SSH_PORT)"
while :; do sleep 3600 & wait $! || true; done
