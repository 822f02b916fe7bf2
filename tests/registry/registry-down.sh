#!/usr/bin/env bash
# Stop the test registry started by registry-up.sh (its data and CA stay for the next start).
# Usage: tests/registry/registry-down.sh [STATE_DIR]
set -euo pipefail
S=${1:-/tmp/il-registry}
if [ -s "$S/pid" ]; then
  kill "$(cat "$S/pid")" 2>/dev/null || true
  rm -f "$S/pid"
fi
