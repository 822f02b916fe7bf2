"""Optional OpenTelemetry tracing: set-up and the few span helpers; all of it is a no-op when off.

Spans: one SERVER span per interLink HTTP request (``TraceMiddleware``, a W3C ``traceparent`` from
the client makes it a child), one child span per scheduler command (``TracedRunner``: program name
and exit code, never argv or env), one per HTCondor binding call and one per poll (``traced``).

Spans leave through a BatchSpanProcessor (bounded queue, its own thread): a request never waits for
the collector. At the app's lifespan shutdown (and at exit) the queue is flushed for at most
``EXIT_FLUSH_SECONDS``, so a dead collector cannot hold up a stop (the SDK's own exit handler may wait
up to 30 s per processor).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the config's and the runner's types only: core imports tracing, not the other way round
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.trace import Span, Tracer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from interlink_plugins.config import Config
    from interlink_plugins.core.commands.local import CommandResult, CommandRunner

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_FLUSH_SECONDS = 2.0
EXPORT_TIMEOUT_SECONDS = 5.0  # one export request; OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT overrides it
MAX_QUEUE_SIZE = 2048  # spans waiting for export; more are dropped (OTEL_BSP_MAX_QUEUE_SIZE overrides it)
BODY_PEEK_BYTES = 1 << 20  # request bodies up to this size are read again for the pod UID / count
UNTRACED_PATHS = frozenset({"/metrics", "/healthz"})  # scrapes and probes, not interLink's calls
POD_ROUTES = frozenset({"/create", "/status", "/delete", "/getLogs"})
INSTALL_HINT = "pip install 'interlink-plugins[tracing]'"
# interLink's own variables, as its Go plugins read them: ENABLE_TRACING=1 sends spans over OTLP/gRPC to
# TELEMETRY_ENDPOINT (host:port), with mutual TLS when the three TELEMETRY_*_FILEPATH variables are set
INTERLINK_TRACING = "ENABLE_TRACING"
INTERLINK_DEFAULT_ENDPOINT = "localhost:4317"
INTERLINK_TLS_FILES = ("TELEMETRY_CA_CRT_FILEPATH", "TELEMETRY_CLIENT_KEY_FILEPATH", "TELEMETRY_CLIENT_CRT_FILEPATH")


@dataclass
class _Active:
    provider: TracerProvider
    processor: BatchSpanProcessor
    tracer: Tracer


_active: _Active | None = None
_exit_hook_registered = False


def enabled() -> bool:
    return _active is not None


def traces_endpoint(config: Config, environ: Mapping[str, str]) -> tuple[str, str]:
    """(URL spans are posted to, the key that set it); ("", "") when tracing is off.

    TracingEndpoint wins; else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else
    OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), as the OpenTelemetry specification says.
    """
    if config.tracing_endpoint:
        url = config.tracing_endpoint
        if urlsplit(url).path in ("", "/"):
            url = url.rstrip("/") + "/v1/traces"
        return url, "TracingEndpoint"
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        base = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/")
        return f"{base}/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT"
    if environ.get(INTERLINK_TRACING, "").strip() == "1":
        return environ.get("TELEMETRY_ENDPOINT", "").strip() or INTERLINK_DEFAULT_ENDPOINT, INTERLINK_TRACING
    return "", ""


def service_name(config: Config, environ: Mapping[str, str]) -> str:
    """TracingServiceName, OTEL_SERVICE_NAME, interLink's Plugin-<TELEMETRY_UNIQUE_ID>, interlink-plugin-<Backend>."""
    interlink_id = environ.get("TELEMETRY_UNIQUE_ID", "").strip()
    return (
        config.tracing_service_name
        or environ.get("OTEL_SERVICE_NAME", "")
        or (f"Plugin-{interlink_id}" if interlink_id else f"interlink-plugin-{config.backend}")
    )


