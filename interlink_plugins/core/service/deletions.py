"""Delete: a graceful cancel, the hard one after the pod's grace period (capped), then the pod is forgotten
and its job dir removed. While the backend is down a delete is a durable tombstone the poller carries out.
Finished pods never deleted expire after RetentionDays."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.model.pod import pod_identity
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.service.retention import SWEEP_INTERVAL_SECONDS, expired
from interlink_plugins.core.service.shared import Shared

log = logging.getLogger(__name__)


class Deletions:
    def __init__(self, shared: Shared, *, forget_status: Callable[[str], None]) -> None:
        self.shared = shared
        self.forget_status = forget_status  # drops what the status cache keeps about a pod
        self.retention_at = 0.0

    async def delete(self, raw: Any) -> str:
        shared = self.shared
        uid, namespace, name = pod_identity(raw)
        async with shared.lock(uid):
            record = shared.store.get(uid)
            if record is None:
                return f"pod {namespace}/{name} ({uid}) is not known; nothing to delete"
            if not record.job_id:
                await self.forget(record)
                return f"pod {namespace}/{name} ({uid}) deleted before submission"
            cap = shared.config.grace_period_cap
            grace = min(record.lifecycle.grace, cap)
            spec_grace = _grace_from_pod(raw)
            if spec_grace is not None:
                grace = min(spec_grace, cap)
            record.phase = "deleting"
            record.delete_after = shared.clock() + grace
            if record.final_status is None:
                record.lifecycle.delete_graceful_sent = False
            await asyncio.to_thread(shared.store.put, record)
            await self.advance(record)
        return f"pod {namespace}/{name} ({uid}): {shared.backend.name} job {record.job_id} is being deleted"

    async def advance_all(self) -> None:
        """One step of every delete under way (the poller's round)."""
        for record in self.shared.store:
            if record.phase == "deleting":
                await self.advance(record)

    async def advance(self, record: PodRecord) -> None:
        """One step of a delete; retried by the poller (a tombstone while the backend is down)."""
        shared = self.shared
        job = shared.jobs.get(record.job_id)
        gone = record.final_status is not None or (job is not None and not job.active)
        try:
            if not gone and not record.lifecycle.delete_graceful_sent:
                # a job that never ran has nothing to signal: plain cancel
                await shared.backend.cancel(record.job_id, graceful=job is None or job.running)
                record.lifecycle.delete_graceful_sent = True
                await asyncio.to_thread(shared.store.put, record)
            elif not gone and not record.delete_hard_sent and shared.clock() >= record.delete_after:
                await shared.backend.cancel(record.job_id, graceful=False)
                record.delete_hard_sent = True
                await asyncio.to_thread(shared.store.put, record)
        except BackendUnavailable as exc:
            shared.mark_down(exc)
            return
        if gone:
            await self.forget(record)

    async def forget(self, record: PodRecord) -> None:
        """The pod is no more: its job dir removed, its record and everything kept about it dropped."""
        shared = self.shared
        with contextlib.suppress(BackendUnavailable):
            await shared.backend.cleanup(record)
        await asyncio.to_thread(shared.store.remove, record.uid)
        shared.locks.pop(record.uid, None)
        self.forget_status(record.uid)

    async def sweep_retention(self) -> None:
        """Finished pods never deleted expire after RetentionDays (at start, then hourly)."""
        shared = self.shared
        now = shared.clock()
        if self.retention_at and now - self.retention_at < SWEEP_INTERVAL_SECONDS:
            return
        self.retention_at = now
        days = shared.config.retention_days
        for record in expired(shared.store, now, days):
            async with shared.lock(record.uid):
                if shared.store.get(record.uid) is record:
                    log.info("pod %s/%s (%s) finished more than %g days ago and was never deleted: removing "
                             "its job dir", record.namespace, record.name, record.uid, days)
                    await self.forget(record)


def _grace_from_pod(raw: Any) -> float | None:
    if not isinstance(raw, dict):
        return None
    value = (raw.get("spec") or {}).get("terminationGracePeriodSeconds")
    meta = raw.get("metadata") or {}
    deletion = meta.get("deletionGracePeriodSeconds")
    for candidate in (deletion, value):
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate >= 0:
            return float(candidate)
    return None
