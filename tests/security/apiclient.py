"""A stdlib-only HTTP client that the security tests run as another local user (setpriv).

    python3 apiclient.py TARGET < requests.json > answers.json

TARGET is `unix:/path/to.sock` or `tcp:HOST:PORT` (`tcp:[::1]:PORT` for IPv6). requests.json is a list of
[method, path, body-or-null]; each answer is {"status": N, "body": "..."} or {"refused": "why"} when the
connection could not be made or was cut before an answer came.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from typing import Any


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def connection(target: str) -> http.client.HTTPConnection:
    kind, _, where = target.partition(":")
    if kind == "unix":
        return UnixConnection(where, timeout=15)
    host, _, port = where.rpartition(":")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=15)


def call(target: str, method: str, path: str, body: Any) -> dict[str, Any]:
    conn = connection(target)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return {"status": response.status, "body": response.read(4096).decode(errors="replace")}
    except (OSError, http.client.HTTPException) as exc:
        return {"refused": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def main() -> None:
    requests = json.load(sys.stdin)
    json.dump([call(sys.argv[1], method, path, body) for method, path, body in requests], sys.stdout)


if __name__ == "__main__":
    main()
