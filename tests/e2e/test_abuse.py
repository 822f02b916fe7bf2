"""Resource abuse against the live plugin: bounded memory, a clear 4xx or truncation, the plugin stays up."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _with_nesting(value: Any, depth: int) -> bytes:
    """`value` as JSON with every "NEST" string replaced by `depth` alternating arrays and objects (written as
    text: the test's own json encoder would hit its recursion limit first)."""
    opening = "".join("[" if i % 2 == 0 else '{"k":' for i in range(depth))
    closing = "".join("]" if i % 2 == 0 else "}" for i in reversed(range(depth)))
    return json.dumps(value).replace('"NEST"', f'{opening}"leaf"{closing}').encode()


def test_deep_but_parseable_nesting_in_a_pod_is_answered_not_a_500(plugin_factory: Callable[..., PluginProcess]) -> None:
    """Nesting the JSON parser still accepts (up to just past its recursion limit), in fields the plugin keeps
    but does not read: whatever walks the pod later (copies, the state store, pod.json) must not raise."""
    plugin = plugin_factory()
    for depth in (200, 600, 900, 980, 1100):
        body = pod_body(f"deep{depth}", [container("c", ["true"], securityContext={"seLinuxOptions": "NEST"})])
        body["pod"]["status"]["deep"] = "NEST"
        body["jobConfig"] = "NEST"
        answer = plugin.client.post("/create", content=_with_nesting(body, depth))
        assert answer.status_code in (200, 400, 422), (depth, answer.text)
        status = plugin.client.request("GET", "/status", content=_with_nesting([{**body["pod"], "spec": "NEST"}], depth))
        assert status.status_code in (200, 400, 422), (depth, status.text)
        deleted = plugin.client.post("/delete", content=_with_nesting(body["pod"], depth))
        assert deleted.status_code in (200, 400, 422), (depth, deleted.text)
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    for path in ("/create", "/delete", "/getLogs"):
        assert plugin.client.post(path, content=deep_object).status_code == 400
    assert plugin.ping()["status"] == "ok"


@pytest.mark.parametrize("quantity", ["1e999999999", "9" * 5000, "1e-999999999", "16Ei"])
def test_an_absurd_quantity_is_a_quick_422_and_the_plugin_stays_responsive(
    plugin_factory: Callable[..., PluginProcess], quantity: str
) -> None:
    """Regression: "1e999999999" made the quantity parser spin in Fraction.__pow__ on the event loop."""
    plugin = plugin_factory()
    body = pod_body("q", [container("c", ["true"], resources={"limits": {"cpu": quantity}})])
    answer = plugin.client.post("/create", json=body, timeout=10)
    if quantity.startswith("1e-"):  # a non-zero amount below 1n is 1n, as in Kubernetes
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "spec.containers[0].resources.limits[cpu]"
    assert plugin.client.get("/healthz", timeout=5).status_code == 200


def test_log_options_beyond_go_ints_are_a_422_and_huge_valid_ones_serve_the_log(
    plugin_factory: Callable[..., PluginProcess],
) -> None:
    """Regression: Tail 10**38 overflowed deque(maxlen) and SinceSeconds past year 1 overflowed datetime: 500s."""
    plugin = plugin_factory()
    body = pod_body("logs", [container("c", ["sh", "-c", "echo one; echo two"])])
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=120)) == {"c": 0}
    for option in ("Tail", "Bytes", "LimitBytes", "SinceSeconds"):
        answer = plugin.logs(body, "c", **{option: 10**38})
        assert answer.status_code == 422, (option, answer.text)
        assert answer.json()["field"] == f"Opts.{option}"
        assert plugin.logs(body, "c", **{option: 2**63 - 1}).text == "one\ntwo\n", option
    assert plugin.logs(body, "c", SinceSeconds=10**12).text == "one\ntwo\n"
    assert plugin.logs(body, "c", SinceTime="0001-01-02T00:00:00Z").text == "one\ntwo\n"
    assert plugin.logs(body, "c", SinceTime="9999-12-31T23:59:59Z").text == ""
    assert plugin.logs(body, "c", Follow=True, Tail=2**63 - 1).text == "one\ntwo\n"
