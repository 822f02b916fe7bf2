"""What the parts of the service share: the settings, the backend, the state, the clock, the per-pod locks,
the jobs of the last poll and whether the backend is reachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from interlink_plugins.core.backend import Backend, JobInfo
from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.records.state import StateStore
from interlink_plugins.core.records.status import epoch_rfc3339
from interlink_plugins.metrics import Metrics

if TYPE_CHECKING:  # core reads the config, it does not import it
    from interlink_plugins.config import Config

log = logging.getLogger(__name__)


class Shared:
    def __init__(
        self, config: Config, backend: Backend, store: StateStore, clock: Callable[[], float], metrics: Metrics
    ) -> None:
        self.config = config
        self.backend = backend
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.locks: dict[str, asyncio.Lock] = {}
        self.jobs: dict[str, JobInfo] = {}  # job id -> the scheduler's answer of the last poll
        self.down_since: float | None = None  # the first failure of the outage going on (None: reachable)
        self.down_error = ""

    def lock(self, uid: str) -> asyncio.Lock:
        """One pod's create, delete and expiry never overlap."""
        return self.locks.setdefault(uid, asyncio.Lock())

    @property
    def down_since_text(self) -> str:
        return epoch_rfc3339(self.down_since) if self.down_since else ""

    def mark_down(self, exc: BackendUnavailable) -> None:
        self.metrics.backend_up.labels(self.backend.name).set(0)
        if self.down_since is None:
            self.down_since = self.clock()
            log.error("backend %s unreachable: %s", self.backend.name, exc)
        self.down_error = str(exc)

    def mark_up(self) -> None:
        self.metrics.backend_up.labels(self.backend.name).set(1)
        if self.down_since is not None:
            log.info("backend %s reachable again", self.backend.name)
        self.down_since = None
        self.down_error = ""
