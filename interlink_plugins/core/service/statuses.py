"""The status cache: each tracked pod's status built from its job and its runner's files after a poll, and
/status answered from it (a job gone from queue and accounting is JobVanished; a pod whose runner files hang
is reported stuck while the others go on; an outage is said in every waiting container)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.model.pod import pod_identity, spec_container_names
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import (
    ContainerFiles,
    StatusContext,
    build_pod_status,
    is_final,
    with_field_notes,
)
from interlink_plugins.core.service.shared import Shared
from interlink_plugins.core.service.sweep import StuckItems, bounded_map

log = logging.getLogger(__name__)

VANISHED_AFTER_SECONDS = 60.0
# runner files unchanged by their token are still read again this often (a token can miss a change on a
# file system with coarse timestamps whose clock is behind ours)
REREAD_SECONDS = 30.0
IMAGE_REASONS = frozenset({"ErrImagePull", "ErrImageNeverPull", "ImagePullBackOff"})
# one pod's runner files read longer than this is given up for this poll and reported (a job controls its
# job dir: a read there may hang in the kernel); the other pods go on
POD_FILES_SECONDS = 10.0


class StatusCache:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.cache: dict[str, dict[str, Any]] = {}
        self.missing_since: dict[str, float] = {}  # job id -> when the scheduler first had no record of it
        self.seen_running: set[str] = set()  # pods whose job ran: their runner files are read
        self.image_steps: dict[tuple[str, str], str] = {}  # (uid, container) -> image-step reason logged last
        # what a pod's cached status was built from, and when
        self.status_keys: dict[str, tuple[tuple[object, ...], float]] = {}
        self.stuck = StuckItems()  # pods whose runner files are still being read by a given-up worker
        self.reported: dict[str, tuple[str, ...]] = {}  # pod -> runner files refused, as last logged
        self.reported_stuck: set[str] = set()  # pods whose stuck read was logged

    def forget(self, uid: str) -> None:
        """Everything kept about a pod that is no more."""
        self.cache.pop(uid, None)
        self.seen_running.discard(uid)
        for key in [k for k in self.image_steps if k[0] == uid]:
            del self.image_steps[key]
        self.status_keys.pop(uid, None)
        self.reported.pop(uid, None)

    # --- answering ---------------------------------------------------------------------

    def status(self, pods: list[Any]) -> list[dict[str, Any]]:
        answer = []
        for index, raw in enumerate(pods):
            uid, _namespace, _name = pod_identity(raw, f"[{index}]")
            record = self.shared.store.get(uid)
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
                self.shared.store.put(record)

    def pod_status(self, record: PodRecord) -> dict[str, Any]:
        return with_field_notes(self._pod_status(record), record, self.shared.backend.name)

    def _pod_status(self, record: PodRecord) -> dict[str, Any]:
        if record.final_status is not None:
            return record.final_status
        cached = self.cache.get(record.uid)
        if cached is not None and not self.shared.down_since:
            return cached
        if cached is not None:
            return self._with_outage(cached)
        # nothing built yet (first poll after a start, or that poll is building it right now): the job
        # alone, without the per-container view, must never turn containers into terminated ones
        return build_pod_status(self._context(record, None), {}, record.lifecycle.images)

    def _with_outage(self, status: dict[str, Any]) -> dict[str, Any]:
        note = f"backend unreachable since {self.shared.down_since_text}"
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

    def _context(self, record: PodRecord, job: JobInfo | None) -> StatusContext:
        return StatusContext(
            record=record,
            job=job,
            backend=self.shared.backend.display_name,
            backend_down_since=self.shared.down_since_text,
            deleting=record.phase == "deleting",
        )

    def phases(self) -> list[str]:
        """Each pod's phase, for the metrics."""
        phases: list[str] = []
        for record in self.shared.store:
            status = record.final_status or self.cache.get(record.uid)
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

    # --- building (after each poll) ----------------------------------------------------

    async def refresh(self, tracked: list[PodRecord], now: float) -> None:
        """Every tracked pod's status built again: a terminal one is frozen in its record, the others cached."""
        for record, status, final in await self._build_statuses(tracked, now):
            if final:
                record.final_status = status
                await asyncio.to_thread(self.shared.store.put, record)
                self.cache.pop(record.uid, None)
            else:
                self.cache[record.uid] = status

    async def _build_statuses(
        self, tracked: list[PodRecord], now: float
    ) -> list[tuple[PodRecord, dict[str, Any], bool]]:
        """Every tracked pod's status, its runner files read in a worker thread with a time bound per pod:
        a pod whose files cannot be read in time is reported stuck and the others go on."""
        outcome = await bounded_map(tracked, lambda record: self._status_of(record, now), bound=POD_FILES_SECONDS,
                                    key=lambda record: record.uid, stuck=self.stuck)
        results = [result for _record, result in outcome.done]
        for record in outcome.given_up:
            since = self.stuck.since(record.uid) or time.monotonic()
            if record.uid not in self.reported_stuck:
                self.reported_stuck.add(record.uid)
                log.error("pod %s/%s (%s): reading its runner files in %s took over %gs; its status is kept and "
                          "the other pods go on", record.namespace, record.name, record.uid, record.job_dir,
                          POD_FILES_SECONDS)
            results.append((record, self._stuck_status(record, time.monotonic() - since), False))
        for record, exc in outcome.failed:
            log.error("pod %s/%s (%s): its status could not be built: %s", record.namespace, record.name,
                      record.uid, exc)
        self.reported_stuck &= {record.uid for record in outcome.given_up}
        for record, status, _final in results:
            self._log_image_steps(record, status)
        return results

    def _stuck_status(self, record: PodRecord, seconds: float) -> dict[str, Any]:
        """The last status of a pod whose runner files hang: what was not terminated waits, and says why."""
        last = self.cache.get(record.uid) or build_pod_status(self._context(record, None), {},
                                                              record.lifecycle.images)
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
        shared = self.shared
        job = shared.jobs.get(record.job_id)
        if job is None:
            first = self.missing_since.setdefault(record.job_id, now)
            if now - first >= max(VANISHED_AFTER_SECONDS, 3 * shared.config.poll_interval):
                job = JobInfo(record.job_id, "VANISHED", active=False, abnormal_reason="JobVanished",
                              detail="the job left the queue and accounting has no record of it")
        else:
            self.missing_since.pop(record.job_id, None)
        # a job that never ran has no runner files: its status comes from the job alone
        never_ran = job is not None and job.active and not job.running and record.uid not in self.seen_running
        if job is not None and job.running:
            self.seen_running.add(record.uid)
        version = "never-ran" if never_ran else shared.backend.files_version(record)
        # a status is a function of the job, the runner's files, the outage and the phase: while none
        # of them changed, the last one is reused (no file reads, no rebuild)
        key = None if version is None else (job, version, shared.down_since, record.phase)
        cached = self.cache.get(record.uid)
        previous = self.status_keys.get(record.uid)
        if (key is not None and cached is not None and previous is not None and previous[0] == key
                and (never_ran or now - previous[1] < REREAD_SECONDS)):
            return record, cached, False
        if never_ran:
            files: dict[str, ContainerFiles] = {}
        else:
            files = shared.backend.container_snapshot(record)
            self._report_refused(record, files)
            if job is None and shared.backend.runner_finished(record):
                job = JobInfo(record.job_id, "ENDED", active=False)
        if key is not None:
            self.status_keys[record.uid] = (key, now)
        status = build_pod_status(self._context(record, job), files, record.lifecycle.images)
        return record, status, job is not None and is_final(status, job)

    def _report_refused(self, record: PodRecord, files: dict[str, ContainerFiles]) -> None:
        """One log line when a pod's runner files start (or stop) being refused."""
        refused = tuple(f"{name}: {what}" for name, entry in sorted(files.items()) for what in entry.refused)
        if refused == self.reported.get(record.uid, ()):
            return
        self.reported[record.uid] = refused
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
            before = self.image_steps.get(key)
            if image_step and before != reason:
                self.image_steps[key] = reason
                logger = log.warning if reason in IMAGE_REASONS else log.info
                logger("pod %s/%s (%s) container %s: %s", record.namespace, record.name, record.uid, key[1],
                       message or reason)
            elif not image_step and before is not None:
                del self.image_steps[key]
                if before == "ContainerCreating":
                    log.info("pod %s/%s (%s) container %s: image ready", record.namespace, record.name,
                             record.uid, key[1])
