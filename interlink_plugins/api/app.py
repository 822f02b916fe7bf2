"""HTTP edge: parse, call the service, map errors. Only HTTP 200 is success for interLink."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from interlink_plugins import tracing
from interlink_plugins.api import schema
from interlink_plugins.api.answers import ANSWERED_ERRORS, BadRequest, error_answer, read_json_body, status_answer
from interlink_plugins.api.metrics_listener import MetricsListener
from interlink_plugins.api.models import CreateResponse, LogRequestBody, PingResponse, PodStatusAnswer
from interlink_plugins.api.observe import RequestObserver
from interlink_plugins.api.status_path import StatusFastPath
from interlink_plugins.api.streams import FollowSlots, SlottedStream
from interlink_plugins.core.service import LogRequest, PluginService
from interlink_plugins.metrics import watch_event_loop_lag

log = logging.getLogger(__name__)

async def _json_body(request: Request, *, empty: Any = None) -> Any:
    try:
        return await read_json_body(request.stream(), request.headers.get("content-length"), empty=empty)
    except ClientDisconnect:  # gone mid-body (or cut off by RequestReadTimeout): an answer nobody reads
        raise BadRequest("the connection closed before the whole body arrived", field="body") from None


async def _answer_error(_request: Request, exc: Exception) -> JSONResponse:
    status, content = error_answer(exc)
    return JSONResponse(status_code=status, content=content)


def _lifespan(
    service: PluginService,
    *,
    manage_lifecycle: bool,
    on_reload: Callable[[], None] | None,
    metrics_socket: socket.socket | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start and stop what runs beside the routes: the service, the loop-lag watch, the metrics listener."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_reload is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_reload)
        if manage_lifecycle:
            await service.start()
        lag_watch = asyncio.create_task(watch_event_loop_lag(service.metrics), name="event-loop-lag")
        metrics_listener = MetricsListener(metrics_socket, service.metrics.registry) if metrics_socket else None
        if metrics_listener:
            metrics_listener.start()
        try:
            yield
        finally:
            lag_watch.cancel()
            if metrics_listener:
                await metrics_listener.stop()
            if manage_lifecycle:
                await service.stop()

    return lifespan


def _add_pod_routes(app: FastAPI, service: PluginService) -> None:
    """/create, /status (GET and POST) and /delete."""

    @app.post("/create", response_model=CreateResponse, openapi_extra=schema.CREATE, responses=schema.ERRORS)
    async def create(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if body is None:
            raise BadRequest("body is required: a RetrievedPodData object", field="body")
        return JSONResponse(await service.create(body))

    async def status(request: Request) -> JSONResponse:
        # answered by StatusFastPath (below); this route documents it and serves it the same way
        return JSONResponse(status_answer(service, await _json_body(request, empty=[])))

    for method in ("GET", "POST"):  # a route per method: each gets its own operationId in the schema
        app.add_api_route("/status", status, methods=[method], operation_id=f"status_{method.lower()}",
                          response_model=list[PodStatusAnswer] | PingResponse, openapi_extra=schema.STATUS,
                          responses=schema.ERRORS)

    @app.post("/delete", response_class=PlainTextResponse, openapi_extra=schema.DELETE, responses=schema.ERRORS)
    async def delete(request: Request) -> PlainTextResponse:
        body = await _json_body(request)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if not isinstance(body, dict):
            raise BadRequest("body must be a v1.Pod object", field="body")
        return PlainTextResponse(await service.delete(body))


def _log_request(body: Any) -> LogRequest:
    """A /getLogs body checked (BadRequest naming the field otherwise) and turned into the service's request."""
    try:
        parsed = LogRequestBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise BadRequest(f"{field}: {first['msg']}", status=422, field=field) from None
    opts = parsed.Opts
    if (opts.Tail and (opts.Bytes or opts.LimitBytes)) or (opts.SinceSeconds and opts.SinceTime):
        raise BadRequest("Tail and Bytes, or SinceSeconds and SinceTime, are mutually exclusive", field="Opts")
    return LogRequest(
        pod_uid=parsed.PodUID,
        container=parsed.ContainerName,
        tail=opts.Tail,
        limit_bytes=opts.Bytes or opts.LimitBytes,
        timestamps=opts.Timestamps,
        follow=opts.Follow,
        previous=opts.Previous,
        since_seconds=opts.SinceSeconds,
        since_time=opts.SinceTime,
    )


def _add_log_routes(app: FastAPI, service: PluginService) -> None:
    """/getLogs (GET and POST): a read, or a follow stream holding one of MaxFollowStreams slots."""
    follow_slots = FollowSlots(service.config.max_follow_streams)

    async def get_logs(request: Request) -> Response:
        request_obj = _log_request(await _json_body(request))
        if request_obj.follow:
            follow_slots.take()
            try:
                stream = await service.open_follow(request_obj)
            except BaseException:
                follow_slots.give_back()
                raise
            return SlottedStream(stream, follow_slots, media_type="text/plain")
        data, rest = await service.open_read(request_obj)
        if rest is not None:  # more than a block: streamed as it is read (bounded memory)
            return StreamingResponse(rest, media_type="text/plain")
        return Response(data, media_type="text/plain")

    for method in ("GET", "POST"):
        app.add_api_route("/getLogs", get_logs, methods=[method], operation_id=f"get_logs_{method.lower()}",
                          response_class=PlainTextResponse, openapi_extra=schema.LOGS,
                          responses={**schema.ERRORS, 404: {**schema.ERROR, "description": "pod not known"}})


def _add_middleware(app: FastAPI, service: PluginService) -> None:
    """After the routes (the fast path labels its answers with the /status route); the last added runs
    first, so the observer sees the fast path's answers too."""
    status_route = next(route for route in app.routes if getattr(route, "path", None) == "/status")
    app.add_middleware(StatusFastPath, service=service, route=status_route)
    app.add_middleware(RequestObserver, metrics=service.metrics)
    app.add_middleware(tracing.TraceMiddleware)  # outermost: one SERVER span per request (no-op when off)


def create_app(
    service: PluginService,
    *,
    manage_lifecycle: bool = True,
    on_reload: Callable[[], None] | None = None,
    metrics_socket: socket.socket | None = None,
) -> FastAPI:
    """metrics_socket: a bound socket (MetricsAddress) served with /metrics alone while the app runs."""
    app = FastAPI(
        title="interlink-plugins",
        description="interLink sidecar plugin API (wire-compatible with interLink 0.3 to 0.6.2)",
        lifespan=_lifespan(
            service, manage_lifecycle=manage_lifecycle, on_reload=on_reload, metrics_socket=metrics_socket
        ),
    )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for error in ANSWERED_ERRORS:
        app.add_exception_handler(error, _answer_error)
    _add_pod_routes(app, service)
    _add_log_routes(app, service)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    _add_middleware(app, service)
    return app
