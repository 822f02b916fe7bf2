"""BatchBackend (core/batch.py), on a toy backend: real commands through the real LocalRunner, a real job
dir written by the real core/podrunner/jobdir.py, its hand-over and its removal."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.batch import BatchBackend, JobOwner
from interlink_plugins.core.commands.local import LocalRunner
from interlink_plugins.core.errors import BackendUnavailable, PodSpecError
from interlink_plugins.core.model.names import job_dir_name
from interlink_plugins.core.model.pod import Pod, parse_create_body
from interlink_plugins.core.podrunner.jobdir import JobPlan
from interlink_plugins.core.records.state import PodRecord
from tests.podfactory import container, pod_body

JOB_UID = 2001  # a uid that is not the plugin's (no passwd entry needed: chown takes any)


class ToyBackend(BatchBackend[str]):
    """A scheduler that takes a queue name from the pod's name: enough to exercise the base."""

    name = "toy"

    def __init__(self, *args: Any, owner: JobOwner | None = None) -> None:
        super().__init__(*args)
        self.owner = owner
        self.forgotten: list[str] = []

    def draft(self, pod: Pod, job_dir: Path) -> str:
        if pod.name.startswith("refused"):
            raise PodSpecError("metadata.name", "refused before any file is written")
        return "batch"

    def submission(self, pod: Pod, draft: str, job_dir: Path, job_plan: JobPlan, files: dict[str, str], *,
                   write: bool) -> dict[str, list[str]]:
        return {"argv": ["toysub", "-q", draft, str(job_dir / "pod-runner.sh")]}

    def job_owner(self, draft: str) -> JobOwner | None:
        return self.owner

    def unreachable(self, error_text: str) -> bool:
        return "cannot connect to server" in error_text

    async def forget(self, record: PodRecord) -> None:
        self.forgotten.append(record.uid)

    async def submit(self, record: PodRecord) -> str:
        raise NotImplementedError

    async def find_job(self, record: PodRecord) -> str | None:
        raise NotImplementedError

    async def query(self, job_ids: Any) -> Any:
        raise NotImplementedError

    async def query_finished(self, job_ids: Any) -> Any:
        raise NotImplementedError

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        raise NotImplementedError

    async def adopt(self) -> Any:
        raise NotImplementedError

    async def resources(self) -> Any:
        raise NotImplementedError


def toy(tmp_path: Path, owner: JobOwner | None = None) -> ToyBackend:
    raw = {"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"), "AllowRootJobs": True,
           "CommandTimeout": 5}
    config, _ = parse_config(raw, environ={})
    (tmp_path / "jobs").mkdir(mode=0o711)
    return ToyBackend(config, LocalRunner(), policy_from_config(config.policy_raw), owner=owner)


def a_pod(name: str = "toy-pod") -> Pod:
    return parse_create_body(pod_body(name, [container("c", ["echo", "hi"])]))


def test_prepare_writes_the_job_dir_by_its_name_and_the_submission_names_it(tmp_path: Path) -> None:
    backend = toy(tmp_path)
    pod = a_pod()
    prepared = backend.prepare(pod)
    assert prepared.job_dir == tmp_path / "jobs" / job_dir_name(pod.namespace, pod.uid)  # where the service looks
    assert prepared.submit == {"argv": ["toysub", "-q", "batch", str(prepared.job_dir / "pod-runner.sh")]}
    assert (prepared.job_dir / "pod-runner.sh").is_file() and "pod-runner.sh" in prepared.files
    assert stat.S_IMODE(prepared.job_dir.stat().st_mode) == 0o700


def test_render_and_a_refused_pod_write_nothing(tmp_path: Path) -> None:
    backend = toy(tmp_path)
    rendered = backend.prepare(a_pod(), write=False)
    assert "pod-runner.sh" in rendered.files and not rendered.job_dir.exists()
    with pytest.raises(PodSpecError):
        backend.prepare(a_pod("refused-pod"))
    assert list((tmp_path / "jobs").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a job dir to another user needs a root plugin")
def test_the_job_dir_is_handed_over_to_the_jobs_user(tmp_path: Path) -> None:
    backend = toy(tmp_path, JobOwner(JOB_UID, os.getegid(), 0o750))
    prepared = backend.prepare(a_pod())
    info = prepared.job_dir.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (JOB_UID, os.getegid(), 0o750)
    assert (prepared.job_dir / "pod-runner.sh").stat().st_uid == JOB_UID


def test_cleanup_removes_the_job_dir_then_forgets(tmp_path: Path) -> None:
    backend = toy(tmp_path)
    pod = a_pod()
    prepared = backend.prepare(pod)
    record = PodRecord(uid=pod.uid, namespace=pod.namespace, name=pod.name, job_dir=str(prepared.job_dir),
                       init_names=[], main_names=["c"])
    asyncio.run(backend.cleanup(record))
    assert not prepared.job_dir.exists() and backend.forgotten == [pod.uid]


@pytest.mark.parametrize(("argv", "timeout", "said"), [
    (["/nonexistent/toystat"], None, "/nonexistent/toystat (status)"),  # cannot run
    (["sleep", "5"], 0.2, "sleep (status)"),  # timed out, killed
    (["sh", "-c", "echo 'cannot connect to server' >&2; exit 1"], None, "sh (status)"),  # said unreachable
])
def test_a_command_that_cannot_reach_the_scheduler_is_backend_unavailable(
    tmp_path: Path, argv: list[str], timeout: float | None, said: str
) -> None:
    backend = toy(tmp_path)
    with pytest.raises(BackendUnavailable) as caught:
        asyncio.run(backend.run_command(argv, "status", timeout=timeout))
    assert caught.value.backend == "toy" and caught.value.command == said


def test_any_other_failure_is_the_callers_to_read(tmp_path: Path) -> None:
    result = asyncio.run(toy(tmp_path).run_command(["sh", "-c", "echo 'no such queue' >&2; exit 2"], "submit",
                                                   env={"TOY": "1"}))
    assert not result.ok and result.returncode == 2 and "no such queue" in result.error_text
