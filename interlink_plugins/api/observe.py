"""Per-request observation: HTTP latency by route, and interLink's session id in every log line.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs an extra task and memory stream per
request on the /status hot path (interLink sends one request per pod every few seconds).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interlink_plugins.logsetup import session_id
from interlink_plugins.metrics import Metrics

SESSION_HEADER = b"interlink-http-session"


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = next((value.decode("latin-1") for name, value in scope["headers"] if name == SESSION_HEADER), "")
        token = session_id.set(session)
        started = time.perf_counter()
        answered: dict[str, Any] = {"status": 500, "seconds": None}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # latency until the answer starts: a Follow stream's length is not the route's latency
                answered["status"] = message["status"]
                answered["seconds"] = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = answered["seconds"] if answered["seconds"] is not None else time.perf_counter() - started
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_seconds.labels(path, scope["method"], str(answered["status"])).observe(seconds)
            session_id.reset(token)