def _grpc_exporter(url: str, environ: Mapping[str, str], timeout: float | None) -> SpanExporter:
    """OTLP/gRPC to interLink's TELEMETRY_ENDPOINT: plain, or mutual TLS from its three file variables.

    Unlike interLink's Go plugins, the collector's certificate is verified against the CA."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    given = [name for name in INTERLINK_TLS_FILES if environ.get(name, "").strip()]
    if not given:
        return OTLPSpanExporter(endpoint=url, insecure=True, timeout=timeout)
    if len(given) < len(INTERLINK_TLS_FILES):
        missing = ", ".join(name for name in INTERLINK_TLS_FILES if name not in given)
        raise SystemExit(f"config error: {', '.join(given)} set for mutual TLS to the collector, {missing} missing")
    import grpc

    pem: dict[str, bytes] = {}
    for name in INTERLINK_TLS_FILES:
        try:
            with open(environ[name].strip(), "rb") as handle:
                pem[name] = handle.read(1 << 20)
        except OSError as exc:
            raise SystemExit(f"config error: {name}: cannot read {environ[name].strip()}: {exc.strerror}") from None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem[INTERLINK_TLS_FILES[0]],
        private_key=pem[INTERLINK_TLS_FILES[1]],
        certificate_chain=pem[INTERLINK_TLS_FILES[2]],
    )
    return OTLPSpanExporter(endpoint=url, credentials=credentials, timeout=timeout)


def setup(config: Config, *, environ: Mapping[str, str] | None = None, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on when an endpoint is configured (or ``exporter`` is given, in tests).

    Stops start-up (SystemExit naming the key and the extra) when it is on but the SDK is missing.
    """
    global _active, _exit_hook_registered
    environ = os.environ if environ is None else environ
    url, key = traces_endpoint(config, environ)
    if not url and exporter is None:
        return False
    _require_sdk(url, key, exporter_given=exporter is not None)
    shutdown()
    if exporter is None:
        exporter = _exporter(url, key, environ)
    name = service_name(config, environ)
    _active = _start(config, environ, exporter, name)
    if not _exit_hook_registered:
        atexit.register(shutdown)
        _exit_hook_registered = True
    if url:
        log.info("tracing on: spans to %s (from %s), service %s", url, key, name)
    return True


_SDK_MODULES = (
    "opentelemetry.trace",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.trace.sampling",
)
_HTTP_EXPORTER_MODULES = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",)
# the gRPC exporter and its transport (grpc missing means the extra is missing)
_GRPC_EXPORTER_MODULES = ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter")


def _require_sdk(url: str, key: str, *, exporter_given: bool) -> None:
    """SystemExit naming the key and the extra when a module tracing needs cannot be imported."""
    modules = list(_SDK_MODULES)
    if not exporter_given:
        modules += _HTTP_EXPORTER_MODULES
        if key == INTERLINK_TRACING:
            modules += _GRPC_EXPORTER_MODULES
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(
            f"config error: {key} is set ({url}) but the OpenTelemetry SDK is not installed ({exc.name} is "
            f"missing): {INSTALL_HINT}, or leave {key} empty"
        ) from None


