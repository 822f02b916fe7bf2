#!/bin/bash
# Run the plugin ON the login node (topology: interLink reaches its unix socket through an SSH
# tunnel). The source tree is bind-mounted at /opt/interlink-plugins by loginnode-up.sh.
# Usage: il-plugin-run CONFIG LOGFILE PIDFILE
set -euo pipefail
echo $$ > "$3"
export PYTHONPATH=/opt/interlink-plugins
exec python3 -m interlink_plugins.cli serve --config "$1" >>"$2" 2>&1
