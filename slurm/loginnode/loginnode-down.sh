#!/usr/bin/env bash
# Stop and remove the login-node container (keys and the shared dir are kept for the next start).
NAME=${LOGINNODE_NAME:-il-loginnode}
podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
