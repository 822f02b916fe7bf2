#!/usr/bin/env bash
# A local OCI registry for the image-pull tests: Debian's docker-registry with htpasswd auth and TLS
# from a CA made here, trusted by podman (/etc/containers/certs.d) and by Go clients such as
# apptainer (the system CA store). Idempotent: a running registry of the same state dir is kept.
# Usage: tests/registry/registry-up.sh [STATE_DIR]   (default /tmp/il-registry)
# Env:   REGISTRY_PORT  (5443)
# Prints shell assignments: REGISTRY=localhost:PORT REGISTRY_USER=... REGISTRY_PASSWORD_FILE=...
# REGISTRY_CA=... REGISTRY_AUTH_FILE=...  The password lives only in REGISTRY_PASSWORD_FILE and in
# REGISTRY_AUTH_FILE (podman's auth file of the pushes), both 0600; it never goes on a command line.
set -euo pipefail
S=${1:-/tmp/il-registry}
PORT=${REGISTRY_PORT:-5443}
HOSTPORT=localhost:$PORT
if ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null || ! command -v openssl >/dev/null \
   || ! command -v update-ca-certificates >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry apache2-utils \
    openssl ca-certificates >/dev/null
fi
mkdir -p "$S"
chmod 0700 "$S"
exec 9>"$S/.lock"
flock 9
if [ ! -s "$S/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=interlink-plugins test registry CA" \
    -keyout "$S/ca.key" -out "$S/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$S/server.key" -out "$S/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$S/ext.cnf"
  openssl x509 -req -in "$S/server.csr" -CA "$S/ca.crt" -CAkey "$S/ca.key" -CAcreateserial -days 3650 \
    -extfile "$S/ext.cnf" -out "$S/server.crt" 2>/dev/null
fi
if [ ! -s "$S/password" ]; then
  (umask 077; openssl rand -hex 16 > "$S/password")
  htpasswd -iBc "$S/htpasswd" iltest <"$S/password" 2>/dev/null  # -i: the password from stdin, not argv
fi
cat > "$S/config.yml" <<CONF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $S/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  tls:
    certificate: $S/server.crt
    key: $S/server.key
auth:
  htpasswd:
    realm: il-test-registry
    path: $S/htpasswd
CONF
# trust: podman reads certs.d, Go programs (apptainer) the system store
install -D -m 0644 "$S/ca.crt" "/etc/containers/certs.d/$HOSTPORT/ca.crt"
if ! cmp -s "$S/ca.crt" /usr/local/share/ca-certificates/il-test-registry.crt; then
  install -D -m 0644 "$S/ca.crt" /usr/local/share/ca-certificates/il-test-registry.crt
  update-ca-certificates >/dev/null 2>&1
fi
if ! { [ -s "$S/pid" ] && kill -0 "$(cat "$S/pid")" 2>/dev/null; }; then
  setsid docker-registry serve "$S/config.yml" >"$S/registry.log" 2>&1 </dev/null 9>&- &
  echo $! > "$S/pid"
fi
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$S/ca.crt" "https://$HOSTPORT/v2/" || true)
  if [ "$code" = 401 ]; then
    if [ ! -s "$S/auth.json" ]; then
      (umask 077; podman login --authfile "$S/auth.json" -u iltest --password-stdin "$HOSTPORT" <"$S/password" >/dev/null)
    fi
    echo "REGISTRY=$HOSTPORT REGISTRY_USER=iltest REGISTRY_PASSWORD_FILE=$S/password REGISTRY_CA=$S/ca.crt" \
         "REGISTRY_AUTH_FILE=$S/auth.json"
    exit 0
  fi
  sleep 0.2
done
echo "registry did not answer on https://$HOSTPORT/v2/: $(tail -5 "$S/registry.log")" >&2
exit 1
