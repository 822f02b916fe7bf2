"""Tracing with the real OpenTelemetry SDK (in-memory exporter behind the real BatchSpanProcessor)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from interlink_plugins import tracing
from interlink_plugins.api.app import create_app
from interlink_plugins.backends import make_backend, parse_config, policy_from_config
from interlink_plugins.cli import main
from interlink_plugins.config import Config
from interlink_plugins.core.commands.local import CommandFailed, LocalRunner
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.core.records.state import StateStore
from interlink_plugins.core.service import PluginService
from interlink_plugins.exitcodes import ExitCode
from interlink_plugins.metrics import MeteredRunner, Metrics
from tests.podfactory import container, pod_body, status_pod

CANARY = "canary-7f3a9c-do-not-trace"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    assert tracing.setup(Config(), environ={}, exporter=memory)
    yield memory
    tracing.shutdown()


def finished(memory: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.shutdown()  # flushes the batch processor
    return list(memory.get_finished_spans())


def every_attribute_text(spans: list[ReadableSpan]) -> str:
    parts = [span.name for span in spans]
    for span in spans:
        parts += [f"{key}={value}" for key, value in (span.attributes or {}).items()]
        parts += [f"{key}={value}" for key, value in span.resource.attributes.items()]
    return "\n".join(parts)


def make_service(tmp_path: Path) -> PluginService:
    config = Config(data_root=tmp_path / "jobs", state_dir=tmp_path / "state", instance_id="trace-unit")
    config.state_dir.mkdir(parents=True)
    metrics = Metrics(config.backend)
    backend = make_backend(config, MeteredRunner(LocalRunner(), metrics), policy_from_config({}))
    return PluginService(config, backend, StateStore(config.state_db), metrics=metrics)


def request(app: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plugin") as client:
            return await client.request(method, path, json=body, headers=headers)

    return asyncio.run(go())


def test_off_by_default_everything_still_runs() -> None:
    assert not tracing.setup(Config(), environ={})
    assert not tracing.enabled()
    result = asyncio.run(MeteredRunner(LocalRunner(), Metrics("slurm")).run(["sh", "-c", "exit 4"], timeout=10))
    assert result.returncode == 4
    assert asyncio.run(tracing.traced("poll", asyncio.sleep(0, result="polled"))) == "polled"


def test_server_span_per_request_with_route_status_session_and_pods(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    service = make_service(tmp_path)
    app = create_app(service, manage_lifecycle=False)
    one = status_pod(pod_body("a", [container("c", ["true"], env=[{"name": "TOKEN", "value": CANARY}])]))
    two = status_pod(pod_body("b", [container("c", ["true"])]))
    session = {"InterLink-Http-Session": "sess-42"}
    assert request(app, "GET", "/status", [one, two], session).status_code == 200
    assert request(app, "POST", "/delete", one, session).status_code == 200
    assert request(app, "GET", "/healthz", None, {}).status_code == 200
    assert request(app, "GET", "/nowhere", None, {}).status_code == 404
    service.store.close()

    spans = finished(exporter)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"GET /status", "POST /delete", "GET unmatched"}  # /healthz is not traced
    status = by_name["GET /status"]
    assert status.kind == SpanKind.SERVER and status.parent is None
    assert status.attributes is not None
    assert dict(status.attributes) == {
        "http.request.method": "GET", "http.route": "/status", "http.response.status_code": 200,
        "interlink.http_session": "sess-42", "interlink.pod.count": 2,
    }
    delete = by_name["POST /delete"]
    assert delete.attributes is not None
    assert delete.attributes["interlink.pod.uid"] == one["metadata"]["uid"]
    assert delete.attributes["interlink.pod.count"] == 1
    assert by_name["GET unmatched"].attributes is not None
    assert by_name["GET unmatched"].attributes["http.response.status_code"] == 404
    assert status.resource.attributes["service.name"] == "interlink-plugin-slurm"
    assert CANARY not in every_attribute_text(spans)


def test_w3c_traceparent_from_the_client_is_the_parent(exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    service = make_service(tmp_path)
    app = create_app(service, manage_lifecycle=False)
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    assert request(app, "GET", "/status", [], headers).status_code == 200
    service.store.close()
    (span,) = finished(exporter)
    assert span.name == "GET /status"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote


def test_command_spans_carry_program_and_exit_code_only(exporter: InMemorySpanExporter) -> None:
    runner = MeteredRunner(LocalRunner(), Metrics("slurm"))  # the runner cmd_serve builds

    async def poll() -> None:
        await runner.run(["/bin/sh", "-c", f"exit 3 # {CANARY}"], timeout=10, env={"SECRET": CANARY})
        await runner.run(["true", CANARY], timeout=10)
        with pytest.raises(CommandFailed):
            await runner.run(["/nonexistent/no-such-program", CANARY], timeout=10)

    asyncio.run(tracing.traced("poll", poll()))
    spans = finished(exporter)
    by_name = {span.name: span for span in spans}
    poll_span = by_name["poll"]
    shell, true = by_name["sh"], by_name["true"]
    for span in (shell, true):
        assert span.kind == SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == poll_span.context.span_id
    assert shell.attributes is not None and dict(shell.attributes) == {
        "process.executable.name": "sh", "process.exit.code": 3,
    }
    assert shell.status.status_code == StatusCode.ERROR
    assert true.attributes is not None and true.attributes["process.exit.code"] == 0
    assert true.status.status_code == StatusCode.UNSET
    missing = by_name["no-such-program"]
    assert missing.attributes is not None and missing.attributes["error.type"] == "CommandFailed"
    assert missing.status.status_code == StatusCode.ERROR
    assert missing.status.description is None  # the exception's message is not recorded
    assert CANARY not in every_attribute_text(spans)


def test_sample_ratio_zero_keeps_only_traces_the_caller_sampled(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    tracing.setup(Config(tracing_sample_ratio=0.0), environ={}, exporter=memory)
    try:
        service = make_service(tmp_path)
        app = create_app(service, manage_lifecycle=False)
        request(app, "GET", "/status", [], {})
        request(app, "GET", "/status", [], {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        service.store.close()
        spans = finished(memory)
    finally:
        tracing.shutdown()
    assert [format(span.context.trace_id, "032x") for span in spans] == [TRACE_ID]


def test_endpoint_from_the_key_wins_over_otel_environment() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env-collector:4318/", "OTEL_SERVICE_NAME": "from-env"}
    keyed = Config(tracing_endpoint="http://collector:4318")
    assert tracing.traces_endpoint(keyed, env) == ("http://collector:4318/v1/traces", "TracingEndpoint")
    assert tracing.traces_endpoint(Config(tracing_endpoint="http://c:4318/otlp/v1/traces"), {})[0] == (
        "http://c:4318/otlp/v1/traces"
    )
    assert tracing.traces_endpoint(Config(), env) == (
        "http://env-collector:4318/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    traces_env = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}
    assert tracing.traces_endpoint(Config(), traces_env) == ("http://t:1/x", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert tracing.traces_endpoint(Config(), {}) == ("", "")
    assert tracing.service_name(Config(), env) == "from-env"
    assert tracing.service_name(Config(tracing_service_name="mine"), env) == "mine"
    assert tracing.service_name(Config(backend="htcondor"), {}) == "interlink-plugin-htcondor"


def test_interlinks_own_tracing_variables_are_honoured(tmp_path: Path) -> None:
    """ENABLE_TRACING=1 and TELEMETRY_* as interLink's Go plugins read them: OTLP/gRPC, Plugin-<id>."""
    assert tracing.traces_endpoint(Config(), {"ENABLE_TRACING": "1"}) == ("localhost:4317", "ENABLE_TRACING")
    env = {"ENABLE_TRACING": "1", "TELEMETRY_ENDPOINT": "otel:4317", "TELEMETRY_UNIQUE_ID": "site-a"}
    assert tracing.traces_endpoint(Config(), env) == ("otel:4317", "ENABLE_TRACING")
    assert tracing.traces_endpoint(Config(), {"ENABLE_TRACING": "0", "TELEMETRY_ENDPOINT": "otel:4317"}) == ("", "")
    # the standard variables and the key win over interLink's
    assert tracing.traces_endpoint(Config(), {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})[1] == (
        "OTEL_EXPORTER_OTLP_ENDPOINT")
    assert tracing.service_name(Config(), env) == "Plugin-site-a"
    assert tracing.service_name(Config(), {**env, "OTEL_SERVICE_NAME": "svc"}) == "svc"
    try:
        assert tracing.setup(Config(), environ=env)  # an OTLP/gRPC exporter to otel:4317 (nothing sent yet)
        assert tracing.enabled()
    finally:
        tracing.shutdown(timeout=0.1)
    # mutual TLS needs all three files, as interLink's plugins do
    ca = tmp_path / "ca.crt"
    ca.write_text("not used")
    partial = {**env, "TELEMETRY_CA_CRT_FILEPATH": str(ca)}
    with pytest.raises(SystemExit, match="TELEMETRY_CLIENT_KEY_FILEPATH, TELEMETRY_CLIENT_CRT_FILEPATH missing"):
        tracing.setup(Config(), environ=partial)
    unreadable = {**partial, "TELEMETRY_CLIENT_KEY_FILEPATH": str(tmp_path / "no.key"),
                  "TELEMETRY_CLIENT_CRT_FILEPATH": str(ca)}
    with pytest.raises(SystemExit, match="TELEMETRY_CLIENT_KEY_FILEPATH: cannot read"):
        tracing.setup(Config(), environ=unreadable)


