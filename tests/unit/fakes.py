"""STAND-INS for the service tier: a scheduler in memory (FakeBackend) and a clock the test moves (FakeClock).

They let tests/unit/core/service/test_plugin_rules.py run PluginService's lifecycle rules (submit retry, throttling,
SubmitDeadline, find before resubmit, JobVanished, grace caps, outage taints, recovery, the first poll before
serving) in milliseconds; ``restart`` stands for a plugin restart on the same state file.
The same rules run against the real daemons in tests/e2e (test_faults.py, test_slurm_e2e.py, ...); these
stand-ins say nothing about any scheduler, only about what the service does with the answers it gets.

The service reads time only through its ``clock`` (time.monotonic is used for the poll loop's own pacing
and the stuck-read bound, which these tests do not drive: they call ``poll_once`` themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import interlink_plugins.backends  # noqa: F401  (every backend's field verdicts: the fake's config says Backend slurm)
from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, BackendDefaults, JobInfo, PreparedJob, Resources
from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.model.pod import Pod
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.core.records.state import PodRecord, StateStore
from interlink_plugins.core.records.status import ContainerFiles
from interlink_plugins.core.service import PluginService

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class FakeClock:
    """The service's clock (epoch seconds), moved by the test."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LostAnswer(Exception):
    """Queued in FakeBackend.submit_errors: the job reaches the queue, the answer does not reach the service
    (a timeout after sbatch got through, a crash): the service sees BackendUnavailable."""


@dataclass
class FakeJob:
    uid: str
    state: str = "PENDING"  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED
    exit_code: int = 0
    in_queue: bool = True  # the scheduler's live view (squeue, condor_q) still has it
    in_accounting: bool = True  # the scheduler's history (sacct, condor_history) has it once it left

    @property
    def active(self) -> bool:
        return self.state in ("PENDING", "RUNNING")


