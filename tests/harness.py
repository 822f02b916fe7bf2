"""Drive a real plugin process over HTTP (the way interLink does) in tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.podfactory import log_request, status_pod

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PluginProcess:
    """`interlink-plugin serve` in a subprocess, with its own config, data root and state dir."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = {
            "SidecarPort": self.port,
            "DataRootFolder": str(workdir / "jobs"),
            "StateDir": str(workdir / "state"),
            "PollInterval": 1,
            "CommandTimeout": 10,
            "RestartBackoffInitial": 1,
            "RestartBackoffMax": 4,
            # the suite runs as root and most pods set no uid: they run as root, as before (tests/security
            # passes AllowRootJobs: false where the uid rules are under attack)
            "AllowRootJobs": True,
            **config,
        }
        self.config_path = workdir / "plugin.yaml"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    @property
    def log_path(self) -> Path:
        return self.workdir / "plugin.log"

    def start(self, timeout: float = 20) -> PluginProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "interlink_plugins.cli", "serve", "--config", str(self.config_path)],
            stdout=log, stderr=log, env=self.env, cwd=str(ROOT), start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if self.client.get("/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"plugin did not answer: {self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self.client.close()

    # --- interLink's calls ---------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/create", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def status(self, body: dict[str, Any]) -> dict[str, Any] | None:
        response = self.client.request("GET", "/status", json=[status_pod(body)])
        assert response.status_code == 200, response.text
        items = response.json()
        return items[0] if items else None

    def ping(self) -> dict[str, Any]:
        response = self.client.request("GET", "/status", json=[])
        assert response.status_code == 200, response.text
        return dict(response.json())

    def delete(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.post("/delete", json=status_pod(body))

    def logs(self, body: dict[str, Any], container: str, **opts: Any) -> httpx.Response:
        return self.client.request("GET", "/getLogs", json=log_request(body, container, **opts))

    def wait_status(
        self, body: dict[str, Any], predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.status(body)
            if last is not None and predicate(last):
                return last
            time.sleep(0.3)
        raise AssertionError(f"status never matched within {timeout}s; last: {last}")

    def wait_done(self, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        return self.wait_status(body, all_terminated, timeout)


def states(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["state"] for c in status["containers"] + status["initContainers"]}


def all_terminated(status: dict[str, Any]) -> bool:
    entries = status["containers"] + status["initContainers"]
    return bool(entries) and all("terminated" in c["state"] for c in entries)


def exit_codes(status: dict[str, Any]) -> dict[str, int]:
    return {name: s["terminated"]["exitCode"] for name, s in states(status).items() if "terminated" in s}