def test_tracing_keys_are_validated() -> None:
    config, warnings = parse_config(
        {"TracingEndpoint": "https://otel.site:4318", "TracingServiceName": "vk-x", "TracingSampleRatio": "0.25"},
        environ={},
    )
    assert warnings == []
    assert (config.tracing_endpoint, config.tracing_service_name, config.tracing_sample_ratio) == (
        "https://otel.site:4318", "vk-x", 0.25,
    )
    with pytest.raises(ConfigError, match="TracingEndpoint: 'collector:4318' is not an http"):
        parse_config({"TracingEndpoint": "collector:4318"}, environ={})
    with pytest.raises(ConfigError, match="TracingSampleRatio: must be between 0 and 1"):
        parse_config({"TracingSampleRatio": 1.5}, environ={})


def test_tracing_on_without_the_sdk_stops_start_up_naming_key_and_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the SDK made unimportable the way a missing package is (ImportError on import)
    for name in [m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump({
        "TracingEndpoint": "http://collector:4318", "DataRootFolder": str(tmp_path / "jobs"),
        "StateDir": str(tmp_path / "state"), "LogFormat": "text",
    }))
    path.chmod(0o600)  # a readable config is a warning line of its own
    assert main(["serve", "--config", str(path)]) == ExitCode.CONFIG
    (message,) = capsys.readouterr().err.splitlines()
    assert "TracingEndpoint is set" in message and "pip install 'interlink-plugins[tracing]'" in message
    assert not tracing.enabled()


def test_pod_uids_of_every_body_shape() -> None:
    body = pod_body("p", [container("c", ["true"])])
    uid = body["pod"]["metadata"]["uid"]
    assert tracing.pod_uids(body) == [uid]  # /create
    assert tracing.pod_uids([body]) == [uid]  # /create of interLink 0.4
    assert tracing.pod_uids([status_pod(body), status_pod(body)]) == [uid, uid]  # /status
    assert tracing.pod_uids(status_pod(body)) == [uid]  # /delete
    assert tracing.pod_uids({"PodUID": uid, "ContainerName": "c"}) == [uid]  # /getLogs
    assert tracing.pod_uids([1, "x", {"metadata": "no"}]) == []
