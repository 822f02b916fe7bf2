#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (root): installs what it needs, starts the REAL
# local backends with the project's own scripts, runs lint, type checks, unit, contract and e2e tests.
# Usage: bash tests/run-all.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need=()
for cmd in slurmctld:slurmctld slurmd:slurmd squeue:slurm-client munge:munge podman:podman runc:runc \
           busybox:busybox-static bwrap:bubblewrap ssh-keygen:openssh-client debootstrap:debootstrap \
           promtool:prometheus shellcheck:shellcheck; do
  command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  # RUNLEVEL=1: no package starts its daemon at install (prometheus would take :9090); the tests start their own
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -vE 'WARNING|BuildBackendWarning|^\s*!!|^\s*\*+|^\s*$|Please|By 20|See https|corresp|with strategy|name as your|folders in' || true

echo "== real backends"
bash podman/podman-setup.sh
export IL_SLURM_STATE=${IL_SLURM_STATE:-/tmp/il-slurm}
eval "$(bash slurm/slurm-up.sh "$IL_SLURM_STATE")"
trap 'bash slurm/slurm-down.sh "$IL_SLURM_STATE"' EXIT

echo "== ruff"
.venv/bin/ruff check interlink_plugins tests bench deploy
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
# e2e tests drive real daemons on a 2-core machine: a test that fails is run once more, and the
# rerun is reported in the summary ("R"), so flakiness stays visible instead of blocking every landing
.venv/bin/python -m pytest -q -p no:cacheprovider --reruns 1 --reruns-delay 2 -rR --durations=25 "$@"
