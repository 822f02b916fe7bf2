"""What the HTTP edge shares between the FastAPI routes and the /status fast path: reading a JSON body,
mapping an error to its answer, and the /status answer itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from interlink_plugins.core.errors import BackendUnavailable, LogRequestError, PodSpecError
from interlink_plugins.core.model.names import printable_path, surrogate_field
from interlink_plugins.core.policy.engine import PolicyViolation
from interlink_plugins.core.service import PluginService

MAX_BODY_BYTES = 16 * 2**20


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


ANSWERED_ERRORS = (PodSpecError, BadRequest, LogRequestError, BackendUnavailable)


async def read_json_body(chunks: AsyncIterator[bytes], declared_length: str | None, *, empty: Any = None) -> Any:
    """The request body as JSON (`empty` for a blank one); 413 past MAX_BODY_BYTES, 400 when not JSON, 422
    naming the field when a string holds a lone surrogate (no file, script or answer could encode it)."""
    if declared_length and declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
        raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        parts.append(chunk)
    raw = b"".join(parts)
    if not raw.strip():
        return empty
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    where = surrogate_field(body, raw=raw)
    if where is not None:
        field = printable_path(where)
        raise BadRequest(f"{field}: a lone UTF-16 surrogate is not a character (not valid Unicode text)",
                         status=422, field=field)
    return body


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of an error the edge answers: 4xx naming the field, 503 naming the backend."""
    field: str | None
    if isinstance(exc, PolicyViolation):
        status, message, field = exc.status, f"{exc.field}: {exc.message}", exc.field
    elif isinstance(exc, PodSpecError):
        status, message, field = exc.status, str(exc), exc.field
    elif isinstance(exc, BadRequest):
        status, message, field = exc.status, exc.message, exc.field
    elif isinstance(exc, LogRequestError):
        status, message, field = exc.status, exc.message, None
    elif isinstance(exc, BackendUnavailable):
        status, message, field = 503, f"backend {exc.backend} unavailable: {exc.command}: {exc.detail}", None
    else:
        raise TypeError(f"not an answered error: {exc!r}")
    content: dict[str, Any] = {"error": message}
    if field:
        content["field"] = field
    return status, content


def status_answer(service: PluginService, body: Any) -> Any:
    """/status: one entry per known pod of the array (a single object is taken as one); `[]` is the ping."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        raise BadRequest("body must be a JSON array of pods", field="body")
    if not body:
        return service.ping()
    return service.status(body)
