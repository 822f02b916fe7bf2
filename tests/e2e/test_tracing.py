"""Tracing end to end: the plugin process against a REAL SLURM cluster, exporting to a REAL OTLP/HTTP
receiver (an HTTP server here that decodes ExportTraceServiceRequest with opentelemetry-proto), and to
a collector that never answers."""

from __future__ import annotations

import http.server
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, pod_body, status_pod

pytestmark = pytest.mark.e2e

CANARY = "canary-e2e-91c2-must-not-be-traced"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # Span.SpanKind values


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: POST /v1/traces, protobuf in, protobuf out."""

    spans: list[Span] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.paths.append(path)
            self.payloads.append(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(Span(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                            {a.key: _value(a.value) for a in s.attributes}, resource,
                        ))

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 15) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.2)
        raise AssertionError(f"spans never matched; got {sorted({s.name for s in spans})}")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    sink = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/x-protobuf"
            sink.take(self.path, body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A collector that accepts connections and never answers (nor reads)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def _plugin(tmp_path: Path, cluster: dict[str, str], name: str, config: dict[str, Any],
            env: dict[str, str]) -> PluginProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    return PluginProcess(
        workdir,
        {"Backend": "slurm", "ContainerRuntime": "none", "InstanceId": f"{name}-{tmp_path.name[-12:]}", **config},
        env={"SLURM_CONF": cluster["SLURM_CONF"], "OTEL_BSP_SCHEDULE_DELAY": "200", **env},
    )


def _stop_seconds(plugin: PluginProcess) -> float:
    assert plugin.proc is not None
    started = time.monotonic()
    plugin.stop()
    # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean stop
    assert plugin.proc.returncode in (0, -signal.SIGTERM), plugin.log_path.read_text()[-2000:]
    return time.monotonic() - started


def test_spans_reach_a_real_otlp_receiver(
    slurm_cluster: dict[str, str], tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    sink, port = receiver
    plugin = _plugin(tmp_path, slurm_cluster, "traced", {"TracingEndpoint": f"http://127.0.0.1:{port}"}, {}).start()
    try:
        body = pod_body("traced", [container("c", ["sh", "-c", 'test -n "$TOKEN"'],
                                             env=[{"name": "TOKEN", "value": CANARY}])])
        uid = body["pod"]["metadata"]["uid"]
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "InterLink-Http-Session": "sess-e2e"}
        response = plugin.client.post("/create", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["PodJID"].isdigit()
        # 120 s: the first job after slurm-up.sh starts ~65 s late on this machine's slurmd (a warm cluster: ~1 s)
        assert exit_codes(plugin.wait_done(body, timeout=120)) == {"c": 0}

        def complete(spans: list[Span]) -> bool:
            # a poll that queried SLURM: polls before the create query nothing, and the squeue of the
            # recovery at start is a root of its own, so the two names alone may come first
            polls = {s.span_id for s in spans if s.name == "poll"}
            names = {s.name for s in spans}
            return ({"POST /create", "GET /status", "sbatch"} <= names
                    and any(s.name == "squeue" and s.parent_id in polls for s in spans))
        spans = sink.wait_for(complete)
    finally:
        stop_seconds = _stop_seconds(plugin)
    assert stop_seconds < 10

    create = [s for s in spans if s.name == "POST /create"]
    assert len(create) == 1
    create_span = create[0]
    assert create_span.kind == SERVER
    assert (create_span.trace_id, create_span.parent_id) == (TRACE_ID, PARENT_ID)  # traceparent honoured
    assert create_span.attributes == {
        "http.request.method": "POST", "http.route": "/create", "http.response.status_code": 200,
        "interlink.http_session": "sess-e2e", "interlink.pod.count": 1, "interlink.pod.uid": uid,
    }
    sbatch = [s for s in spans if s.name == "sbatch" and s.parent_id == create_span.span_id]
    assert len(sbatch) == 1 and sbatch[0].kind == CLIENT and sbatch[0].trace_id == TRACE_ID
    assert sbatch[0].attributes == {"process.executable.name": "sbatch", "process.exit.code": 0}

    statuses = [s for s in spans if s.name == "GET /status" and s.attributes.get("interlink.pod.uid") == uid]
    assert statuses and all(s.attributes["http.response.status_code"] == 200 for s in statuses)
    assert all(s.parent_id == "" for s in statuses)  # no traceparent sent: each is a root
    polls = {s.span_id: s for s in spans if s.name == "poll"}
    squeue = [s for s in spans if s.name == "squeue"]
    assert polls and any(s.parent_id in polls for s in squeue)  # (the recovery at start is a root of its own)
    assert all(polls[s.parent_id].trace_id == s.trace_id for s in squeue if s.parent_id in polls)
    assert {s.resource["service.name"] for s in spans} == {"interlink-plugin-slurm"}
    assert set(sink.paths) == {"/v1/traces"}
    # the env value is nowhere: not in a span attribute, nor anywhere in what was exported
    assert all(CANARY not in repr(s.attributes) for s in spans)
    assert not any(CANARY.encode() in payload for payload in sink.payloads)


def test_a_collector_that_never_answers_delays_neither_requests_nor_the_stop(
    slurm_cluster: dict[str, str], tmp_path: Path, silent_collector: int
) -> None:
    # tracing switched on the standard way: OTEL_EXPORTER_OTLP_ENDPOINT, no TracingEndpoint
    plugin = _plugin(tmp_path, slurm_cluster, "silent", {},
                     {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent_collector}"}).start()
    try:
        body = pod_body("silent", [container("c", ["true"])])
        started = time.monotonic()
        created = plugin.create(body)
        create_seconds = time.monotonic() - started
        assert created["PodJID"].isdigit()
        slowest = 0.0
        deadline = time.monotonic() + 6  # past the first export attempts (blocked on the collector)
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = plugin.client.request("GET", "/status", json=[status_pod(body)])
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.1)
        log = plugin.log_path.read_text()
        assert "tracing on: spans to" in log and "OTEL_EXPORTER_OTLP_ENDPOINT" in log
    finally:
        stop_seconds = _stop_seconds(plugin)
    # an export blocked on the collector takes 5 s; a request that waited for it would show it
    assert create_seconds < 3 and slowest < 1, (create_seconds, slowest)
    assert stop_seconds < 10, stop_seconds
    print(f"create {create_seconds:.2f}s, slowest /status {slowest:.3f}s, SIGTERM stop {stop_seconds:.2f}s")
