"""Container logs: a read (a large log streamed in blocks) or a follow, opened before the answer starts so
that every refusal is an HTTP error and not a broken stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import FileIO
from typing import Any

from interlink_plugins.core import safefs
from interlink_plugins.core.errors import LogRequestError
from interlink_plugins.core.logs.reader import LogOptions, LogSource, follow_log, iter_log
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.service.shared import Shared

log = logging.getLogger(__name__)


@dataclass
class LogRequest:
    pod_uid: str
    container: str
    tail: int = 0
    limit_bytes: int = 0
    timestamps: bool = False
    follow: bool = False
    previous: bool = False
    since_seconds: int = 0
    since_time: datetime | None = None


class Logs:
    def __init__(self, shared: Shared, *, pod_status: Callable[[PodRecord], dict[str, Any]]) -> None:
        self.shared = shared
        self.pod_status = pod_status  # the pod's status as /status answers it

    def _log_target(self, request: LogRequest) -> tuple[PodRecord, safefs.Location]:
        """The pod and where its container's log is (blocking: the backend may look at the job dir)."""
        backend = self.shared.backend
        record = self.shared.store.get(request.pod_uid)
        if record is None:
            raise LogRequestError(f"pod {request.pod_uid} is not known to this plugin", status=404)
        if request.container not in record.init_names + record.main_names:
            raise LogRequestError(f"container {request.container} is not in pod {record.namespace}/{record.name}")
        if request.previous:
            return record, backend.log_file(record, request.container, previous=True)
        if not backend.container_started(record, request.container):
            reason = self._waiting_reason(record, request.container)
            raise LogRequestError(f"container {request.container} is waiting to start: {reason}")
        return record, backend.log_file(record, request.container, previous=False)

    async def _open_log(self, request: LogRequest) -> tuple[PodRecord, safefs.Location, FileIO | None]:
        """The log opened on a job-dir worker (None: it does not exist yet). A log that is not a regular
        file (a symlink, a FIFO the job planted) is refused with a 4xx naming what it is."""
        record, location = await safefs.run(self._log_target, request)
        try:
            handle = await safefs.run(safefs.open_file, location)
        except safefs.Refused as exc:
            log.warning("pod %s/%s (%s): the log of container %s is %s: refused", record.namespace, record.name,
                        record.uid, request.container, exc.kind)
            raise LogRequestError(
                f"the log of container {request.container} is {exc.kind} in the job dir, not a regular file: refused"
            ) from None
        if handle is None and request.previous:
            raise LogRequestError(f"previous terminated container {request.container} in pod {record.name} not found")
        return record, location, handle

    def _container_state(self, record: PodRecord, container: str) -> dict[str, Any]:
        status = self.pod_status(record)
        for entry in status["containers"] + status["initContainers"]:
            if entry["name"] == container:
                return dict(entry["state"])
        return {}

    def _waiting_reason(self, record: PodRecord, container: str) -> str:
        state = self._container_state(record, container)
        if "terminated" in state:
            return str(state["terminated"].get("reason", "never started"))
        return str(state.get("waiting", {}).get("reason", "ContainerCreating"))

    def _log_options(self, request: LogRequest) -> LogOptions:
        since = request.since_time
        now = datetime.now(UTC)
        # further back than the epoch is every line (and past year 1 would overflow datetime)
        if since is None and 0 < request.since_seconds < now.timestamp():
            since = now - timedelta(seconds=request.since_seconds)
        return LogOptions(
            tail=request.tail if request.tail > 0 else None,
            limit_bytes=request.limit_bytes if request.limit_bytes > 0 else None,
            timestamps=request.timestamps,
            since=since,
            follow=request.follow,
        )

    async def open_read(self, request: LogRequest) -> tuple[bytes, AsyncIterator[bytes] | None]:
        """A read without Follow: (the answer, None) when it fits in one block, else (b"", a stream
        of blocks) so that a 1 GB log is served as it is read. Errors come before the first byte."""
        # backend hook (a no-op by default): bring a live copy of a log the plugin host cannot see (HTCondor spool)
        record = self.shared.store.get(request.pod_uid)
        if record is not None and request.container in record.init_names + record.main_names:
            await self.shared.backend.fetch_log(record, request.container, previous=request.previous)
        _record, _location, handle = await self._open_log(request)
        if handle is None:  # not written yet
            return b"", None
        chunks = iter_log(handle, self._log_options(request))
        first = await asyncio.to_thread(next, chunks, b"")
        second = await asyncio.to_thread(next, chunks, b"") if first else b""
        if not second:
            chunks.close()
            self.shared.metrics.log_bytes.labels(self.shared.backend.name).inc(len(first))
            return first, None
        return b"", self._counted(_blocks(chunks, first, second))

    async def open_follow(self, request: LogRequest) -> AsyncIterator[bytes]:
        """A Follow, opened before the response starts (errors are answered, not streamed), so that a
        backend streaming the log from another host (SSH) can still answer 503 when it is unreachable."""
        remote = self.shared.backend.remote_logs
        if remote and request.previous:  # a finished run: nothing more will come
            data, rest = await self.open_read(request)
            return rest if rest is not None else _one_chunk(data)
        record, location, handle = await self._open_log(request)
        if not remote:
            return self._follow(record, request, location, handle)
        if handle is not None:
            handle.close()
        feed = await self.shared.backend.open_log_feed(record, request.container)
        # a private local file the backend keeps appending to (closed with the stream); it lags the remote
        # log: once the container ended, the stream ends when that file has caught up with it
        return self._follow(record, request, feed.path, None, close=feed.close, caught_up=feed.caught_up)

    def _follow(
        self,
        record: PodRecord,
        request: LogRequest,
        source: LogSource,
        handle: FileIO | None,
        *,
        close: Callable[[], Awaitable[None]] | None = None,
        caught_up: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bytes]:
        uid, container = record.uid, request.container

        def finished() -> bool:
            current = self.shared.store.get(uid)
            if current is None or current.final_status is not None:
                return True
            return "terminated" in self._container_state(current, container)

        async def finished_and_copied() -> bool:
            return finished() and caught_up is not None and await caught_up()

        stream: AsyncIterator[bytes] = follow_log(
            source, self._log_options(request), finished=finished if caught_up is None else finished_and_copied,
            first=handle,
        )  # fmt: skip
        # backend hook (a no-op by default): keep that live copy fresh while the stream lasts
        stream = self.shared.backend.keep_log_fresh(record, container, stream)
        if close is not None:
            stream = _closing(stream, close)
        return self._counted(stream)

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        counter = self.shared.metrics.log_bytes.labels(self.shared.backend.name)
        async for chunk in chunks:
            counter.inc(len(chunk))
            yield chunk


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _blocks(chunks: Generator[bytes, None, None], *first: bytes) -> AsyncIterator[bytes]:
    """Blocks read from a log file in a worker thread, one at a time; the file is closed at the end."""
    try:
        for chunk in first:
            yield chunk
        while chunk := await asyncio.to_thread(next, chunks, b""):
            yield chunk
    finally:
        chunks.close()


async def _closing(chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await close()
