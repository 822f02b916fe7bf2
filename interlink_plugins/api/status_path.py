"""/status without the framework's per-request machinery.

interLink asks for every pod's status every few seconds: at 10,000 pods that is 2,000 requests/s. Routing,
dependency solving and the framework's other per-request layers cost about three times the answer itself,
so this ASGI layer answers /status directly, inside the observers (metrics, session id, tracing see it as
usual). The FastAPI route stays for the OpenAPI schema and answers through the same functions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from interlink_plugins.api.answers import ANSWERED_ERRORS, error_answer, read_json_body, status_answer
from interlink_plugins.core.service import PluginService

JSON_HEADERS = [(b"content-type", b"application/json")]


class StatusFastPath:
    def __init__(self, app: ASGIApp, service: PluginService, route: Any) -> None:
        self.app = app
        self.service = service
        self.route = route  # the FastAPI route of /status: the observer labels metrics by its path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/status" or scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        declared = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"content-length"),
                        None)
        try:
            body = await read_json_body(_chunks(receive), declared, empty=[])
            status, content = 200, status_answer(self.service, body)
        except ANSWERED_ERRORS as exc:
            status, content = error_answer(exc)
        payload = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
