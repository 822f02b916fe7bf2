"""Create and submit: a pod is recorded before it is submitted, submitted once (an attempt that may have
reached the scheduler is looked up before the next), waits through an outage or a scheduler's limit
(retried with back-off) and fails at the submit deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from interlink_plugins.core import safefs
from interlink_plugins.core.errors import BackendUnavailable, PodSpecError, SubmitRejected
from interlink_plugins.core.model.names import job_dir_name
from interlink_plugins.core.model.pod import Pod, parse_create_body, pod_summary
from interlink_plugins.core.model.podfields import Facts, FieldReport, check_pod
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import submit_failed_status
from interlink_plugins.core.service.shared import Shared

log = logging.getLogger(__name__)

THROTTLE_BACKOFF_MAX = 60.0


class Submissions:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def create(self, body: Any) -> dict[str, str]:
        shared = self.shared
        backend, metrics = shared.backend, shared.metrics
        try:
            pod = parse_create_body(body)
            fields = check_pod(pod.raw, Facts.of(shared.config))
            fields.raise_refused()  # a field the backend cannot honour and the pod depends on: 422 naming it
        except PodSpecError as exc:
            metrics.create_failures.labels(backend.name, "Invalid").inc()
            raise exc from None
        async with shared.lock(pod.uid):
            existing = shared.store.get(pod.uid)
            if existing is not None:
                return {"PodUID": pod.uid, "PodJID": existing.pod_jid}
            # one trip to a worker thread: job dir, record, its write-through (each trip costs the loop)
            record = await safefs.run(self._prepare_and_record, pod, fields)
            if shared.down_since is None:
                await self.submit(record)
            else:
                # known outage: answer now; the poller probes and submits when the backend is back
                record.phase, record.last_error = "waiting-backend", shared.down_error
                record.lifecycle.waiting_reason = "BackendUnavailable"
                await asyncio.to_thread(shared.store.put, record)
            return {"PodUID": pod.uid, "PodJID": record.pod_jid}

    def _prepare_and_record(self, pod: Pod, fields: FieldReport) -> PodRecord:
        """The job dir (nothing left of it when the pod is refused) and the pod's record, written through
        before anything is submitted; blocking."""
        shared, backend, metrics = self.shared, self.shared.backend, self.shared.metrics
        job_dir = safefs.job_location(shared.config.data_root / job_dir_name(pod.namespace, pod.uid))
        fresh = safefs.lstat(job_dir) is None
        try:
            prepared = backend.prepare(pod)
        except Exception as exc:
            if fresh and safefs.lstat(job_dir) is not None:
                safefs.remove_tree(job_dir)  # a refused pod leaves nothing behind
            if isinstance(exc, PodSpecError):
                metrics.create_failures.labels(backend.name, "Forbidden" if exc.status == 403 else "Invalid").inc()
            if isinstance(exc, OSError):
                # the plugin's own data root failed it (full, not writable, a refused helpers dir): the
                # pod is fine, interLink retries on the 503, the admin reads the path in the log
                log.error("pod %s/%s: the job dir could not be written below %s: %s", pod.namespace, pod.name,
                          shared.config.data_root, exc)
                raise BackendUnavailable(backend.name, "writing the job dir",
                                         f"DataRootFolder {shared.config.data_root}: {exc}") from exc
            raise
        metrics.creates.labels(backend.name).inc()
        now = shared.clock()
        record = PodRecord.from_summary(pod_summary(pod), job_dir=str(prepared.job_dir), created_at=now,
                                        submit=dict(prepared.submit),
                                        deadline_at=now + shared.config.submit_deadline)
        if fields.warned:  # the pod runs without them: said once in the log, and in its containers' status
            log.warning("pod %s/%s (%s): %s", pod.namespace, pod.name, pod.uid, fields.log_line())
            record.lifecycle.field_notes = {name: list(notes) for name, notes in fields.by_container.items()}
        shared.store.put(record)
        return record

    async def submit(self, record: PodRecord) -> None:
        shared, state = self.shared, record.lifecycle
        backend, metrics = shared.backend, shared.metrics
        attempts = state.submit_attempts
        # a record stored as "submitting" is looked up before any resubmission after a crash (recovery): what
        # this attempt learns may be written behind; any other phase is written through
        behind = record.phase == "submitting"
        state.submit_attempts = attempts + 1
        # after a refusal the scheduler answered: no earlier attempt can have gone through
        unsure = attempts and not state.submit_refused
        state.submit_refused = False
        try:
            # an earlier attempt may have reached the scheduler (timeout, crash): never submit twice
            job_id = (await backend.find_job(record) if unsure else None) or await backend.submit(record)
        except BackendUnavailable as exc:
            shared.mark_down(exc)
            record.phase, record.last_error = "waiting-backend", str(exc)
            state.waiting_reason = "BackendUnavailable"
            metrics.create_failures.labels(backend.name, "BackendUnavailable").inc()
        except SubmitRejected as exc:
            record.last_error = exc.detail
            if exc.retryable:
                # a limit of the scheduler (QOS/association MaxSubmit...): wait, retried with back-off,
                # as long as the scheduler keeps saying so (the submit deadline is for outages)
                throttled = state.throttled
                now = shared.clock()
                record.phase = "waiting-backend"
                state.waiting_reason = "SubmitThrottled"
                state.submit_refused, state.throttled = True, throttled + 1
                state.retry_at = now + min(THROTTLE_BACKOFF_MAX, shared.config.poll_interval * 2**throttled)
                record.deadline_at = max(record.deadline_at, now + shared.config.submit_deadline)
                metrics.create_failures.labels(backend.name, "SubmitThrottled").inc()
            else:
                record.phase = "failed-submit"
                metrics.create_failures.labels(backend.name, "SubmitFailed").inc()
                record.final_status = submit_failed_status(record, state.images, backend.name)
        else:
            shared.mark_up()
            record.job_id, record.phase, record.last_error = job_id, "submitted", ""
            log.info("pod %s/%s (%s) submitted as %s job %s", record.namespace, record.name, record.uid,
                     backend.name, job_id)
        if behind:  # lost only to a kill -9 within milliseconds: the stored record still says "submitting"
            shared.store.put_soon(record)
        else:
            await asyncio.to_thread(shared.store.put, record)

    async def wait_for_backend(self, record: PodRecord) -> None:
        """A pod caught submitting while the backend is down: it waits like any pod created during an outage
        (retried by the poller, ended by SubmitDeadline). The lost attempt may have reached the scheduler, so
        the retry looks the job up before it submits."""
        record.phase, record.last_error = "waiting-backend", self.shared.down_error
        record.lifecycle.waiting_reason = "BackendUnavailable"
        record.lifecycle.submit_attempts = max(1, record.lifecycle.submit_attempts)
        record.lifecycle.submit_refused = False
        await asyncio.to_thread(self.shared.store.put, record)

    async def retry_pending(self, now: float) -> None:
        """The pods waiting for the backend: failed at their deadline, else submitted again when due (while
        the backend is down, the oldest only, as the probe)."""
        shared = self.shared
        for record in shared.store:
            if record.phase != "waiting-backend":
                continue
            state = record.lifecycle
            if now >= record.deadline_at:
                record.phase = "failed-submit"
                record.final_status = submit_failed_status(record, state.images, shared.backend.name)
                await asyncio.to_thread(shared.store.put, record)
                continue
            if state.waiting_reason == "SubmitThrottled" and now < state.retry_at:
                continue
            if shared.down_since is not None and state.waiting_reason == "BackendUnavailable":
                # one probe per interval is enough: try the oldest only until it goes through
                await self.submit(record)
                if shared.down_since is not None:
                    return
                continue
            await self.submit(record)
