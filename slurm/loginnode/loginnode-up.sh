#!/usr/bin/env bash
# Start the login-node container (privileged podman, host network) and wait until sshd answers
# and the slurm node is idle. Creates, once, in $LOGINNODE_DIR/ssh: a client key, a host key (so
# known_hosts is written before the start: strict checking, no trust on first use), a user CA
# with a certificate for a second client key, known_hosts and an ssh config.
# Env: LOGINNODE_NAME (il-loginnode), LOGINNODE_DIR (/tmp/il-loginnode), LOGINNODE_SHARED
#      (/tmp/il-loginnode-shared: mounted at the same path, the "shared filesystem"),
#      LOGINNODE_SRC (the plugin source, mounted read-only at /opt/interlink-plugins),
#      SSH_PORT (2222), SLURMCTLD_PORT (7817), SLURMD_PORT (7818): distinct values let it run
#      beside a host SLURM (6817/6818) and beside another login node.
# Prints the image and the ssh command line. Usage: slurm/loginnode/loginnode-up.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${LOGINNODE_NAME:-il-loginnode}
D=${LOGINNODE_DIR:-/tmp/il-loginnode}
SHARED=${LOGINNODE_SHARED:-/tmp/il-loginnode-shared}
SRC=${LOGINNODE_SRC:-$(cd "$HERE/../.." && pwd)}
PORT=${SSH_PORT:-2222}
IMAGE=$(bash "$HERE/loginnode-build.sh")
K=$D/ssh
mkdir -p "$K" "$SHARED"
chmod 0755 "$SHARED"
[ -f "$K/id_ed25519" ]   || ssh-keygen -q -t ed25519 -N '' -C il-loginnode-client -f "$K/id_ed25519"
[ -f "$K/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C il-loginnode-host   -f "$K/host_ed25519"
[ -f "$K/user_ca" ]      || ssh-keygen -q -t ed25519 -N '' -C il-loginnode-user-ca -f "$K/user_ca"
if [ ! -f "$K/id_cert-cert.pub" ]; then       # a key only a certificate authorises (CINECA style)
  ssh-keygen -q -t ed25519 -N '' -C il-loginnode-cert -f "$K/id_cert"
  ssh-keygen -q -s "$K/user_ca" -I il-test -n root,hpcuser -V -5m:+12h "$K/id_cert.pub"
fi
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$K/host_ed25519.pub")" > "$K/known_hosts"
cat > "$K/config" <<CONF
Host loginnode
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $K/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $K/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
CONF
podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
podman run -d --name "$NAME" --hostname login01 --add-host login01:127.0.0.1 \
  --privileged --network=host -e SSH_PORT="$PORT" \
  -e SLURMCTLD_PORT="${SLURMCTLD_PORT:-7817}" -e SLURMD_PORT="${SLURMD_PORT:-7818}" \
  -v "$K/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
  -v "$K/id_ed25519.pub:/home/hpcuser/.ssh/authorized_keys:ro" \
  -v "$K/host_ed25519:/etc/ssh/ssh_host_ed25519_key:ro" \
  -v "$K/user_ca.pub:/etc/ssh/user_ca.pub:ro" \
  -v "$SHARED:$SHARED" \
  -v "$SRC:/opt/interlink-plugins:ro" \
  "$IMAGE" >/dev/null
for _ in $(seq 1 150); do
  st=$(ssh -F "$K/config" -o ConnectTimeout=2 loginnode sinfo -h -N -o %T 2>/dev/null || true)
  if [ "$st" = idle ]; then
    echo "image $IMAGE"
    echo "ssh -F $K/config loginnode"
    exit 0
  fi
  sleep 0.1
done
echo "login node not ready: podman logs $NAME; podman exec $NAME cat /var/log/slurm/slurmd.log" >&2
exit 1
