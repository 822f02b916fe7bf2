#!/bin/bash
# interlink-plugins: podman secrets for the env values podman's --env-file cannot carry (installed in
# every job dir, run by the pod runner for runtime podman).
#
#   bash podman-secrets.sh create BINARY [NAME FILE]... -- COMMAND [ARG]...
#       (re)creates each secret NAME from the private file FILE (bytes as they are), runs COMMAND (the
#       `podman run`) and removes the secrets when it ends or when a stop signal arrives (forwarded to
#       COMMAND): a job SLURM kills after the grace period leaves none behind. podman needs them for
#       `podman exec` while the container runs, so they live exactly that long. Exits with COMMAND's status
#   bash podman-secrets.sh remove BINARY [NAME]... -- COMMAND [ARG]...
#       runs COMMAND (the container's cleanup after a stop), then removes the secrets
#
# Values never sit in an argv: podman reads them from the files, and the container gets them through
# `--secret=NAME,type=env,target=VAR` when it starts.
set -uo pipefail

drop_secrets() {
  local name
  for name in "${names[@]}"; do
    "$bin" secret rm -- "$name" >/dev/null 2>&1
  done
}

mode=$1 bin=$2
shift 2
pairs=()
while (($#)) && [[ $1 != -- ]]; do
  pairs+=("$1")
  shift
done
shift  # the --

if [[ $mode == create ]]; then
  names=()
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    names+=("${pairs[i]}")
  done
  stopping=0 child=''
  trap 'stopping=1; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null; drop_secrets' TERM INT HUP
  for ((i = 0; i < ${#pairs[@]} && !stopping; i += 2)); do
    "$bin" secret rm -- "${pairs[i]}" >/dev/null 2>&1
    if ! "$bin" secret create -- "${pairs[i]}" "${pairs[i + 1]}" >/dev/null; then
      echo "podman-secrets.sh: cannot create the podman secret ${pairs[i]@Q}" >&2
      drop_secrets
      exit 125
    fi
  done
  if ((stopping)); then
    drop_secrets
    exit 143
  fi
  "$@" &
  child=$!
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
else
  names=("${pairs[@]}")
  "$@"
  rc=$?
fi
drop_secrets
exit "$rc"
