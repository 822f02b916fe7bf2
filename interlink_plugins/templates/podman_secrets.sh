#!/bin/bash
# interlink-plugins: podman secrets for the env values podman's --env-file cannot carry (installed in
# every job dir, run by the pod runner for runtime podman).
#
#   bash podman-secrets.sh create BINARY [NAME FILE]... -- COMMAND [ARG]...
#       (re)creates each secret NAME from the private file FILE (bytes as they are), then execs COMMAND
#   bash podman-secrets.sh remove BINARY [NAME]... -- COMMAND [ARG]...
#       runs COMMAND (the container's cleanup), then removes the secrets
#
# Values never sit in an argv: podman reads them from the files, and the container gets them through
# `--secret=NAME,type=env,target=VAR` when it starts.
set -uo pipefail
mode=$1 bin=$2
shift 2
pairs=()
while (($#)) && [[ $1 != -- ]]; do
  pairs+=("$1")
  shift
done
shift  # the --

if [[ $mode == create ]]; then
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    "$bin" secret rm -- "${pairs[i]}" >/dev/null 2>&1
    if ! "$bin" secret create -- "${pairs[i]}" "${pairs[i + 1]}" >/dev/null; then
      echo "podman-secrets.sh: cannot create the podman secret ${pairs[i]@Q}" >&2
      exit 125
    fi
  done
  exec "$@"
fi
"$@"
rc=$?
for name in "${pairs[@]}"; do
  "$bin" secret rm -- "$name" >/dev/null 2>&1
done
exit "$rc"