def _exporter(url: str, key: str, environ: Mapping[str, str]) -> SpanExporter:
    """OTLP/gRPC for interLink's variables, OTLP/HTTP otherwise; each request bounded unless the
    OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT variables set the bound."""
    timeout_set = any(environ.get(k) for k in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"))
    timeout = None if timeout_set else EXPORT_TIMEOUT_SECONDS
    if key == INTERLINK_TRACING:
        return _grpc_exporter(url, environ, timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url, timeout=timeout)


def _start(config: Config, environ: Mapping[str, str], exporter: SpanExporter, name: str) -> _Active:
    """The tracer provider (sampled as configured, the parent's decision first) and its batch processor."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": name, "interlink.instance": config.instance_id})
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(config.tracing_sample_ratio)),
        shutdown_on_exit=False,  # our exit hook flushes with a bound
    )
    queue = environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "")
    processor = BatchSpanProcessor(exporter, max_queue_size=int(queue) if queue.isdigit() else MAX_QUEUE_SIZE)
    provider.add_span_processor(processor)
    return _Active(provider, processor, trace.get_tracer("interlink_plugins", tracer_provider=provider))


def shutdown(timeout: float = EXIT_FLUSH_SECONDS) -> None:
    """Flush what is queued (at most ``timeout`` seconds, even against a dead collector) and stop."""
    global _active
    active, _active = _active, None
    if active is None:
        return
    # the SDK's shutdown waits for the export in progress (retries included): bound it from outside
    stopper = threading.Thread(target=active.provider.shutdown, name="tracing-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        log.warning("tracing: the collector did not take the last spans within %.0f s; dropped", timeout)


# --- spans -------------------------------------------------------------------------------


async def traced(name: str, awaitable: Awaitable[T], **attributes: str | int) -> T:
    """Await ``awaitable`` inside an INTERNAL span ``name`` (a child of the current span, if any)."""
    active = _active
    if active is None:
        return await awaitable
    with active.tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            return await awaitable
        except Exception as exc:
            _failed(span, exc)
            raise


class TracedRunner:
    """A CommandRunner that puts every command in a span: program name and exit code, nothing else."""

    def __init__(self, inner: CommandRunner) -> None:
        self._inner = inner

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        active = _active
        if active is None:
            return await self._inner.run(argv, timeout=timeout, stdin=stdin, env=env)
        from opentelemetry.trace import SpanKind, StatusCode

        program = os.path.basename(argv[0]) if argv else "?"
        with active.tracer.start_as_current_span(
            program,
            kind=SpanKind.CLIENT,
            attributes={"process.executable.name": program},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._inner.run(argv, timeout=timeout, stdin=stdin, env=env)
            except Exception as exc:
                _failed(span, exc)
                raise
            span.set_attribute("process.exit.code", result.returncode)
            if not result.ok:
                span.set_status(StatusCode.ERROR)
            return result


def _failed(span: Span, exc: BaseException) -> None:
    """Mark a span failed by the exception's type only: messages may carry values (stderr, paths)."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(StatusCode.ERROR)


class TraceMiddleware:
    """Pure ASGI: one SERVER span per HTTP request, child of the client's W3C traceparent if it sent one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        active = _active
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flush_before_shutdown_complete(send))
            return
        if active is None or scope["type"] != "http" or scope.get("path") in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        method = str(scope.get("method", ""))
        attributes = _request_attributes(method, headers)
        parent = TraceContextTextMapPropagator().extract(headers)
        with active.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            body = _BodyPeek(receive, keep=span.is_recording() and scope.get("path") in POD_ROUTES)
            answer = _StatusSeen(send)
            try:
                await self.app(scope, body.receive, answer.send)
            except Exception as exc:
                _failed(span, exc)
                raise
            finally:
                _end_server_span(span, scope, method, answer.status, body.chunks)

    @staticmethod
    def _flush_before_shutdown_complete(send: Send) -> Send:
        """uvicorn re-raises SIGTERM after its shutdown (no atexit then): flush once the app has stopped."""

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and _active is not None:
                await asyncio.to_thread(shutdown)
            await send(message)

        return sending


def _request_attributes(method: str, headers: Mapping[str, str]) -> dict[str, str]:
    attributes = {"http.request.method": method}
    session = headers.get("interlink-http-session", "")
    if session:
        attributes["interlink.http_session"] = session[:128]
    return attributes


class _BodyPeek:
    """An ASGI receive that keeps the request body (up to BODY_PEEK_BYTES, else none of it) for the pod UIDs."""

    def __init__(self, receive: Receive, *, keep: bool) -> None:
        self._receive = receive
        self.chunks: list[bytes] | None = [] if keep else None
        self._size = 0

    async def receive(self) -> Message:
        message = await self._receive()
        if self.chunks is not None and message["type"] == "http.request":
            chunk = message.get("body", b"")
            self._size += len(chunk)
            if self._size > BODY_PEEK_BYTES:
                self.chunks = None
            else:
                self.chunks.append(chunk)
        return message


class _StatusSeen:
    """An ASGI send that notes the response status (500 until one is sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)


def _end_server_span(span: Span, scope: Scope, method: str, status: int, body: list[bytes] | None) -> None:
    """Name the span by its route; the status (5xx marks it failed) and the pod UIDs of the body."""
    from opentelemetry.trace import StatusCode

    route = getattr(scope.get("route"), "path", "") or "unmatched"
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    if body:
        _pod_attributes(span, b"".join(body))


def pod_uids(body: Any) -> list[str]:
    """The pod UIDs of a /create, /status, /delete or /getLogs body (only the UIDs: never other values)."""
    items = body if isinstance(body, list) else [body]
    uids = []
    for item in items:
        if not isinstance(item, dict):
            continue
        pod = item.get("pod", item)
        meta = pod.get("metadata") if isinstance(pod, dict) else None
        uid = meta.get("uid") if isinstance(meta, dict) else item.get("PodUID")
        if isinstance(uid, str) and uid:
            uids.append(uid[:64])
    return uids


def _pod_attributes(span: Span, raw: bytes) -> None:
    try:
        uids = pod_uids(json.loads(raw))
    except (ValueError, RecursionError):
        return
    span.set_attribute("interlink.pod.count", len(uids))
    if len(uids) == 1:
        span.set_attribute("interlink.pod.uid", uids[0])
