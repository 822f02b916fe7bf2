"""Bounded resources at the API: a slow client, a flood of connections or of Follow streams cannot
starve interLink's calls. Real plugin process, real SLURM, raw sockets for the slow clients."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import PluginProcess
from tests.podfactory import container, log_request, pod_body

pytestmark = pytest.mark.e2e


@pytest.fixture
def start(tmp_path: Path, slurm_cluster: dict[str, str]) -> Iterator[Any]:
    started: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        work = tmp_path / f"plugin{len(started)}"
        work.mkdir()
        process = PluginProcess(work, {"Backend": "slurm", "ContainerRuntime": "none",
                                       "InstanceId": f"sl{len(started)}-{tmp_path.name[-8:]}", **config},
                                env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


def slow_client(port: int, opening: bytes, drip: bytes, result: dict[str, Any], give_up: float = 20) -> None:
    """Send `opening`, then one `drip` every 0.5 s; note when (if ever) the server ends the connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(opening)
        sock.settimeout(0.5)
        answer = b""
        while time.monotonic() - started < give_up:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                try:
                    sock.sendall(drip)
                except OSError:
                    break
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        else:
            result["closed_after"] = None
            return
    result["closed_after"] = time.monotonic() - started
    result["answer"] = answer


def test_a_slowloris_client_is_cut_off_after_the_read_deadline_while_others_are_served(start: Any) -> None:
    """Attack: clients that open connections and send their request a byte at a time (or nothing) hold
    connections and tasks forever (uvicorn has no header timeout). Defence: RequestReadTimeout bounds the
    time from a request's first byte (or the connection's start) to its last; /status is served meanwhile."""
    plugin = start(RequestReadTimeout=2)
    attacks = {
        "silent": (b"", b""),
        "headers": (b"GET /status HTTP/1.1\r\nHost: x\r\n", b"X"),
        "body": (b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
                 b" "),
    }
    results: dict[str, dict[str, Any]] = {name: {} for name in attacks}
    threads = [threading.Thread(target=slow_client, args=(plugin.port, opening, drip, results[name]))
               for name, (opening, drip) in attacks.items()]
    for thread in threads:
        thread.start()
    served = []
    while any(thread.is_alive() for thread in threads):
        before = time.monotonic()
        assert plugin.ping()["status"] == "ok"
        served.append(time.monotonic() - before)
        time.sleep(0.2)
    for name, result in results.items():
        assert result["closed_after"] is not None, f"{name}: never cut off"
        assert 1.5 <= result["closed_after"] <= 10, (name, result)
    assert results["headers"]["answer"].startswith(b"HTTP/1.1 408"), results["headers"]
    assert len(served) >= 5 and max(served) < 2, served
    log = plugin.log_path.read_text()
    assert re.search(r"uid 0\b.*not received within 2s", log) and "Traceback" not in log, log[-3000:]


def held_connection(port: int) -> tuple[socket.socket, bytes]:
    """A keep-alive connection that made one request and stays open, and the answer it got."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock, sock.recv(4096)


def test_connections_past_the_limit_are_answered_503_and_status_is_never_starved(start: Any) -> None:
    """Attack: a flood of connections (or requests in flight) exhausts file descriptors and memory.
    Defence: past MaxConnections (uvicorn's limit_concurrency) new requests get 503 at once, except
    /status (ping and pod states), which interLink needs to keep the node Ready."""
    plugin = start(MaxConnections=4)
    held: list[socket.socket] = []
    while True:  # until the limit answers (the harness's own client holds a connection too)
        sock, answer = held_connection(plugin.port)
        held.append(sock)
        if answer.startswith(b"HTTP/1.1 503"):
            break
        assert answer.startswith(b"HTTP/1.1 200") and len(held) < 4, answer
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{plugin.port}", timeout=10) as fresh:
            assert fresh.get("/healthz").status_code == 503
            assert fresh.get("/metrics").status_code == 503
            for _ in range(5):
                ping = fresh.request("GET", "/status", json=[])
                assert ping.status_code == 200 and ping.json()["status"] == "ok"
            assert fresh.request("GET", "/status", json=[{"metadata": {"uid": "x"}}]).status_code == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while plugin.client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the limit never released the closed connections"
        time.sleep(0.2)


def test_the_follow_stream_past_the_cap_gets_429(start: Any) -> None:
    """Attack: many Follow streams, each held open forever, pin a connection, a task and a file each.
    Defence: at most MaxFollowStreams at once; the next one gets 429 naming the key; a closed stream
    frees its slot; /status is served throughout."""
    plugin = start(MaxFollowStreams=2)
    body = pod_body("follow", [container("c", ["sh", "-c", "for i in $(seq 600); do echo tick $i; sleep 0.5; done"])])
    plugin.create(body)
    plugin.wait_status(body, lambda s: "running" in s["containers"][0]["state"])
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{plugin.port}", timeout=30) for _ in range(3)]
    streams, readers = [], []  # a dropped reader closes its connection: both are kept
    try:
        for client in clients[:2]:
            stream = client.stream("GET", "/getLogs", json=log_request(body, "c", Follow=True))
            response = stream.__enter__()
            streams.append(stream)
            assert response.status_code == 200
            readers.append(response.iter_bytes())
            assert b"tick" in next(readers[-1])
        with clients[2].stream("GET", "/getLogs", json=log_request(body, "c", Follow=True)) as third:
            assert third.status_code == 429, third.status_code
            assert "MaxFollowStreams" in third.read().decode()
        assert plugin.ping()["status"] == "ok"
        streams.pop().__exit__(None, None, None)
        deadline = time.monotonic() + 10
        while True:
            with clients[2].stream("GET", "/getLogs", json=log_request(body, "c", Follow=True)) as again:
                if again.status_code == 200:
                    assert b"tick" in next(again.iter_bytes())
                    break
                assert again.status_code == 429
            assert time.monotonic() < deadline, "a closed Follow stream never gave its slot back"
            time.sleep(0.3)
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
        plugin.delete(body)


FLOOD = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_a_flood_of_refused_connections_holds_no_resources(start: Any) -> None:
    """Attack: a local user who may not call opens hundreds of connections and sends nothing, to hold the
    plugin's file descriptors (refused callers are not counted by the concurrency limit). Defence: a few
    refused connections wait briefly for their request to answer 403; past that they are dropped at once.
    interLink's /status is served throughout."""
    plugin = start()
    assert plugin.proc is not None
    fds = Path(f"/proc/{plugin.proc.pid}/fd")
    baseline = len(list(fds.iterdir()))
    flood = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
                              "-c", FLOOD, str(plugin.port), "400", "6"], stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None
        opened = int(flood.stdout.readline())
        assert opened >= 300, opened
        most, served = 0, []
        for _ in range(10):  # while the plugin accepts them and after
            most = max(most, len(list(fds.iterdir())) - baseline)
            before = time.monotonic()
            assert plugin.ping()["status"] == "ok"
            served.append(time.monotonic() - before)
            time.sleep(0.3)
        assert most <= 64 + 16, most  # the refused connections kept for their 403, and some slack
        assert max(served) < 2, served
    finally:
        flood.kill()
        flood.wait(timeout=30)
    assert re.search(r"refused API caller uid 65534\b", plugin.log_path.read_text())
