"""A REAL Prometheus (Debian's `prometheus`) scrapes a socket-served plugin on its MetricsAddress through a pod
lifecycle on the real SLURM cluster; every alerting rule of deploy/prometheus/ and every query of the Grafana
dashboard (its instance variable set to this plugin) returns data through Prometheus' HTTP API.

The lifecycle makes each rule's condition true once: a pod sbatch refuses (SubmitFailed), a big log read
again and again (log volume), slurmctld stopped until statuses are 10 poll intervals old (backend down, poll
lag), and the plugin itself stopped for a few scrapes (plugin down).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.kits import SlurmKit
from tests.harness import ROOT, PluginProcess, free_port, states
from tests.podfactory import container, log_request, pod_body

pytestmark = pytest.mark.e2e

RULES = ROOT / "deploy" / "prometheus" / "interlink-plugin-rules.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus-scrape.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "interlink-plugins-dashboard.json"
LOG_BYTES = 50_000_000  # read 8 times: > 1 MiB/s over the rule's 5 minute window
LOG_READS = 8


def tool(name: str) -> str:
    path = Path("/usr/bin") / name
    assert path.exists(), f"{name} is missing: install Debian's prometheus package (tests/run-all.sh does)"
    return str(path)


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        # the shipped scrape config, pointed at this plugin, scraping and evaluating every second
        config = yaml.safe_load(SCRAPE.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
        config["rule_files"] = [str(RULES)]
        (job,) = config["scrape_configs"]
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": [target]}]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        checked = subprocess.run([tool("promtool"), "check", "config", str(self.config_path)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.port = free_port()
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=self.log, start_new_session=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus never became ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        answer = self.client.get("/api/v1/query_range",
                                 params={"query": expr, "start": start, "end": end, "step": "1s"}).json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr} never returned data within {timeout}s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.client.close()
        self.log.close()


@pytest.fixture
def socket_plugin(tmp_path: Path, slurm_cluster: dict[str, str]) -> Iterator[PluginProcess]:
    """The plugin on a unix socket (so only MetricsAddress can be scraped), JSON logs at DEBUG."""
    sock = tmp_path / "plugin.sock"
    plugin = PluginProcess(tmp_path / "plugin", {
        "Backend": "slurm", "ContainerRuntime": "none", "InstanceId": f"prom-{tmp_path.name[-12:]}",
        "Socket": f"unix://{sock}", "MetricsAddress": f"127.0.0.1:{free_port()}", "LogLevel": "DEBUG",
    }, env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    plugin.workdir.mkdir()
    plugin.client.close()
    plugin.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://plugin", timeout=60)
    plugin.start()
    yield plugin
    plugin.stop()


@pytest.fixture
def prometheus(tmp_path: Path, socket_plugin: PluginProcess) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, socket_plugin.config["MetricsAddress"])
    yield server
    server.stop()


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(value)) for series in result for _t, value in series["values"])


def test_rules_and_dashboard_queries_return_data_through_a_real_prometheus(
    socket_plugin: PluginProcess, prometheus: Prometheus, slurm_cluster: dict[str, str]
) -> None:
    plugin = socket_plugin
    instance = plugin.config["MetricsAddress"]
    checked = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    started = time.time()
    # the counters exist at 0 before anything happens (increase() then sees the first failure)
    prometheus.wait_for(f'interlink_plugin_pod_create_failures_total{{instance="{instance}",reason="SubmitFailed"}} == 0')

    # a pod no node can hold (the node has 2 GPUs): sbatch refuses it, it fails with SubmitFailed; a body that is
    # no pod at all: 422
    too_big = pod_body("too-big", [container("c", ["true"], resources={"limits": {"nvidia.com/gpu": "9"}})])
    plugin.create(too_big)
    refused = plugin.wait_done(too_big, timeout=60)
    assert states(refused)["c"]["terminated"]["reason"] == "SubmitFailed", refused
    assert plugin.client.post("/create", json={"pod": {"metadata": {}}}).status_code == 422

    # a pod with a big log, read again and again as `kubectl logs` does
    script = f"head -c {LOG_BYTES} /dev/zero | tr '\\0' x | fold -w 999"
    chatty = pod_body("chatty", [container("c", ["sh", "-c", script])])
    plugin.create(chatty)
    assert states(plugin.wait_done(chatty, timeout=120))["c"]["terminated"]["exitCode"] == 0
    for _ in range(LOG_READS):
        with plugin.client.stream("GET", "/getLogs", json=log_request(chatty, "c"), timeout=120) as answer:
            assert answer.status_code == 200
            assert sum(len(chunk) for chunk in answer.iter_bytes()) == LOG_BYTES + -(-LOG_BYTES // 999)  # a newline per line of 999
    for body in (too_big, chatty):
        assert plugin.delete(body).status_code == 200

    # slurmctld stopped until statuses are more than 10 poll intervals old, then back
    kit = SlurmKit(lambda **_: plugin, slurm_cluster["state"])
    kit.stop_backend()
    try:
        prometheus.wait_for(f'interlink_plugin_backend_up{{instance="{instance}"}} == 0', timeout=60)
        prometheus.wait_for(f'time() - interlink_plugin_poll_last_success_timestamp_seconds{{instance="{instance}"}}'
                            " > 10 * interlink_plugin_poll_interval_seconds", timeout=60)
    finally:
        kit.start_backend()
    prometheus.wait_for(f'interlink_plugin_backend_up{{instance="{instance}"}} == 1', timeout=60)

    # the plugin stopped for a few scrapes (its jobs never depend on it), then started again on its state
    plugin.kill(signal.SIGTERM)
    prometheus.wait_for(f'up{{instance="{instance}"}} == 0', timeout=30)
    plugin.start()
    prometheus.wait_for(f'up{{instance="{instance}"}} == 1', timeout=30)
    assert plugin.status(chatty) is None or plugin.status(chatty)["containers"]
    time.sleep(2)
    end = time.time()

    # every alerting rule's expression was true at some point of this lifecycle
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {"InterlinkPluginDown", "InterlinkBackendDown",
                                                 "InterlinkSubmitFailures", "InterlinkPollLagging",
                                                 "InterlinkLogVolumeHigh"}
    for rule in rules:
        assert prometheus.query_range(rule["expr"], started, end), f"rule {rule['alert']} never matched: {rule['expr']}"
    # every dashboard query, with the instance variable set to this plugin, has values
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "instance"]
    assert variable["query"]["query"] == "label_values(interlink_plugin_build_info, instance)"
    values = prometheus.client.get("/api/v1/label/instance/values",
                                   params={"match[]": "interlink_plugin_build_info"}).json()["data"]
    assert values == [instance]
    targets = [target for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(targets) >= 20
    for target in targets:
        expr = target["expr"]
        assert '{instance=~"$instance"' in expr, f"panel query without the instance variable: {expr}"
        result = prometheus.query_range(expr.replace("$instance", instance), started, end)
        assert finite(result), f"dashboard query has no data: {expr}"
    build = prometheus.query(f'interlink_plugin_build_info{{instance="{instance}"}}')
    assert build[0]["metric"]["backend"] == "slurm" and build[0]["metric"]["version"]

    # uvicorn's own lines (server messages, access log at DEBUG) are JSON like the plugin's
    lines = [line for line in plugin.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert any(e["logger"] == "uvicorn.error" and "Application startup complete" in e["message"] for e in entries)
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert any(e["method"] == "POST" and e["path"] == "/create" and e["status"] == 422 for e in access), access[-3:]


def test_the_metrics_listener_serves_metrics_only(socket_plugin: PluginProcess) -> None:
    metrics = httpx.Client(base_url=f"http://{socket_plugin.config['MetricsAddress']}", timeout=10)
    answer = metrics.get("/metrics")
    assert answer.status_code == 200 and "interlink_plugin_build_info{" in answer.text
    assert "process_resident_memory_bytes" in answer.text and "python_gc_collections_total" in answer.text
    for method, path in (("GET", "/status"), ("GET", "/healthz"), ("POST", "/create"), ("GET", "/openapi.json"),
                         ("GET", "/metrics/../status")):
        assert metrics.request(method, path).status_code == 404, path
    assert metrics.post("/metrics").status_code == 405
    metrics.close()

