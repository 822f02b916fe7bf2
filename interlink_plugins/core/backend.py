"""What a backend supplies; the core (service, poller) does the lifecycle around it.

A backend is three declared seams: a ``Scheduler`` (jobs in, job states out), a ``ContainerStateSource``
(each container's state) and a ``LogSource`` (each container's log). ``BackendDefaults`` gives the
optional hooks their documented defaults; the service calls every method unconditionally.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from interlink_plugins.core.model.pod import Pod
from interlink_plugins.core.records.state import Layout, PodRecord
from interlink_plugins.core.safefs import Location

if TYPE_CHECKING:
    from interlink_plugins.config import Config
    from interlink_plugins.core.commands.remotefiles import LogFeed
    from interlink_plugins.core.policy.engine import AdminPolicy
    from interlink_plugins.core.records.status import ContainerFiles


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


class Scheduler(Protocol):
    """The scheduler side of a backend: jobs in, job states out. Every call is async; a scheduler that
    cannot be reached raises BackendUnavailable (the service defers, taints the node, retries)."""

    def prepare(self, pod: Pod, *, write: bool = True) -> PreparedJob:
        """Validate the pod and write its job dir (blocking; the service runs it in a thread).

        ``write=False`` only validates and renders (``render``, the dry run): nothing is written.
        """
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

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        """Stop the job: graceful sends the pod runner its SIGTERM (preStop hooks, grace period)."""
        ...

    async def adopt(self) -> list[AdoptedJob]:
        """This instance's jobs as the scheduler alone knows them (recovery without state)."""
        ...

    async def resources(self) -> Resources:
        """The capacity the virtual node advertises (and why it cannot take pods, if it cannot)."""
        ...

    async def cleanup(self, record: PodRecord) -> None:
        """Remove what the pod left behind once its job is gone (job dir, containers, volumes)."""
        ...


class ContainerStateSource(Protocol):
    """Per-container state of a pod. Batch backends answer from each record's RunnerStateSource
    (core.podrunner.statefiles.BySource); others (podman) from what their query() saw. Blocking: called from a
    worker thread; every job-dir file access goes through core.safefs (the job controls its job dir)."""

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        """Every container's state (a container with no state yet may be left out)."""
        ...

    def files_version(self, record: PodRecord) -> tuple[int, ...] | None:
        """A cheap change token of what container_snapshot reads; None (the default): read it again."""
        ...

    def container_started(self, record: PodRecord, container: str) -> bool:
        """The container has started at least once (its log may be asked for)."""
        ...

    def runner_finished(self, record: PodRecord) -> bool:
        """The pod ran to its end by its own account (resolves a job the scheduler forgot)."""
        ...


class LogSource(Protocol):
    """Where a container's CRI-format log is read. ``log_file`` is always used; the hooks serve logs that
    live on another host (a login node over SFTP, a spooled HTCondor job) and do nothing by default."""

    remote_logs: bool
    """The logs live on another host: a Follow streams through open_log_feed, and a Follow of a previous
    run is one read (default False: the service follows log_file itself)."""

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> Location:
        """The CRI-format log of the container's current (or previous) run (opened through safefs)."""
        ...

    async def fetch_log(self, record: PodRecord, container: str, *, previous: bool) -> None:
        """Before a read: bring log_file up to date (default: nothing). BackendUnavailable: a 503."""
        ...

    def keep_log_fresh(self, record: PodRecord, container: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """While a Follow of log_file lasts: keep that file fresh (default: the stream as it is)."""
        ...

    async def open_log_feed(self, record: PodRecord, container: str) -> LogFeed:
        """With remote_logs, a Follow: a private local file the backend keeps appending to."""
        ...

    async def prefetch_files(self, records: list[PodRecord]) -> None:
        """Once per poll, before the statuses are built: bring every tracked pod's runner state (default:
        nothing). BackendUnavailable: the statuses are kept as they were."""
        ...


class Backend(Scheduler, ContainerStateSource, LogSource, Protocol):
    """What a backend supplies; the service does the lifecycle around it (docs/adding-a-backend.md)."""

    name: str  # the Backend config value, and the metrics' label
    display_name: str  # how pod statuses name the scheduler ("<display_name> job 12")
    config: Config  # swapped by a reload (SIGHUP): read it at each use
    policy: AdminPolicy  # likewise


class BackendDefaults:
    """The documented defaults of the optional hooks, for a backend to derive from: logs and runner state
    on this host, no change token (the state is read at every poll)."""

    remote_logs: bool = False

    def files_version(self, record: PodRecord) -> tuple[int, ...] | None:
        del record
        return None

    async def fetch_log(self, record: PodRecord, container: str, *, previous: bool) -> None:
        del record, container, previous

    def keep_log_fresh(self, record: PodRecord, container: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        del record, container
        return stream

    async def open_log_feed(self, record: PodRecord, container: str) -> LogFeed:
        raise NotImplementedError(f"{type(self).__name__} follows its logs locally (remote_logs is False)")

    async def prefetch_files(self, records: list[PodRecord]) -> None:
        del records
