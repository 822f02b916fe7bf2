#!/usr/bin/env bash
# Install and configure REAL podman for this machine (runc, explicit ulimits, no registry) and
# build the local test images. Idempotent. Usage: podman/podman-setup.sh
# Writes /etc/containers/containers.conf so every podman (plugin, SLURM jobs) shares the settings.
set -euo pipefail
# catatonit: the infra process of podman pods (Podman backend); uidmap: rootless podman
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v bwrap >/dev/null \
   || ! command -v catatonit >/dev/null || ! command -v newuidmap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc busybox-static bubblewrap catatonit uidmap >/dev/null
fi
mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=8192:8192", "nproc=8192:8192"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
if ! podman image exists localhost/busybox:latest; then
  R=$(mktemp -d)
  mkdir -p "$R"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$R/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"; echo 'root:x:0:' > "$R/etc/group"
  echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$R/etc/passwd"; echo 'nogroup:x:65534:' >> "$R/etc/group"
  chmod 1777 "$R/tmp"
  tar -C "$R" -c . | podman import -q \
     --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
     --change 'CMD ["/bin/sh"]' - localhost/busybox:latest >/dev/null
  rm -rf "$R"
fi
# an image with an ENTRYPOINT and CMD, for default-entrypoint semantics
if ! podman image exists localhost/busybox-entry:latest; then
  podman tag localhost/busybox:latest localhost/busybox-entry-base:latest
  B=$(mktemp -d)
  printf 'FROM localhost/busybox-entry-base:latest\nENTRYPOINT ["/bin/echo", "entry"]\nCMD ["default-cmd"]\n' > "$B/Containerfile"
  podman build -q --pull=never -t localhost/busybox-entry:latest "$B" >/dev/null
  rm -rf "$B"
fi
echo "podman ready: localhost/busybox:latest localhost/busybox-entry:latest"
