"""Live container logs of spooled jobs: the runner's log read through the configured tail command
(condor_tail) into a local copy that only ever grows while the run lasts, so a follower of the
copy sees each line once."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path

MAX_BYTES = 16 * 2**20
REFRESH_SECONDS = 1.0


def merge(local: Path, content: bytes) -> None:
    """Append what ``content`` adds to the local copy; replace the copy when it is a new run."""
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = local.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and len(content) >= len(old) and content.startswith(old):
        if len(content) > len(old):
            with local.open("ab") as handle:
                handle.write(content[len(old) :])
        return
    tmp = local.with_name(f".{local.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, local)


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
