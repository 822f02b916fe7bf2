"""The image's HEALTHCHECK: GET /healthz where the plugin serves, as its config says (TCP or unix socket).

The config is the image's /etc/interlink/plugin.yaml (its CMD), else the one `serve` reads without
--config ($SLURMCONFIGPATH, else /etc/interlink/SlurmConfig.yaml).

Exit 0 when it answers 200 within the timeout, 1 otherwise (one line on stderr saying why)."""

from __future__ import annotations

import http.client
import socket
import sys
from pathlib import Path

from interlink_plugins.backends import default_config_path, load_config
from interlink_plugins.core.errors import ConfigError

TIMEOUT_SECONDS = 4.0
IMAGE_CONFIG = Path("/etc/interlink/plugin.yaml")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_SECONDS)
        self.sock.connect(self._path)


def main() -> int:
    path = IMAGE_CONFIG if IMAGE_CONFIG.exists() else default_config_path()
    try:
        config, _warnings = load_config(path)
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if config.socket:
        connection: http.client.HTTPConnection = _UnixConnection(config.socket)
    else:
        wildcard = config.bind_address in ("0.0.0.0", "", "::")  # noqa: S104 (compared, not bound)
        host = "127.0.0.1" if wildcard else config.bind_address  # a wildcard bind answers on loopback
        connection = http.client.HTTPConnection(host, config.sidecar_port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"unhealthy: /healthz answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
