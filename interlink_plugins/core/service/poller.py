"""The poll loop: ONE scheduler query per interval for every tracked job, then the status cache rebuilt,
pending submissions retried and deletes advanced; and recovery at start (what a crash interrupted is
finished, jobs of ours the state does not know are adopted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from interlink_plugins import tracing
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob
from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.service.deletions import Deletions
from interlink_plugins.core.service.node import NodeStatus
from interlink_plugins.core.service.shared import Shared
from interlink_plugins.core.service.statuses import StatusCache
from interlink_plugins.core.service.submissions import Submissions
from interlink_plugins.metrics import directory_bytes

log = logging.getLogger(__name__)

POD_JSON_BYTES = 1 << 20
USAGE_SECONDS = 300.0
_CONTAINER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Poller:
    def __init__(
        self, shared: Shared, *, submissions: Submissions, deletions: Deletions, statuses: StatusCache,
        node: NodeStatus,
    ) -> None:
        self.shared = shared
        self.submissions = submissions
        self.deletions = deletions
        self.statuses = statuses
        self.node = node
        self.poll_count = 0
        self.usage_at = 0.0
        self.usage_task: asyncio.Task[None] | None = None

    async def poll_forever(self, first_poll: asyncio.Event | None = None) -> None:
        """Poll every interval; ``first_poll`` is set when the first round is over (or failed)."""
        shared = self.shared
        while True:
            started = time.monotonic()
            reached_backend = False
            try:
                await tracing.traced("poll", self.poll_once())
                reached_backend = shared.down_since is None
            except Exception:
                log.exception("poll failed")
            if first_poll is not None:
                first_poll.set()
            shared.metrics.poll_done(time.monotonic() - started, reached_backend=reached_backend)
            for housekeeping in (self.measure_usage, self.deletions.sweep_retention):
                try:  # nothing a job leaves in its job dir may end the poll loop
                    await housekeeping()
                except Exception:
                    log.exception("%s failed", housekeeping.__name__.lstrip("_").replace("_", " "))
            await asyncio.sleep(max(0.0, shared.config.poll_interval - (time.monotonic() - started)))

    async def poll_once(self) -> None:
        """ONE scheduler query for every tracked job, then statuses from the runner's files."""
        shared = self.shared
        self.poll_count += 1
        now = shared.clock()
        tracked = [r for r in shared.store if r.job_id and r.final_status is None]
        if tracked:
            try:
                jobs = await shared.backend.query([r.job_id for r in tracked])
            except BackendUnavailable as exc:
                shared.mark_down(exc)
                await self.submissions.retry_pending(now)
                return
            shared.mark_up()
            missing = [r.job_id for r in tracked if r.job_id not in jobs]
            if missing:
                with contextlib.suppress(BackendUnavailable):
                    jobs.update(await shared.backend.query_finished(missing))
            shared.jobs = jobs
        await self.node.refresh_resources(now)
        await self.submissions.retry_pending(now)
        # backend hook (a no-op by default): runner files on another host, fetched for all pods at once (SSH + sftp)
        if tracked:
            try:
                await shared.backend.prefetch_files(tracked)
            except BackendUnavailable as exc:
                log.warning("runner state not refreshed, statuses kept: %s", exc)
                return
        await self._remember_nodes(tracked)
        await self.statuses.refresh(tracked, now)
        await self.deletions.advance_all()

    async def _remember_nodes(self, tracked: list[PodRecord]) -> None:
        """The node a job runs on, kept in the state for `interlink-plugin pods` (a write when it changes)."""
        for record in tracked:
            job = self.shared.jobs.get(record.job_id)
            if job is not None and job.running and job.node and record.lifecycle.node != job.node:
                record.lifecycle.node = job.node
                await asyncio.to_thread(self.shared.store.put, record)

    async def measure_usage(self) -> None:
        """Data-root usage for the metrics: a tree walk, so at most every 5 minutes, in a thread of its own
        that the poll loop never waits for (a walk through what jobs made may take long, or hang)."""
        shared = self.shared
        now = shared.clock()
        if now - self.usage_at < USAGE_SECONDS or (self.usage_task is not None and not self.usage_task.done()):
            return
        self.usage_at = now

        async def measure() -> None:
            try:
                usage = await asyncio.to_thread(directory_bytes, shared.config.data_root)
            except Exception:
                log.exception("measuring the data root's usage failed")
                return
            shared.metrics.data_root_bytes.labels(shared.backend.name).set(usage)

        self.usage_task = asyncio.create_task(measure(), name="data-root-usage")

    # --- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a crash interrupted, and adopt jobs of ours the state does not know."""
        shared = self.shared
        for record in shared.store:
            if record.phase == "submitting":
                if shared.down_since is not None:
                    await self.submissions.wait_for_backend(record)
                    continue
                try:
                    job_id = await shared.backend.find_job(record)
                except BackendUnavailable as exc:
                    shared.mark_down(exc)
                    await self.submissions.wait_for_backend(record)
                    continue
                if job_id:
                    record.job_id, record.phase = job_id, "submitted"
                    shared.store.put(record)
                else:
                    await self.submissions.submit(record)
        try:
            adopted = await shared.backend.adopt()
        except BackendUnavailable as exc:
            shared.mark_down(exc)
            return
        for job in adopted:
            if shared.store.get(job.uid):
                continue
            adopted_record = await safefs.run(self._record_of_adopted, job)
            if adopted_record:
                log.info("adopted job %s of pod %s from the scheduler", job.job_id, job.uid)
                shared.store.put(adopted_record)

    def _record_of_adopted(self, job: AdoptedJob) -> PodRecord | None:
        """The record of an adopted job: from what the backend found, else its job dir's pod.json (read
        bounded and without following symlinks: the job may have rewritten it)."""
        summary: Any = job.summary
        if summary is None:
            try:
                summary = json.loads(safefs.read_bytes(safefs.job_location(job.job_dir) / "pod.json",
                                                       POD_JSON_BYTES) or b"")
            except (OSError, ValueError, safefs.Refused):
                summary = None
        if not isinstance(summary, dict) or not _container_names_ok(summary):
            log.warning("job %s of pod %s has no readable pod.json in %s; not adopted", job.job_id, job.uid,
                        job.job_dir)
            return None
        return PodRecord.from_summary(
            {**summary, "uid": job.uid}, job_dir=job.job_dir, created_at=self.shared.clock(), phase="submitted",
            job_id=job.job_id, layout=job.layout,
        )


def _container_names_ok(summary: dict[str, Any]) -> bool:
    """A pod.json read back from a job dir names its containers as Kubernetes does (they become paths)."""
    lists = [summary.get("init_names", []), summary.get("main_names", [])]
    return all(isinstance(names, list) and all(isinstance(n, str) and _CONTAINER_NAME.fullmatch(n) for n in names)
               for names in lists)
