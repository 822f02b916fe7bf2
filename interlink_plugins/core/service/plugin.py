"""PluginService: the backend-neutral lifecycle (create, status, delete, logs, ping) around one Backend,
as the routes and the CLI use it. It puts together the parts that do the work: submissions, deletions, the
poller and its status cache, logs and the node status. Nothing here knows SLURM, HTCondor or Podman."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from interlink_plugins.core.backend import Backend
from interlink_plugins.core.records.state import PodRecord, StateStore
from interlink_plugins.core.service.deletions import Deletions
from interlink_plugins.core.service.logs import LogRequest, Logs
from interlink_plugins.core.service.node import NodeStatus
from interlink_plugins.core.service.poller import Poller
from interlink_plugins.core.service.shared import Shared
from interlink_plugins.core.service.statuses import StatusCache
from interlink_plugins.core.service.submissions import Submissions
from interlink_plugins.metrics import Metrics

if TYPE_CHECKING:  # core reads the config, it does not import it
    from interlink_plugins.config import Config

FIRST_RESOURCES_SECONDS = 5.0
FIRST_POLL_SECONDS = 5.0

log = logging.getLogger(__name__)


class PluginService:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics(backend.name)
        self.backend = backend
        self.store = store
        self.clock = clock
        self.shared = Shared(config, backend, store, clock, self.metrics)
        self.node = NodeStatus(self.shared)
        self.statuses = StatusCache(self.shared)
        self.submissions = Submissions(self.shared)
        self.deletions = Deletions(self.shared, forget_status=self.statuses.forget)
        self.logs = Logs(self.shared, pod_status=self.statuses.pod_status)
        self.poller = Poller(self.shared, submissions=self.submissions, deletions=self.deletions,
                             statuses=self.statuses, node=self.node)
        self._poll_task: asyncio.Task[None] | None = None
        self.metrics.track_pods(self.statuses.phases)
        self.metrics.poll_interval.labels(backend.name).set(config.poll_interval)

    @property
    def config(self) -> Config:
        return self.shared.config

    @property
    def poll_count(self) -> int:
        return self.poller.poll_count

    @property
    def down_since_text(self) -> str:
        return self.shared.down_since_text

    # --- lifecycle ---------------------------------------------------------------------

    def reconfigure(self, config: Config, policy: Any) -> None:
        """Swap the reloadable settings (SIGHUP); the backend picks them up on the next create."""
        self.shared.config = config
        self.backend.config = config
        self.backend.policy = policy

    async def start(self) -> None:
        await self.recover()
        # interLink's first ping gets the capacity (without it the node keeps its configured one until the
        # next): asked before serving, for a few seconds at most; the poller retries what this misses
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.node.refresh_resources(self.clock()), FIRST_RESOURCES_SECONDS)
        # the first poll before serving, for a few seconds at most: until it, a status is built without the
        # job's state, so after a restart a running pod would read ContainerCreating for a moment
        first_poll = asyncio.Event()
        self._poll_task = asyncio.create_task(self.poller.poll_forever(first_poll), name="poller")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_poll.wait(), FIRST_POLL_SECONDS)

    async def stop(self) -> None:
        """Stop polling. Jobs are never touched by a plugin stop."""
        for task in (self._poll_task, self.poller.usage_task):
            # cancelled again until it ends: an await that drops a cancel (Python 3.11's wait_for, when the
            # awaited work finishes at that moment) would otherwise keep the poll loop going after SIGTERM
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1)
            if task is not None and not task.cancelled() and task.exception() is not None:
                log.error("%s ended with an error at stop", task.get_name(), exc_info=task.exception())
        self.store.close()

    async def recover(self) -> None:
        """Finish what a crash interrupted, and adopt jobs of ours the state does not know."""
        await self.poller.recover()

    async def poll_once(self) -> None:
        """ONE scheduler query for every tracked job, then statuses from the runner's files."""
        await self.poller.poll_once()

    # --- the routes --------------------------------------------------------------------

    async def create(self, body: Any) -> dict[str, str]:
        return await self.submissions.create(body)

    def status(self, pods: list[Any]) -> list[dict[str, Any]]:
        return self.statuses.status(pods)

    def pod_status(self, record: PodRecord) -> dict[str, Any]:
        return self.statuses.pod_status(record)

    async def delete(self, raw: Any) -> str:
        return await self.deletions.delete(raw)

    def ping(self) -> dict[str, Any]:
        return self.node.ping()

    async def open_read(self, request: LogRequest) -> tuple[bytes, AsyncIterator[bytes] | None]:
        return await self.logs.open_read(request)

    async def open_follow(self, request: LogRequest) -> AsyncIterator[bytes]:
        return await self.logs.open_follow(request)
