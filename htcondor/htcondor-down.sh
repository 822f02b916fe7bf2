#!/usr/bin/env bash
# Stop and remove the personal HTCondor pool container. Usage: htcondor/htcondor-down.sh
NAME=${HTCONDOR_NAME:-il-htcondor}
podman rm -f -t 10 "$NAME" >/dev/null 2>&1 || true
