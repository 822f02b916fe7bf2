"""Resource abuse against the live plugin: bounded memory, a clear 4xx or truncation, the plugin stays up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e


def rss_mib(plugin: PluginProcess) -> float:
    assert plugin.proc is not None
    for line in Path(f"/proc/{plugin.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_hostile_bodies_get_a_4xx_and_the_plugin_stays_up(plugin_factory: Callable[..., PluginProcess]) -> None:
    plugin = plugin_factory()
    before = rss_mib(plugin)
    huge = b'{"pod": "' + b"x" * (20 * 2**20) + b'"}'
    assert plugin.client.post("/create", content=huge).status_code == 413
    deep = b"[" * 200_000 + b"]" * 200_000
    assert plugin.client.post("/create", content=deep).status_code == 400
    assert plugin.client.request("GET", "/status", content=deep).status_code == 400
    assert plugin.client.post("/create", content=b"\xff\xfe garbage").status_code == 400
    assert plugin.client.request("GET", "/getLogs", json={"PodUID": "x"}).status_code == 422
    assert plugin.client.request("GET", "/status", json={"not": "a pod"}).status_code == 422
    many_env = pod_body("env", [container("c", ["sh", "-c", 'echo "$E4999"'],
                                          env=[{"name": f"E{i}", "value": "v" * 50 + str(i)} for i in range(5000)])])
    plugin.create(many_env)
    many_containers = pod_body("many", [container(f"c{i}", ["true"]) for i in range(300)])
    plugin.create(many_containers)
    assert exit_codes(plugin.wait_done(many_env, timeout=120)) == {"c": 0}
    assert plugin.logs(many_env, "c").text == "v" * 50 + "4999\n"
    status = plugin.wait_done(many_containers, timeout=300)
    assert len(status["containers"]) == 300 and set(exit_codes(status).values()) == {0}
    assert plugin.ping()["status"] == "ok"
    assert rss_mib(plugin) - before < 200, "memory must stay bounded"


def test_a_chatty_container_log_is_served_in_bounded_memory(plugin_factory: Callable[..., PluginProcess]) -> None:
    plugin = plugin_factory()
    # ~10 MB of log lines (60 MB and the log cap: test_log_volume.py; 1 GB: bench/bench_logs.py)
    body = pod_body("chatty", [container("c", ["sh", "-c", "yes 'a fairly long log line to fill the disk quickly' | head -c 10000000"])])
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=600)) == {"c": 0}
    before = rss_mib(plugin)
    tail = plugin.logs(body, "c", Tail=3).text
    assert tail.splitlines() == ["a fairly long log line to fill the disk quickly"] * 2 + [tail.splitlines()[-1]]
    assert len(plugin.logs(body, "c", Bytes=1000).content) == 1000
    with plugin.client.stream("GET", "/getLogs", json={
        "Namespace": "default", "PodUID": body["pod"]["metadata"]["uid"], "PodName": "chatty", "ContainerName": "c",
        "Opts": {"Tail": 0, "Bytes": 0, "SinceTime": "0001-01-01T00:00:00Z"}}) as stream:
        size = sum(len(chunk) for chunk in stream.iter_bytes())
    assert size == 10_000_000 + 1  # the runner closes the last partial line with a newline
    assert rss_mib(plugin) - before < 100
