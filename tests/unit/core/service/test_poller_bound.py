"""One pod's runner files can never stall the poll of the others (core/service/sweep.py, PluginService.poll_once).

A read in a job dir that hangs in the kernel (a hung network file system, a FUSE mount the job made)
cannot be produced on demand here: the backend below is a STAND-IN whose per-container read of one pod
blocks until the test lets it go. Everything else is the real service and state store. The FIFO a job
plants, which is the real case on this machine, is refused without blocking (tests/security).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, BackendDefaults, JobInfo, Resources
from interlink_plugins.core.records.state import PodRecord, StateStore
from interlink_plugins.core.records.status import ContainerFiles
from interlink_plugins.core.service import PluginService, statuses
from interlink_plugins.core.service.sweep import StuckItems, bounded_map

T0 = "2026-11-25T10:00:00.000000Z"


class HangingFilesBackend(BackendDefaults):
    """STAND-IN backend: every job runs; pod "stuck"'s runner files never come back until released."""

    name = "standin"
    display_name = "standin"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads: list[str] = []

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return {j: JobInfo(j, "RUNNING", active=True, running=True) for j in job_ids}

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return {}

    async def resources(self) -> Resources:
        return Resources(cpus=1)

    async def adopt(self) -> list[AdoptedJob]:
        return []

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        self.reads.append(record.uid)
        if record.uid == "stuck":
            self.release.wait(30)
        return {"c": ContainerFiles(started=T0)}

    def runner_finished(self, record: PodRecord) -> bool:
        return False

    def container_started(self, record: PodRecord, container: str) -> bool:
        return True

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return safefs.job_location(record.job_dir) / "c" / container / "log"


def make(tmp_path: Path) -> tuple[PluginService, HangingFilesBackend]:
    config = Config(data_root=tmp_path / "jobs", state_dir=tmp_path / "state", instance_id="bound")
    config.state_dir.mkdir(parents=True)
    backend = HangingFilesBackend()
    store = StateStore(config.state_db)
    for uid in ("first", "stuck", "last"):
        store.put(PodRecord(uid=uid, namespace="ns", name=uid, job_dir=str(tmp_path / "jobs" / f"ns-{uid}"),
                            init_names=[], main_names=["c"], phase="submitted", job_id=uid))
    return PluginService(config, backend, store), backend  # type: ignore[arg-type]


def state(svc: PluginService, uid: str) -> dict[str, object]:
    record = svc.store.get(uid)
    assert record is not None
    return dict(svc.pod_status(record)["containers"][0]["state"])


def test_a_hanging_pod_is_given_up_and_the_others_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(statuses, "POD_FILES_SECONDS", 0.3)
    svc, backend = make(tmp_path)

    async def scenario() -> None:
        started = time.monotonic()
        await svc.poll_once()
        assert time.monotonic() - started < 3
        assert "running" in state(svc, "first") and "running" in state(svc, "last")
        stuck = state(svc, "stuck")["waiting"]
        assert stuck["reason"] == "RunnerFilesStuck" and "ns-stuck" in stuck["message"]  # type: ignore[index]
        # the next poll does not start another read of a pod whose read still hangs
        started = time.monotonic()
        await svc.poll_once()
        assert time.monotonic() - started < 1
        assert backend.reads.count("stuck") == 1 and backend.reads.count("last") == 2
        backend.release.set()
        for _ in range(50):
            await asyncio.sleep(0.05)
            if svc.statuses.stuck.since("stuck") is None:
                break
        await svc.poll_once()
        assert "running" in state(svc, "stuck")

    asyncio.run(scenario())
    assert sum("reading its runner files" in r.getMessage() for r in caplog.records) == 1
    svc.store.close()


def test_bounded_map_gives_up_slow_items_and_reports_failures() -> None:
    gate = threading.Event()
    stuck = StuckItems()

    def work(item: int) -> int:
        if item == 2:
            gate.wait(10)
        if item == 4:
            raise ValueError("bad item")
        return item * 10

    async def run() -> None:
        outcome = await bounded_map([1, 2, 3, 4, 5], work, bound=0.2, key=lambda i: i, stuck=stuck)
        assert outcome.done == [(1, 10), (3, 30), (5, 50)]
        assert outcome.given_up == [2] and [(i, str(e)) for i, e in outcome.failed] == [(4, "bad item")]
        again = await bounded_map([2, 3], work, bound=0.2, key=lambda i: i, stuck=stuck)
        assert again.given_up == [2] and again.done == [(3, 30)]
        gate.set()
        for _ in range(100):
            if stuck.since(2) is None:
                break
            await asyncio.sleep(0.02)
        assert stuck.since(2) is None

    asyncio.run(run())