@dataclass
class FakeBackend(BackendDefaults):
    """A scheduler in memory. ``down`` makes every scheduler call raise BackendUnavailable; ``submit_errors``
    are raised by the next submissions, in order (a LostAnswer queues the job first)."""

    data_root: Path
    name: str = "fake"
    display_name: str = "fake"
    down: bool = False
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submit_errors: list[Exception] = field(default_factory=list)
    capacity: Resources = field(default_factory=lambda: Resources(cpus=8, memory_bytes=16 * 2**30))
    files: dict[str, dict[str, ContainerFiles]] = field(default_factory=dict)  # pod uid -> runner files
    started: dict[str, str] = field(default_factory=dict)  # pod uid -> when its runner started the containers
    adoptable: list[AdoptedJob] = field(default_factory=list)
    config: Config = field(default_factory=Config)  # what reconfigure() hands it (unused here)
    policy: AdminPolicy = field(default_factory=AdminPolicy)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    next_id: int = 100

    def _call(self, *what: object) -> None:
        self.calls.append(what)
        if self.down:
            raise BackendUnavailable(self.name, str(what[0]), "connection refused")

    def called(self, name: str) -> list[tuple[object, ...]]:
        return [call for call in self.calls if call[0] == name]

    def job_of(self, uid: str) -> str | None:
        return next((job_id for job_id, job in self.jobs.items() if job.uid == uid), None)

    def run(self, uid: str, at: str = "2027-01-15T08:00:00Z") -> str:
        """The pod's job runs, and its runner's files say so: the init containers ran and ended (exit 0),
        the main ones started ``at``. Answers the job id."""
        job_id = self.job_of(uid)
        assert job_id is not None, f"pod {uid} has no job"
        self.jobs[job_id].state = "RUNNING"
        self.started[uid] = at
        return job_id

    def _runner_files(self, record: PodRecord) -> dict[str, ContainerFiles]:
        at = self.started.get(record.uid)
        files = {} if at is None else {
            **{name: ContainerFiles(started=at, finished=at, exit_code=0) for name in record.init_names},
            **{name: ContainerFiles(started=at) for name in record.main_names},
        }
        return {**files, **self.files.get(record.uid, {})}

    def _queue(self, uid: str) -> str:
        job_id = str(self.next_id)
        self.next_id += 1
        self.jobs[job_id] = FakeJob(uid)
        return job_id

    # --- the Backend protocol ----------------------------------------------------------------

    def prepare(self, pod: Pod, *, write: bool = True) -> PreparedJob:
        return PreparedJob(job_dir=self.data_root / f"{pod.namespace}-{pod.uid}", submit={"uid": pod.uid})

    async def submit(self, record: PodRecord) -> str:
        self._call("submit", record.uid)
        if self.submit_errors:
            error = self.submit_errors.pop(0)
            if isinstance(error, LostAnswer):
                self._queue(record.uid)
                raise BackendUnavailable(self.name, "submit", "timed out")
            raise error
        return self._queue(record.uid)

    async def find_job(self, record: PodRecord) -> str | None:
        self._call("find_job", record.uid)
        return self.job_of(record.uid)

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self._call("query", tuple(job_ids))
        return {job_id: self._info(job_id) for job_id in job_ids if job_id in self.jobs and self.jobs[job_id].in_queue}

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        self._call("query_finished", tuple(job_ids))
        return {job_id: self._info(job_id) for job_id in job_ids
                if job_id in self.jobs and not self.jobs[job_id].in_queue and self.jobs[job_id].in_accounting}

    def _info(self, job_id: str) -> JobInfo:
        job = self.jobs[job_id]
        return JobInfo(job_id, job.state, active=job.active, running=job.state == "RUNNING",
                       abnormal_reason="Cancelled" if job.state == "CANCELLED" else "",
                       exit_code=None if job.active else job.exit_code)

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        """A graceful cancel signals the job (which keeps running here, as one that takes its grace period);
        a plain one ends it."""
        self._call("cancel", job_id, graceful)
        job = self.jobs.get(job_id)
        if job is not None and job.active and not graceful:
            job.state = "CANCELLED"

    async def cleanup(self, record: PodRecord) -> None:
        self._call("cleanup", record.uid)

    async def adopt(self) -> list[AdoptedJob]:
        self._call("adopt")
        return list(self.adoptable)

    async def resources(self) -> Resources:
        self._call("resources")
        return self.capacity

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        return self._runner_files(record)

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return safefs.job_location(record.job_dir) / "c" / container / ("previous.log" if previous else "log")

    def container_started(self, record: PodRecord, container: str) -> bool:
        return bool(self._runner_files(record).get(container, ContainerFiles()).started)

    def runner_finished(self, record: PodRecord) -> bool:
        return False


class FakeRemoteLogs(FakeBackend):
    """A FakeBackend whose logs live on another host (the optional fetch_log hook, as SFTP and HTCondor
    spool mode have it): a log read while the host is down is the one answer that may be a 503."""

    async def fetch_log(self, record: PodRecord, container: str, *, previous: bool) -> None:
        self._call("fetch_log", record.uid, container)


def make_service(
    tmp_path: Path, backend: FakeBackend | None = None, **settings: object
) -> tuple[PluginService, FakeBackend, FakeClock]:
    """The real PluginService and state store (SQLite in tmp_path) around a FakeBackend and a FakeClock."""
    config = Config(data_root=tmp_path / "jobs", state_dir=tmp_path / "state", instance_id="svc",
                    **settings)  # type: ignore[arg-type]
    config.state_dir.mkdir(parents=True, exist_ok=True)
    backend = backend or FakeBackend(config.data_root)
    clock = FakeClock()
    return PluginService(config, backend, StateStore(config.state_db), clock=clock), backend, clock


def restart(service: PluginService, backend: FakeBackend, clock: FakeClock) -> PluginService:
    """The plugin stopped (its state closed) and started again on the same state file: a new PluginService
    around the same scheduler and clock, with nothing in memory but what the state file holds."""
    service.store.close()
    return PluginService(service.config, backend, StateStore(service.config.state_db), clock=clock)
