"""GET /metrics on a listener of its own (MetricsAddress), so Prometheus can scrape a plugin whose API is a
unix socket (or a TCP port it must not reach).

The listener answers GET/HEAD /metrics and nothing else (404): it never reaches the API routes, and metric
names and labels carry no pod names, uids or secrets. It runs in the API server's event loop and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

from interlink_plugins.config import split_host_port

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # a scraper needs one; more is someone else
TASK_NAME = "metrics-listener"


class ListenError(OSError):
    """The address cannot be listened on (in use, not an address of this host, not permitted)."""


def bind_metrics_socket(address: str) -> socket.socket:
    """Bind MetricsAddress now, before serving: a bad address stops start-up with one clear line."""
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
    except OSError as exc:
        raise ListenError(exc.errno, f"cannot listen on MetricsAddress {address}: {exc.strerror}") from None


def metrics_only(registry: CollectorRegistry) -> ASGIApp:
    exposition = make_asgi_app(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            if scope["method"] in ("GET", "HEAD"):
                await exposition(scope, receive, send)
                return
            status, text = 405, b"only GET /metrics here\n"
        else:
            status, text = 404, b"only GET /metrics here\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The API server owns SIGTERM/SIGINT; this one is stopped by the API server's shutdown."""
        yield


class _QuietInOwnTask(logging.Filter):
    """uvicorn's start/stop messages of this second server would read as a second API server: dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return True
        return record.levelno >= logging.WARNING or task is None or task.get_name() != TASK_NAME


class MetricsListener:
    def __init__(self, sock: socket.socket, registry: CollectorRegistry) -> None:
        self._sock = sock
        # no logging settings of its own: uvicorn's Config would change the (process-wide) uvicorn loggers
        config = uvicorn.Config(
            metrics_only(registry), lifespan="off", log_config=None, log_level=None,
            server_header=False, timeout_keep_alive=30, limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._quiet = _QuietInOwnTask()

    def start(self) -> None:
        host, port = self._sock.getsockname()[:2]
        log.info("serving /metrics on http://%s/metrics", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        logging.getLogger("uvicorn.error").addFilter(self._quiet)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name=TASK_NAME)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()
        logging.getLogger("uvicorn.error").removeFilter(self._quiet)
