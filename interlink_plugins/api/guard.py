"""The API's connection guard, ahead of HTTP parsing.

- Who is calling is decided once per connection, when it is accepted (the /status fast path and every
  route come after it): a caller that is not allowed never reaches the application; its request is read,
  answered 403 and the connection closed, and its uid is logged.
- A request must arrive whole (headers and body) within RequestReadTimeout of its first byte, or of the
  connection's start: a client sending a byte at a time is cut off (408 when no answer has started).
- Past MaxConnections (uvicorn's limit_concurrency) requests get 503, except /status, which keeps
  interLink's node Ready and is answered without I/O.

A subclass of uvicorn's httptools protocol: the transport is the connection, so the check runs where
the kernel's view of the peer is at hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError as missing:  # a distribution's uvicorn without it
    raise ImportError("the API is served by uvicorn's httptools protocol: install httptools (a dependency of "
                      "interlink-plugins; Debian: python3-httptools)") from missing

from interlink_plugins.api.access import ClientPolicy
from interlink_plugins.api.peers import Caller, identify

log = logging.getLogger(__name__)

SPARED_PATH = b"/status"
REFUSED_HEADERS_MAX = 64 * 1024  # a refused caller's request is read this far, no further
REFUSED_WAIT_SECONDS = 5.0  # ... and waited for this long at most
REFUSED_LINGER_SECONDS = 1.0  # after the 403, the rest of its request is drained this long, then closed
REFUSED_OPEN_MAX = 64  # refused connections kept for their 403 at once; past it they are dropped at once
LOG_EVERY_SECONDS = 10.0  # one line per refused uid per interval (a flood of attempts is counted, not logged)


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


def describe(caller: Caller) -> str:
    who = "an unidentified caller" if caller.uid is None else f"API caller uid {caller.uid}"
    pid = f" pid {caller.pid}" if caller.pid is not None else ""
    return f"{who} ({caller.where}{pid})"


class _RefusalLog:
    """Rate-limited log lines for refused callers: the first of each uid at once, then one per interval."""

    def __init__(self) -> None:
        self._last: dict[int | None, tuple[float, int]] = {}

    def refused(self, caller: Caller, why: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(caller.uid, (float("-inf"), 0))
        if now - last < LOG_EVERY_SECONDS:
            self._last[caller.uid] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more refused since the last line)" if suppressed else ""
        log.warning("refused %s: %s%s", describe(caller), why, more)
        self._last[caller.uid] = (now, 0)


class RefusedConnection(asyncio.Protocol):
    """A caller that may not call: its request head is read (so that it gets the answer rather than a
    reset), answered 403, and the connection closed. Such connections are not counted by uvicorn's limit:
    few are kept at once, and briefly."""

    open = 0

    def __init__(self, transport: asyncio.Transport, message: str) -> None:
        RefusedConnection.open += 1
        self.transport = transport
        self.message = message
        self.seen = 0
        self.tail = b""  # the last bytes seen: the blank line may straddle two reads
        self.answered = False
        self.timer = asyncio.get_running_loop().call_later(REFUSED_WAIT_SECONDS, self.answer)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # drained
        self.seen += len(data)
        window = self.tail + data
        if b"\r\n\r\n" in window or self.seen > REFUSED_HEADERS_MAX:
            self.answer()
        self.tail = window[-3:]

    def answer(self) -> None:
        if self.answered or self.transport.is_closing():
            return
        self.answered = True
        self.timer.cancel()
        self.transport.write(_response(403, "Forbidden", self.message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, self.transport.close)

    def eof_received(self) -> bool:
        self.answer()
        return True  # keep the transport until the answer is flushed and the linger ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        RefusedConnection.open -= 1


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the caller check, the read deadline and the spared /status."""

    policy: ClientPolicy
    read_timeout: float
    refusals: _RefusalLog
    caller: Caller | None = None  # set once the connection is admitted
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        try:
            caller = identify(transport.get_extra_info("socket"))
        except OSError as exc:  # reset before it could be asked: nothing to answer
            log.debug("dropped an API connection gone before its caller was identified: %s", exc)
            transport.abort()
            return
        if not self.policy.allows(caller):
            who = "a caller on another host" if caller.uid is None else f"caller uid {caller.uid}"
            self.refusals.refused(caller, "not in AllowedClientUids/AllowedClientGids")
            if RefusedConnection.open >= REFUSED_OPEN_MAX:
                transport.abort()  # a flood: no answer, no file descriptor held
                return
            transport.set_protocol(RefusedConnection(
                transport, f"{who} is not allowed to call this plugin (AllowedClientUids, AllowedClientGids)"))
            return
        self.caller = caller
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        if self.caller is not None:
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._arm_read_deadline()
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._disarm_read_deadline()
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        spared = self.limit_concurrency is not None and self.url.split(b"?", 1)[0] == SPARED_PATH
        limit = self.limit_concurrency
        if spared:
            self.limit_concurrency = None
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = limit

    def _arm_read_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application has not taken the body yet: our pace, not the client's
            self._arm_read_deadline()
            return
        assert self.caller is not None
        log.warning("closed the connection of %s: request not received within %gs (RequestReadTimeout)",
                    describe(self.caller), self.read_timeout)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_response(408, "Request Timeout", "request not received in time"))
        self.transport.close()


def guarded_protocol(policy: ClientPolicy, read_timeout: float) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to this policy and deadline."""
    attributes: dict[str, Any] = {"policy": policy, "read_timeout": read_timeout, "refusals": _RefusalLog()}
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attributes)
