"""Log Follow streams are capped (MaxFollowStreams): each holds a connection, a task and an open log for as
long as the client wants; past the cap the next one gets 429 until one ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from interlink_plugins.api.answers import BadRequest


class FollowSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> None:
        if self.taken >= self.limit:
            raise BadRequest(
                f"{self.limit} log Follow streams are open, the most this plugin serves at once "
                "(MaxFollowStreams): retry when one ends", status=429)
        self.taken += 1

    def give_back(self) -> None:
        self.taken -= 1


class SlottedStream(StreamingResponse):
    """A Follow stream that gives its slot back when the response ends, however it ends (the client
    gone, the container done, an error)."""

    def __init__(self, content: AsyncIterator[bytes], slots: FollowSlots, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.give_back()
