"""What a backend supplies; the core (service, poller) does the lifecycle around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from interlink_plugins.core.pod import Pod
from interlink_plugins.core.safefs import Location
from interlink_plugins.core.state import Layout, PodRecord

if TYPE_CHECKING:
    from interlink_plugins.core.status import ContainerFiles


@dataclass(frozen=True)
class JobInfo:
    """One job as the scheduler reports it."""

    job_id: str
    state: str  # the scheduler's own word, e.g. "TIMEOUT", "Running"
    active: bool  # pending or running in the scheduler
    running: bool = False
    abnormal_reason: str = ""  # DeadlineExceeded, OOMKilled, NodeFail, Preempted, Cancelled, ... ("" = ended normally)
    detail: str = ""  # scheduler reason text (pending reason, hold reason)
    node: str = ""
    exit_code: int | None = None
    signal: int | None = None
    started_at: str = ""  # RFC 3339 UTC or ""
    finished_at: str = ""
    waiting_reason: str = ""  # for an active job that is not running: Pending, Held, Requeued, ...
    restarts: int = 0


@dataclass(frozen=True)
class PreparedJob:
    """A pod turned into files (job dir) and a submit payload (JSON-able, stored for deferred submission)."""

    job_dir: Path
    submit: Mapping[str, Any]
    files: Mapping[str, str] = field(default_factory=dict)  # rendered text for `render` (secrets masked)


@dataclass(frozen=True)
class AdoptedJob:
    """A job of ours found in the scheduler alone (recovery without state)."""

    uid: str
    job_id: str
    job_dir: str
    namespace: str = ""
    name: str = ""
    layout: Layout = "runner"  # who writes its job dir's state files (go: found by the start-up scan)
    summary: Mapping[str, Any] | None = None  # the pod as far as known; None: read the job dir's pod.json


@dataclass(frozen=True)
class Resources:
    cpus: int = 0
    memory_bytes: int = 0
    gpus: Mapping[str, int] = field(default_factory=dict)
    unavailable_reason: str = ""  # e.g. "partition debug is drained" -> a NoSchedule taint


class Backend(Protocol):
    name: str  # the config's Backend value
    display_name: str  # how pod statuses name the scheduler ("<display_name> job 12")

    def prepare(self, pod: Pod, *, write: bool = True) -> PreparedJob:
        """Validate the pod and write its job dir (blocking; the service runs it in a thread)."""
        ...

    async def submit(self, record: PodRecord) -> str:
        """Submit; returns the job id. BackendUnavailable / SubmitRejected on failure."""
        ...

    async def find_job(self, record: PodRecord) -> str | None:
        """Look the pod's job up by its UID (after a crash between submit and the state write)."""
        ...

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """ONE scheduler call for all ids; ids missing from the answer have left the queue."""
        ...

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Accounting for jobs that left the queue (never guessed)."""
        ...

    async def cancel(self, job_id: str, *, graceful: bool) -> None: ...

    async def cleanup(self, record: PodRecord) -> None:
        """Remove what the pod left behind once its job is gone (job dir, containers, volumes)."""
        ...

    async def adopt(self) -> list[AdoptedJob]: ...

    async def resources(self) -> Resources: ...

    # Per-container view. Batch backends answer from each record's ContainerStateSource
    # (core.runnerfiles.BySource); others (podman) from what their query() saw. Blocking: called from a
    # worker thread; every file access goes through core.safefs (the job controls its job dir).
    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]: ...

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> Location:
        """The CRI-format log of the container's current (or previous) run (opened through safefs)."""
        ...

    def container_started(self, record: PodRecord, container: str) -> bool: ...

    def runner_finished(self, record: PodRecord) -> bool:
        """The pod ran to its end by its own account (resolves a job the scheduler forgot)."""
        ...
