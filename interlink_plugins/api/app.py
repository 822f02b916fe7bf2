"""HTTP edge: parse, call the service, map errors. Only HTTP 200 is success for interLink."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from interlink_plugins import tracing
from interlink_plugins.api.models import CreateResponse, LogRequestBody, PingResponse
from interlink_plugins.core.errors import BackendUnavailable, LogRequestError, PodSpecError
from interlink_plugins.core.policy import PolicyViolation
from interlink_plugins.core.service import LogRequest, PluginService
from interlink_plugins.logsetup import session_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 2**20


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


async def _json_body(request: Request, *, empty: Any = None) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    content: dict[str, Any] = {"error": message}
    if field:
        content["field"] = field
    return JSONResponse(status_code=status, content=content)


def create_app(
    service: PluginService, *, manage_lifecycle: bool = True, on_reload: Callable[[], None] | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_reload is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_reload)
        if manage_lifecycle:
            await service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = FastAPI(
        title="interlink-plugins",
        description="interLink sidecar plugin API (wire-compatible with interLink 0.3 to 0.6.2)",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        token = session_id.set(request.headers.get("InterLink-Http-Session", ""))
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            service.metrics.http_seconds.labels(path, request.method, str(status)).observe(
                time.perf_counter() - started
            )
            session_id.reset(token)

    app.add_middleware(tracing.TraceMiddleware)  # outermost: one SERVER span per request (no-op when off)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(PodSpecError)
    async def _pod_spec(_request: Request, exc: PodSpecError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.field)

    @app.exception_handler(PolicyViolation)
    async def _policy(_request: Request, exc: PolicyViolation) -> JSONResponse:
        return _error(exc.status, f"{exc.field}: {exc.message}", exc.field)

    @app.exception_handler(BadRequest)
    async def _bad(_request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, exc.message, exc.field)

    @app.exception_handler(LogRequestError)
    async def _logs(_request: Request, exc: LogRequestError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(BackendUnavailable)
    async def _down(_request: Request, exc: BackendUnavailable) -> JSONResponse:
        return _error(503, f"backend {exc.backend} unavailable: {exc.command}: {exc.detail}")

    @app.post("/create", response_model=CreateResponse)
    async def create(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if body is None:
            raise BadRequest("body is required: a RetrievedPodData object", field="body")
        return JSONResponse(await service.create(body))

    @app.api_route("/status", methods=["GET", "POST"], response_model=list[dict[str, Any]] | PingResponse)
    async def status(request: Request) -> JSONResponse:
        body = await _json_body(request, empty=[])
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list):
            raise BadRequest("body must be a JSON array of pods", field="body")
        if not body:
            return JSONResponse(service.ping())
        return JSONResponse(service.status(body))

    @app.post("/delete")
    async def delete(request: Request) -> PlainTextResponse:
        body = await _json_body(request)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if not isinstance(body, dict):
            raise BadRequest("body must be a v1.Pod object", field="body")
        return PlainTextResponse(await service.delete(body))

    @app.api_route("/getLogs", methods=["GET", "POST"], response_class=PlainTextResponse)
    async def get_logs(request: Request) -> Response:
        body = await _json_body(request)
        try:
            parsed = LogRequestBody.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise BadRequest(f"{field}: {first['msg']}", status=422, field=field) from None
        opts = parsed.Opts
        if (opts.Tail and (opts.Bytes or opts.LimitBytes)) or (opts.SinceSeconds and opts.SinceTime):
            raise BadRequest("Tail and Bytes, or SinceSeconds and SinceTime, are mutually exclusive", field="Opts")
        request_obj = LogRequest(
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
        if opts.Follow:
            return StreamingResponse(await service.open_follow(request_obj), media_type="text/plain")
        return Response(await service.read_logs(request_obj), media_type="text/plain")

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app
