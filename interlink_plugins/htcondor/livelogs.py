"""Live container logs of spooled jobs: the runner's log read through the configured tail command
(condor_tail) into a local copy that only ever grows while the run lasts, so a follower of the
copy sees each line once. The copy sits in the pod's job dir: it is read and written through
core/safefs (no symlink followed, bounded reads)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from interlink_plugins.core import safefs

MAX_BYTES = 16 * 2**20
REFRESH_SECONDS = 1.0
_BLOCK = 1 << 20


def merge(local: safefs.Location, content: bytes) -> None:
    """Append what ``content`` adds to the local copy; replace the copy when it is a new run."""
    try:
        old = safefs.read_bytes(local, len(content) + 1)  # a longer copy is no prefix: never more
    except safefs.Refused:
        old = None
    if old is not None and content.startswith(old):
        if len(content) > len(old):
            safefs.append_bytes(local, content[len(old) :])
        return
    safefs.write_bytes(local, content)


def catch_up(local: safefs.Location, final: safefs.Location) -> None:
    """Append to the live copy what the retrieved log ``final`` has beyond it (when the copy is its
    prefix), block by block: a big log is never held in memory."""
    with contextlib.ExitStack() as stack:
        handles = []
        for location in (local, final):
            try:
                handle = safefs.open_file(location)
            except safefs.Refused:
                return
            if handle is None:
                return
            handles.append(stack.enter_context(handle))
        copy, source = handles
        have = os.fstat(copy.fileno()).st_size
        if os.fstat(source.fileno()).st_size <= have:
            return
        while True:  # the copy must be a prefix of the final log
            mine = copy.read(_BLOCK)
            if not mine:
                break
            if source.read(len(mine)) != mine:
                return
        while block := source.read(_BLOCK):
            safefs.append_bytes(local, block)


async def refreshed(
    stream: AsyncIterator[bytes], refresh: Callable[[], Awaitable[None]], *, every: float = REFRESH_SECONDS
) -> AsyncGenerator[bytes, None]:
    """``stream`` (a follow of the local copy) while a task keeps the copy fresh; the task ends with it."""

    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                await refresh()
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        async for chunk in stream:
            yield chunk
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
