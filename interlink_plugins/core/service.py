"""The backend-neutral lifecycle: create, status, delete, logs and ping around one Backend.

Routes call these methods; the poll loop keeps the status cache fresh with ONE scheduler query
per interval. Nothing here knows SLURM, HTCondor or Podman.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import FileIO
from typing import TYPE_CHECKING, Any

from interlink_plugins import tracing
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, Backend, JobInfo, Resources
from interlink_plugins.core.errors import BackendUnavailable, LogRequestError, PodSpecError, SubmitRejected
from interlink_plugins.core.logs import LogOptions, LogSource, follow_log, iter_log
from interlink_plugins.core.names import job_dir_name
from interlink_plugins.core.pod import parse_create_body, pod_identity, pod_summary, spec_container_names
from interlink_plugins.core.podfields import Facts, check_pod
from interlink_plugins.core.retention import SWEEP_INTERVAL_SECONDS, expired
from interlink_plugins.core.state import PodRecord, StateStore
from interlink_plugins.core.status import (
    ContainerFiles,
    StatusContext,
    build_pod_status,
    epoch_rfc3339,
    is_final,
    submit_failed_status,
    with_field_notes,
)
from interlink_plugins.core.sweep import StuckItems, bounded_map
from interlink_plugins.metrics import Metrics, directory_bytes

if TYPE_CHECKING:  # core reads the config, it does not import it
    from interlink_plugins.config import Config

log = logging.getLogger(__name__)

BACKEND_TAINT = "interlink.eu/backend-unavailable"
PARTITION_TAINT = "interlink.eu/partition-unavailable"
VANISHED_AFTER_SECONDS = 60.0
THROTTLE_BACKOFF_MAX = 60.0
# runner files unchanged by their token are still read again this often (a token can miss a change on a
# file system with coarse timestamps whose clock is behind ours)
REREAD_SECONDS = 30.0
FIRST_RESOURCES_SECONDS = 5.0
FIRST_POLL_SECONDS = 5.0
IMAGE_REASONS = frozenset({"ErrImagePull", "ErrImageNeverPull", "ImagePullBackOff"})
# one pod's runner files read longer than this is given up for this poll and reported (a job controls its
# job dir: a read there may hang in the kernel); the other pods go on
POD_FILES_SECONDS = 10.0
POD_JSON_BYTES = 1 << 20


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
        self.config = config
        self.metrics = metrics or Metrics(backend.name)
        self._usage_at = 0.0
        self._retention_at = 0.0
        self.backend = backend
        self.store = store
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, JobInfo] = {}
        self._missing_since: dict[str, float] = {}
        self._down_since: float | None = None
        self._down_error = ""
        self._resources = Resources()
        self._resources_at = 0.0
        self._poll_task: asyncio.Task[None] | None = None
        self._usage_task: asyncio.Task[None] | None = None
        self._seen_running: set[str] = set()  # pods whose job ran: their runner files are read
        self._image_steps: dict[tuple[str, str], str] = {}  # (uid, container) -> image-step reason logged last
        # what a pod's cached status was built from, and when
        self._status_keys: dict[str, tuple[tuple[object, ...], float]] = {}
        self._stuck = StuckItems()  # pods whose runner files are still being read by a given-up worker
        self._reported: dict[str, tuple[str, ...]] = {}  # pod -> runner files refused, as last logged
        self._reported_stuck: set[str] = set()  # pods whose stuck read was logged
        self.metrics.track_pods(self._phases)
        self.metrics.poll_interval.labels(backend.name).set(config.poll_interval)
        self.poll_count = 0

    # --- lifecycle ---------------------------------------------------------------------

    def reconfigure(self, config: Config, policy: Any) -> None:
        """Swap the reloadable settings (SIGHUP); the backend picks them up on the next create."""
        self.config = config
        if hasattr(self.backend, "config"):
            self.backend.config = config
        if hasattr(self.backend, "policy"):
            self.backend.policy = policy

    async def start(self) -> None:
        await self.recover()
        # interLink's first ping gets the capacity (without it the node keeps its configured one until the
        # next): asked before serving, for a few seconds at most; the poller retries what this misses
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._refresh_resources(self.clock()), FIRST_RESOURCES_SECONDS)
        # the first poll before serving, for a few seconds at most: until it, a status is built without the
        # job's state, so after a restart a running pod would read ContainerCreating for a moment
        first_poll = asyncio.Event()
        self._poll_task = asyncio.create_task(self._poll_forever(first_poll), name="poller")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_poll.wait(), FIRST_POLL_SECONDS)

    async def stop(self) -> None:
        """Stop polling. Jobs are never touched by a plugin stop."""
        for task in (self._poll_task, self._usage_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.store.close()

    async def recover(self) -> None:
        """Finish what a crash interrupted, and adopt jobs of ours the state does not know."""
        for record in self.store:
            if record.phase == "submitting":
                if self._down_since is not None:
                    await self._wait_for_backend(record)
                    continue
                try:
                    job_id = await self.backend.find_job(record)
                except BackendUnavailable as exc:
                    self._mark_down(exc)
                    await self._wait_for_backend(record)
                    continue
                if job_id:
                    record.job_id, record.phase = job_id, "submitted"
                    self.store.put(record)
                else:
                    await self._submit(record)
        try:
            adopted = await self.backend.adopt()
        except BackendUnavailable as exc:
            self._mark_down(exc)
            return
        for job in adopted:
            if self.store.get(job.uid):
                continue
            adopted_record = await safefs.run(self._record_of_adopted, job)
            if adopted_record:
                log.info("adopted job %s of pod %s from the scheduler", job.job_id, job.uid)
                self.store.put(adopted_record)

    async def _wait_for_backend(self, record: PodRecord) -> None:
        """A pod caught submitting while the backend is down: it waits like any pod created during an outage
        (retried by the poller, ended by SubmitDeadline). The lost attempt may have reached the scheduler, so
        the retry looks the job up before it submits."""
        record.phase, record.last_error = "waiting-backend", self._down_error
        record.meta["waiting_reason"] = "BackendUnavailable"
        record.meta["submit_attempts"] = max(1, int(record.meta.get("submit_attempts", 0)))
        record.meta.pop("submit_refused", None)
        await asyncio.to_thread(self.store.put, record)

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
            {**summary, "uid": job.uid}, job_dir=job.job_dir, created_at=self.clock(), phase="submitted",
            job_id=job.job_id, layout=job.layout,
        )

    # --- create ------------------------------------------------------------------------

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    async def create(self, body: Any) -> dict[str, str]:
        try:
            pod = parse_create_body(body)
            fields = check_pod(pod.raw, Facts.of(self.config))
            fields.raise_refused()  # a field the backend cannot honour and the pod depends on: 422 naming it
        except PodSpecError as exc:
            self.metrics.create_failures.labels(self.backend.name, "Invalid").inc()
            raise exc from None
        async with self._lock(pod.uid):
            existing = self.store.get(pod.uid)
            if existing is not None:
                return {"PodUID": pod.uid, "PodJID": existing.pod_jid}
            job_dir = safefs.job_location(self.config.data_root / job_dir_name(pod.namespace, pod.uid))
            fresh = await safefs.run(safefs.lstat, job_dir) is None
            try:
                prepared = await asyncio.to_thread(self.backend.prepare, pod)
            except Exception as exc:
                if fresh and await safefs.run(safefs.lstat, job_dir) is not None:
                    # a refused pod leaves nothing behind: what prepare wrote before it refused goes
                    await safefs.run(safefs.remove_tree, job_dir)
                if isinstance(exc, PodSpecError):
                    reason = "Forbidden" if exc.status == 403 else "Invalid"
                    self.metrics.create_failures.labels(self.backend.name, reason).inc()
                raise
            self.metrics.creates.labels(self.backend.name).inc()
            now = self.clock()
            record = PodRecord.from_summary(
                pod_summary(pod),
                job_dir=str(prepared.job_dir),
                created_at=now,
                submit=dict(prepared.submit),
                deadline_at=now + self.config.submit_deadline,
            )
            if fields.warned:  # the pod runs without them: said once in the log, and in its containers' status
                log.warning("pod %s/%s (%s): %s", pod.namespace, pod.name, pod.uid, fields.log_line())
                record.meta["field_notes"] = {name: list(notes) for name, notes in fields.by_container.items()}
            await asyncio.to_thread(self.store.put, record)
            if self._down_since is None:
                await self._submit(record)
            else:
                # known outage: answer now; the poller probes and submits when the backend is back
                record.phase, record.last_error = "waiting-backend", self._down_error
                record.meta["waiting_reason"] = "BackendUnavailable"
                await asyncio.to_thread(self.store.put, record)
            return {"PodUID": pod.uid, "PodJID": record.pod_jid}

    async def _submit(self, record: PodRecord) -> None:
        attempts = int(record.meta.get("submit_attempts", 0))
        record.meta["submit_attempts"] = attempts + 1
        # after a refusal the scheduler answered: no earlier attempt can have gone through
        unsure = attempts and not record.meta.pop("submit_refused", False)
        try:
            # an earlier attempt may have reached the scheduler (timeout, crash): never submit twice
            job_id = (await self.backend.find_job(record) if unsure else None) or await self.backend.submit(record)
        except BackendUnavailable as exc:
            self._mark_down(exc)
            record.phase, record.last_error = "waiting-backend", str(exc)
            record.meta["waiting_reason"] = "BackendUnavailable"
            self.metrics.create_failures.labels(self.backend.name, "BackendUnavailable").inc()
        except SubmitRejected as exc:
            record.last_error = exc.detail
            if exc.retryable:
                # a limit of the scheduler (QOS/association MaxSubmit...): wait, retried with back-off,
                # as long as the scheduler keeps saying so (the submit deadline is for outages)
                throttled = int(record.meta.get("throttled", 0))
                now = self.clock()
                record.phase = "waiting-backend"
                record.meta["waiting_reason"] = "SubmitThrottled"
                record.meta.update(submit_refused=True, throttled=throttled + 1)
                record.meta["retry_at"] = now + min(THROTTLE_BACKOFF_MAX, self.config.poll_interval * 2**throttled)
                record.deadline_at = max(record.deadline_at, now + self.config.submit_deadline)
                self.metrics.create_failures.labels(self.backend.name, "SubmitThrottled").inc()
            else:
                record.phase = "failed-submit"
                self.metrics.create_failures.labels(self.backend.name, "SubmitFailed").inc()
                record.final_status = submit_failed_status(record, record.meta.get("images", {}), self.backend.name)
        else:
            self._mark_up()
            record.job_id, record.phase, record.last_error = job_id, "submitted", ""
            log.info("pod %s/%s (%s) submitted as %s job %s", record.namespace, record.name, record.uid,
                     self.backend.name, job_id)
        await asyncio.to_thread(self.store.put, record)

    # --- status ------------------------------------------------------------------------

    def status(self, pods: list[Any]) -> list[dict[str, Any]]:
        answer = []
        for index, raw in enumerate(pods):
            uid, _namespace, _name = pod_identity(raw, f"[{index}]")
            record = self.store.get(uid)
            if record is None:
                continue  # interLink keeps the last state it has ("No status available")
            if not record.name:
                self._learn_identity(record, raw)
            answer.append(self.pod_status(record))
        return answer

    def _learn_identity(self, record: PodRecord, raw: Any) -> None:
        """A job dir adopted from the Go plugin does not name its pod (nor always every container)."""
        with contextlib.suppress(ValueError):
            _uid, _namespace, name = pod_identity(raw)
            init, main = spec_container_names(raw)
            if name:
                record.name = name
                if main:
                    record.init_names, record.main_names = init, main
                self.store.put(record)

    def pod_status(self, record: PodRecord) -> dict[str, Any]:
        return with_field_notes(self._pod_status(record), record, self.backend.name)

    def _pod_status(self, record: PodRecord) -> dict[str, Any]:
        if record.final_status is not None:
            return record.final_status
        cached = self._cache.get(record.uid)
        if cached is not None and not self._down_since:
            return cached
        if cached is not None:
            return self._with_outage(cached)
        # nothing built yet (first poll after a start, or that poll is building it right now): the job
        # alone, without the per-container view, must never turn containers into terminated ones
        return build_pod_status(self._context(record, None), {}, record.meta.get("images", {}))

    def _with_outage(self, status: dict[str, Any]) -> dict[str, Any]:
        note = f"backend unreachable since {self.down_since_text}"
        entries = []
        for entry in status["containers"] + status["initContainers"]:
            entry = dict(entry)
            state = entry["state"]
            if "waiting" in state and note not in state["waiting"].get("message", ""):
                waiting = dict(state["waiting"])
                waiting["message"] = f"{waiting.get('message', '')}; {note}".lstrip("; ")
                entry["state"] = {"waiting": waiting}
            entries.append(entry)
        count = len(status["containers"])
        return {**status, "containers": entries[:count], "initContainers": entries[count:]}

    @property
    def down_since_text(self) -> str:
        return epoch_rfc3339(self._down_since) if self._down_since else ""

    def _context(self, record: PodRecord, job: JobInfo | None) -> StatusContext:
        return StatusContext(
            record=record,
            job=job,
            backend=self.backend.display_name,
            backend_down_since=self.down_since_text,
            deleting=record.phase == "deleting",
        )

    def _phases(self) -> list[str]:
        phases: list[str] = []
        for record in self.store:
            status = record.final_status or self._cache.get(record.uid)
            if record.phase in ("deleting", "waiting-backend"):
                phases.append(record.phase)
            elif status is None:
                phases.append("pending")
            else:
                states = [c["state"] for c in status["containers"]]
                if all("terminated" in st for st in states):
                    failed = any(st["terminated"].get("exitCode") for st in states)
                    phases.append("failed" if failed else "succeeded")
                elif any("running" in st for st in states):
                    phases.append("running")
                else:
                    phases.append("pending")
        return phases

    def _mark_down(self, exc: BackendUnavailable) -> None:
        self.metrics.backend_up.labels(self.backend.name).set(0)
        if self._down_since is None:
            self._down_since = self.clock()
            log.error("backend %s unreachable: %s", self.backend.name, exc)
        self._down_error = str(exc)

    def _mark_up(self) -> None:
        self.metrics.backend_up.labels(self.backend.name).set(1)
        if self._down_since is not None:
            log.info("backend %s reachable again", self.backend.name)
        self._down_since = None
        self._down_error = ""

    # --- ping --------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in self.config.taints]
        if self._down_since is not None:
            taints.append({"key": BACKEND_TAINT, "value": "true", "effect": "NoSchedule"})
        resources = self._resources
        if resources.unavailable_reason:
            taints.append({"key": PARTITION_TAINT, "value": "true", "effect": "NoSchedule"})
        answer: dict[str, Any] = {"status": "ok", "taints": taints}
        if self._down_since is None:
            payload: dict[str, Any] = {}
            cpus = resources.cpus
            if self.config.max_cpus:
                cpus = min(cpus, self.config.max_cpus)
            memory_mib = resources.memory_bytes // 2**20
            if self.config.max_memory_mib:
                memory_mib = min(memory_mib, self.config.max_memory_mib)
            if cpus > 0:
                payload["cpu"] = str(cpus)
            if memory_mib > 0:
                payload["memory"] = f"{memory_mib}Mi"
            accelerators = [
                {"resourceType": kind, "available": str(count)} for kind, count in resources.gpus.items() if count > 0
            ]
            if accelerators:
                payload["accelerators"] = accelerators
            if payload:
                answer["resources"] = payload
        return answer

    # --- delete ------------------------------------------------------------------------

    async def delete(self, raw: Any) -> str:
        uid, namespace, name = pod_identity(raw)
        async with self._lock(uid):
            record = self.store.get(uid)
            if record is None:
                return f"pod {namespace}/{name} ({uid}) is not known; nothing to delete"
            if not record.job_id:
                await self._forget(record)
                return f"pod {namespace}/{name} ({uid}) deleted before submission"
            grace = min(float(record.meta.get("grace_seconds", 30)), self.config.grace_period_cap)
            spec_grace = _grace_from_pod(raw)
            if spec_grace is not None:
                grace = min(spec_grace, self.config.grace_period_cap)
            record.phase = "deleting"
            record.delete_after = self.clock() + grace
            if record.final_status is None:
                record.meta["delete_graceful_sent"] = False
            await asyncio.to_thread(self.store.put, record)
            await self._advance_delete(record)
        return f"pod {namespace}/{name} ({uid}): {self.backend.name} job {record.job_id} is being deleted"

    async def _advance_delete(self, record: PodRecord) -> None:
        """One step of a delete; retried by the poller (a tombstone while the backend is down)."""
        job = self._jobs.get(record.job_id)
        gone = record.final_status is not None or (job is not None and not job.active)
        try:
            if not gone and not record.meta.get("delete_graceful_sent"):
                # a job that never ran has nothing to signal: plain cancel
                await self.backend.cancel(record.job_id, graceful=job is None or job.running)
                record.meta["delete_graceful_sent"] = True
                await asyncio.to_thread(self.store.put, record)
            elif not gone and not record.delete_hard_sent and self.clock() >= record.delete_after:
                await self.backend.cancel(record.job_id, graceful=False)
                record.delete_hard_sent = True
                await asyncio.to_thread(self.store.put, record)
        except BackendUnavailable as exc:
            self._mark_down(exc)
            return
        if gone:
            await self._forget(record)

    async def _forget(self, record: PodRecord) -> None:
        with contextlib.suppress(BackendUnavailable):
            await self.backend.cleanup(record)
        await asyncio.to_thread(self.store.remove, record.uid)
        self._cache.pop(record.uid, None)
        self._locks.pop(record.uid, None)
        self._seen_running.discard(record.uid)
        for key in [k for k in self._image_steps if k[0] == record.uid]:
            del self._image_steps[key]
        self._status_keys.pop(record.uid, None)
        self._reported.pop(record.uid, None)

    # --- logs --------------------------------------------------------------------------

    def _log_target(self, request: LogRequest) -> tuple[PodRecord, safefs.Location]:
        """The pod and where its container's log is (blocking: the backend may look at the job dir)."""
        record = self.store.get(request.pod_uid)
        if record is None:
            raise LogRequestError(f"pod {request.pod_uid} is not known to this plugin", status=404)
        if request.container not in record.init_names + record.main_names:
            raise LogRequestError(f"container {request.container} is not in pod {record.namespace}/{record.name}")
        if request.previous:
            return record, self.backend.log_file(record, request.container, previous=True)
        if not self.backend.container_started(record, request.container):
            reason = self._waiting_reason(record, request.container)
            raise LogRequestError(f"container {request.container} is waiting to start: {reason}")
        return record, self.backend.log_file(record, request.container, previous=False)

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
        # optional backend hook: bring a live copy of a log the plugin host cannot see (HTCondor spool mode)
        fetch = getattr(self.backend, "fetch_log", None)
        record = self.store.get(request.pod_uid)
        if fetch is not None and record is not None and request.container in record.init_names + record.main_names:
            await fetch(record, request.container, previous=request.previous)
        _record, _location, handle = await self._open_log(request)
        if handle is None:  # not written yet
            return b"", None
        chunks = iter_log(handle, self._log_options(request))
        first = await asyncio.to_thread(next, chunks, b"")
        second = await asyncio.to_thread(next, chunks, b"") if first else b""
        if not second:
            chunks.close()
            self.metrics.log_bytes.labels(self.backend.name).inc(len(first))
            return first, None
        return b"", self._counted(_blocks(chunks, first, second))

    async def open_follow(self, request: LogRequest) -> AsyncIterator[bytes]:
        """A Follow, opened before the response starts (errors are answered, not streamed), so that a
        backend streaming the log from another host (SSH) can still answer 503 when it is unreachable."""
        opener = getattr(self.backend, "open_log_feed", None)  # optional backend hook
        if opener is not None and request.previous:  # a finished run: nothing more will come
            data, rest = await self.open_read(request)
            return rest if rest is not None else _one_chunk(data)
        record, location, handle = await self._open_log(request)
        if opener is None:
            return self._follow(record, request, location, handle)
        if handle is not None:
            handle.close()
        feed = await opener(record, request.container)
        # a private local file the backend keeps appending to (closed with the stream)
        return self._follow(record, request, feed.path, None, close=feed.close)

    def _follow(
        self,
        record: PodRecord,
        request: LogRequest,
        source: LogSource,
        handle: FileIO | None,
        *,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[bytes]:
        uid, container = record.uid, request.container

        def finished() -> bool:
            current = self.store.get(uid)
            if current is None or current.final_status is not None:
                return True
            return "terminated" in self._container_state(current, container)

        stream: AsyncIterator[bytes] = follow_log(source, self._log_options(request), finished=finished, first=handle)
        # optional backend hook: keep that live copy fresh while the stream lasts
        keep_fresh = getattr(self.backend, "keep_log_fresh", None)
        if keep_fresh is not None:
            stream = keep_fresh(record, container, stream)
        if close is not None:
            stream = _closing(stream, close)
        return self._counted(stream)

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        counter = self.metrics.log_bytes.labels(self.backend.name)
        async for chunk in chunks:
            counter.inc(len(chunk))
            yield chunk

    # --- polling -----------------------------------------------------------------------

    async def _poll_forever(self, first_poll: asyncio.Event | None = None) -> None:
        while True:
            started = time.monotonic()
            reached_backend = False
            try:
                await tracing.traced("poll", self.poll_once())
                reached_backend = self._down_since is None
            except Exception:
                log.exception("poll failed")
            if first_poll is not None:
                first_poll.set()
            self.metrics.poll_done(time.monotonic() - started, reached_backend=reached_backend)
            for housekeeping in (self._measure_usage, self._sweep_retention):
                try:  # nothing a job leaves in its job dir may end the poll loop
                    await housekeeping()
                except Exception:
                    log.exception("%s failed", housekeeping.__name__.lstrip("_").replace("_", " "))
            await asyncio.sleep(max(0.0, self.config.poll_interval - (time.monotonic() - started)))

    async def poll_once(self) -> None:
        """ONE scheduler query for every tracked job, then statuses from the runner's files."""
        self.poll_count += 1
        now = self.clock()
        tracked = [r for r in self.store if r.job_id and r.final_status is None]
        if tracked:
            try:
                jobs = await self.backend.query([r.job_id for r in tracked])
            except BackendUnavailable as exc:
                self._mark_down(exc)
                await self._retry_pending(now)
                return
            self._mark_up()
            missing = [r.job_id for r in tracked if r.job_id not in jobs]
            if missing:
                with contextlib.suppress(BackendUnavailable):
                    jobs.update(await self.backend.query_finished(missing))
            self._jobs = jobs
        await self._refresh_resources(now)
        await self._retry_pending(now)
        # optional backend hook: runner files on another host, fetched for all pods at once (SSH + sftp)
        prefetch = getattr(self.backend, "prefetch_files", None)
        if prefetch is not None and tracked:
            try:
                await prefetch(tracked)
            except BackendUnavailable as exc:
                log.warning("runner state not refreshed, statuses kept: %s", exc)
                return
        await self._remember_nodes(tracked)
        statuses = await self._build_statuses(tracked, now)
        for record, status, final in statuses:
            if final:
                record.final_status = status
                await asyncio.to_thread(self.store.put, record)
                self._cache.pop(record.uid, None)
            else:
                self._cache[record.uid] = status
        for record in self.store:
            if record.phase == "deleting":
                await self._advance_delete(record)

    async def _remember_nodes(self, tracked: list[PodRecord]) -> None:
        """The node a job runs on, kept in the state for `interlink-plugin pods` (a write when it changes)."""
        for record in tracked:
            job = self._jobs.get(record.job_id)
            if job is not None and job.running and job.node and record.meta.get("node") != job.node:
                record.meta["node"] = job.node
                await asyncio.to_thread(self.store.put, record)

    async def _build_statuses(
        self, tracked: list[PodRecord], now: float
    ) -> list[tuple[PodRecord, dict[str, Any], bool]]:
        """Every tracked pod's status, its runner files read in a worker thread with a time bound per pod:
        a pod whose files cannot be read in time is reported stuck and the others go on."""
        outcome = await bounded_map(tracked, lambda record: self._status_of(record, now), bound=POD_FILES_SECONDS,
                                    key=lambda record: record.uid, stuck=self._stuck)
        results = [result for _record, result in outcome.done]
        for record in outcome.given_up:
            since = self._stuck.since(record.uid) or time.monotonic()
            if record.uid not in self._reported_stuck:
                self._reported_stuck.add(record.uid)
                log.error("pod %s/%s (%s): reading its runner files in %s took over %gs; its status is kept and "
                          "the other pods go on", record.namespace, record.name, record.uid, record.job_dir,
                          POD_FILES_SECONDS)
            results.append((record, self._stuck_status(record, time.monotonic() - since), False))
        for record, exc in outcome.failed:
            log.error("pod %s/%s (%s): its status could not be built: %s", record.namespace, record.name,
                      record.uid, exc)
        self._reported_stuck &= {record.uid for record in outcome.given_up}
        for record, status, _final in results:
            self._log_image_steps(record, status)
        return results

    def _stuck_status(self, record: PodRecord, seconds: float) -> dict[str, Any]:
        """The last status of a pod whose runner files hang: what was not terminated waits, and says why."""
        last = self._cache.get(record.uid) or build_pod_status(self._context(record, None), {},
                                                               record.meta.get("images", {}))
        note = (f"RunnerFilesStuck: reading the runner files in {record.job_dir} has not ended for "
                f"{max(seconds, POD_FILES_SECONDS):.0f}s")
        entries = []
        for entry in last["containers"] + last["initContainers"]:
            if "terminated" not in entry["state"]:
                entry = {**entry, "state": {"waiting": {"reason": "RunnerFilesStuck", "message": note}},
                         "ready": False, "started": False}
            entries.append(entry)
        count = len(last["containers"])
        return {**last, "containers": entries[:count], "initContainers": entries[count:]}

    def _status_of(self, record: PodRecord, now: float) -> tuple[PodRecord, dict[str, Any], bool]:
        """One pod's status from its job and runner files (blocking: a worker thread)."""
        files_version = getattr(self.backend, "files_version", None)  # optional backend hook
        job = self._jobs.get(record.job_id)
        if job is None:
            first = self._missing_since.setdefault(record.job_id, now)
            if now - first >= max(VANISHED_AFTER_SECONDS, 3 * self.config.poll_interval):
                job = JobInfo(record.job_id, "VANISHED", active=False, abnormal_reason="JobVanished",
                              detail="the job left the queue and accounting has no record of it")
        else:
            self._missing_since.pop(record.job_id, None)
        # a job that never ran has no runner files: its status comes from the job alone
        never_ran = job is not None and job.active and not job.running and record.uid not in self._seen_running
        if job is not None and job.running:
            self._seen_running.add(record.uid)
        version = "never-ran" if never_ran else files_version(record) if files_version else None
        # a status is a function of the job, the runner's files, the outage and the phase: while none
        # of them changed, the last one is reused (no file reads, no rebuild)
        key = None if version is None else (job, version, self._down_since, record.phase)
        cached = self._cache.get(record.uid)
        previous = self._status_keys.get(record.uid)
        if (key is not None and cached is not None and previous is not None and previous[0] == key
                and (never_ran or now - previous[1] < REREAD_SECONDS)):
            return record, cached, False
        if never_ran:
            files: dict[str, ContainerFiles] = {}
        else:
            files = self.backend.container_snapshot(record)
            self._report_refused(record, files)
            if job is None and self.backend.runner_finished(record):
                job = JobInfo(record.job_id, "ENDED", active=False)
        if key is not None:
            self._status_keys[record.uid] = (key, now)
        status = build_pod_status(self._context(record, job), files, record.meta.get("images", {}))
        return record, status, job is not None and is_final(status, job)

    def _report_refused(self, record: PodRecord, files: dict[str, ContainerFiles]) -> None:
        """One log line when a pod's runner files start (or stop) being refused."""
        refused = tuple(f"{name}: {what}" for name, entry in sorted(files.items()) for what in entry.refused)
        if refused == self._reported.get(record.uid, ()):
            return
        self._reported[record.uid] = refused
        if refused:
            log.warning("pod %s/%s (%s): runner files refused in its job dir (not regular files, never "
                        "followed): %s", record.namespace, record.name, record.uid, ", ".join(refused))

    def _log_image_steps(self, record: PodRecord, status: Mapping[str, Any]) -> None:
        """The plugin log shows each container's image step as the status shows it (pulling, failed, back-off),
        once per change: on runner-based backends the pull happens inside the job."""
        for entry in [*status.get("initContainers", []), *status.get("containers", [])]:
            key = (record.uid, str(entry.get("name", "")))
            waiting = (entry.get("state") or {}).get("waiting") or {}
            reason, message = str(waiting.get("reason", "")), str(waiting.get("message", ""))
            image_step = reason in IMAGE_REASONS or (reason == "ContainerCreating" and "pulling image" in message)
            before = self._image_steps.get(key)
            if image_step and before != reason:
                self._image_steps[key] = reason
                logger = log.warning if reason in IMAGE_REASONS else log.info
                logger("pod %s/%s (%s) container %s: %s", record.namespace, record.name, record.uid, key[1],
                       message or reason)
            elif not image_step and before is not None:
                del self._image_steps[key]
                if before == "ContainerCreating":
                    log.info("pod %s/%s (%s) container %s: image ready", record.namespace, record.name,
                             record.uid, key[1])

    async def _measure_usage(self) -> None:
        """Data-root usage for the metrics: a tree walk, so at most every 5 minutes, in a thread of its own
        that the poll loop never waits for (a walk through what jobs made may take long, or hang)."""
        now = self.clock()
        if now - self._usage_at < 300 or (self._usage_task is not None and not self._usage_task.done()):
            return
        self._usage_at = now

        async def measure() -> None:
            try:
                usage = await asyncio.to_thread(directory_bytes, self.config.data_root)
            except Exception:
                log.exception("measuring the data root's usage failed")
                return
            self.metrics.data_root_bytes.labels(self.backend.name).set(usage)

        self._usage_task = asyncio.create_task(measure(), name="data-root-usage")

    async def _sweep_retention(self) -> None:
        """Finished pods never deleted expire after RetentionDays (at start, then hourly)."""
        now = self.clock()
        if self._retention_at and now - self._retention_at < SWEEP_INTERVAL_SECONDS:
            return
        self._retention_at = now
        for record in expired(self.store, now, self.config.retention_days):
            async with self._lock(record.uid):
                if self.store.get(record.uid) is record:
                    log.info("pod %s/%s (%s) finished more than %g days ago and was never deleted: removing "
                             "its job dir", record.namespace, record.name, record.uid, self.config.retention_days)
                    await self._forget(record)

    async def _refresh_resources(self, now: float) -> None:
        if now - self._resources_at < max(30.0, self.config.poll_interval):
            return
        try:
            self._resources = await self.backend.resources()
            self._resources_at = now
            self._mark_up()
        except BackendUnavailable as exc:
            self._mark_down(exc)

    async def _retry_pending(self, now: float) -> None:
        for record in self.store:
            if record.phase != "waiting-backend":
                continue
            if now >= record.deadline_at:
                record.phase = "failed-submit"
                record.final_status = submit_failed_status(record, record.meta.get("images", {}), self.backend.name)
                await asyncio.to_thread(self.store.put, record)
                continue
            if record.meta.get("waiting_reason") == "SubmitThrottled" and now < record.meta.get("retry_at", 0):
                continue
            if self._down_since is not None and record.meta.get("waiting_reason") == "BackendUnavailable":
                # one probe per interval is enough: try the oldest only until it goes through
                await self._submit(record)
                if self._down_since is not None:
                    return
                continue
            await self._submit(record)


_CONTAINER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _container_names_ok(summary: dict[str, Any]) -> bool:
    """A pod.json read back from a job dir names its containers as Kubernetes does (they become paths)."""
    lists = [summary.get("init_names", []), summary.get("main_names", [])]
    return all(isinstance(names, list) and all(isinstance(n, str) and _CONTAINER_NAME.fullmatch(n) for n in names)
               for names in lists)


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
