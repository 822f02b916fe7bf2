"""Status builder: runner files + scheduler view -> the exact JSON interLink parses."""

from __future__ import annotations

import json
import re
from pathlib import Path

from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import (
    ContainerFiles,
    StatusContext,
    build_pod_status,
    is_final,
    read_container_files,
    submit_failed_status,
)

T0, T1 = "2026-11-25T10:00:00.123456789Z", "2026-11-25T10:00:05.5Z"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def record(**extra: object) -> PodRecord:
    base = PodRecord(uid="u-1", namespace="ns", name="p", job_dir="/x", init_names=["init"], main_names=["a", "b"],
                     phase="submitted", job_id="42")
    for key, value in extra.items():
        setattr(base, key, value)
    return base


def ctx(job: JobInfo | None, **extra: object) -> StatusContext:
    return StatusContext(record=record(**extra), job=job, backend="SLURM")


def test_wire_shape_names_and_times() -> None:
    job = JobInfo("42", "RUNNING", active=True, running=True, node="node7")
    files = {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(started=T1), "b": ContainerFiles(T0, T1, 3)}
    status = build_pod_status(ctx(job), files, {"a": "img"})
    assert set(status) == {"name", "UID", "namespace", "JID", "containers", "initContainers"}
    assert (status["UID"], status["JID"], status["namespace"]) == ("u-1", "42", "ns")
    assert [c["name"] for c in status["containers"]] == ["a", "b"]
    assert status["containers"][0]["state"] == {"running": {"startedAt": T1}}
    b = status["containers"][1]["state"]["terminated"]
    assert b["exitCode"] == 3 and b["reason"] == "Error" and "SLURM job 42 on node node7" in b["message"]
    assert RFC3339.match(b["startedAt"]) and RFC3339.match(b["finishedAt"])
    json.dumps(status)  # plain JSON
    assert not is_final(status, job)


def test_abnormal_end_gives_unfinished_containers_a_nonzero_exit_and_the_reason() -> None:
    job = JobInfo("42", "TIMEOUT", active=False, abnormal_reason="DeadlineExceeded", node="n1", finished_at=T1)
    files = {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(started=T0),
             "b": ContainerFiles(T0, T1, 143, reason=("Terminated", "killed by SIGTERM"))}
    status = build_pod_status(ctx(job), files, {})
    a = status["containers"][0]["state"]["terminated"]
    b = status["containers"][1]["state"]["terminated"]
    assert a["exitCode"] == 137 and a["reason"] == "DeadlineExceeded"
    assert a["message"].startswith("DeadlineExceeded: SLURM TIMEOUT")
    assert b["exitCode"] == 143 and b["reason"] == "DeadlineExceeded"
    assert is_final(status, job)


def test_pending_job_and_init_phase() -> None:
    pending = JobInfo("42", "PENDING", active=True, waiting_reason="Pending", detail="Resources")
    status = build_pod_status(ctx(pending), {}, {})
    waiting = status["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "Pending" and "Resources" in waiting["message"]
    running = JobInfo("42", "RUNNING", active=True, running=True)
    status = build_pod_status(ctx(running), {"init": ContainerFiles(started=T0)}, {})
    assert status["containers"][0]["state"]["waiting"]["reason"] == "PodInitializing"


def test_restart_count_and_last_state() -> None:
    job = JobInfo("42", "RUNNING", active=True, running=True)
    files = {"a": ContainerFiles(started=T1, restarts=2, last=(1, T0, T1))}
    entry = build_pod_status(ctx(job), files, {})["containers"][0]
    assert entry["restartCount"] == 2
    assert entry["lastState"]["terminated"]["exitCode"] == 1


def test_submit_failed_terminates_every_container() -> None:
    status = submit_failed_status(record(last_error="sbatch: error: Invalid partition"), {}, "slurm")
    entries = status["containers"] + status["initContainers"]
    assert len(entries) == 3
    for entry in entries:
        term = entry["state"]["terminated"]
        assert term["exitCode"] == 1 and term["reason"] == "SubmitFailed" and "Invalid partition" in term["message"]


def test_reading_runner_files(tmp_path: Path) -> None:
    (tmp_path / "started").write_text(T0 + "\n")
    (tmp_path / "finished").write_text(T1)
    (tmp_path / "exit").write_text("7\n")
    (tmp_path / "restarts").write_text("1")
    (tmp_path / "last").write_text(f"2 {T0} {T1}")
    (tmp_path / "reason").write_text("InitContainerFailed init container x exited 3")
    files = read_container_files(tmp_path)
    assert files == ContainerFiles(T0, T1, 7, 1, (2, T0, T1), None, ("InitContainerFailed", "init container x exited 3"))
    assert read_container_files(tmp_path / "missing") == ContainerFiles()


def test_runner_files_the_job_garbled_or_planted_never_reach_the_status_raw(tmp_path: Path) -> None:
    """Control characters are dropped, an endless reason word is cut, refused files are named; a container
    whose files were refused while it would show running waits (its state is unknown)."""
    (tmp_path / "started").write_text(T0)
    (tmp_path / "exit").write_bytes(b"1\0\n")
    (tmp_path / "reason").write_bytes(b"X" * 500 + b"\x1b[31m red\x07 tail")
    (tmp_path / "waiting").symlink_to("/etc/hostname")
    files = read_container_files(tmp_path)
    assert files.exit_code == 1 and files.reason is not None
    assert files.reason[0] == "X" * 128 and files.reason[1] == "X" * 372 + "[31m red tail"
    assert files.refused == ("waiting (a symlink)",)
    status = build_pod_status(ctx(JobInfo("42", "RUNNING", active=True, running=True)), {"a": files}, {})
    terminated = status["containers"][0]["state"]["terminated"]
    assert terminated["message"].endswith("; runner files refused: waiting (a symlink)")
    running = ContainerFiles(started=T0, refused=("exit (a FIFO)",))
    waiting = build_pod_status(ctx(JobInfo("42", "RUNNING", active=True, running=True)), {"a": running}, {})
    state = waiting["containers"][0]["state"]["waiting"]
    assert state["reason"] == "RunnerFilesRefused" and "exit (a FIFO)" in state["message"]


def test_a_job_ended_for_its_memory_makes_the_killed_containers_oomkilled() -> None:
    detail = "Detected 1 oom-kill event(s) in StepId=42.batch."
    job = JobInfo("42", "OUT_OF_MEMORY", active=False, abnormal_reason="OOMKilled", detail=detail, node="n1",
                  finished_at=T1)
    # a: SIGKILLed by the cgroup's OOM killer (exit 137, no reason of the runner); b: ended by itself
    files = {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(T0, T1, 137), "b": ContainerFiles(T0, T1, 0)}
    status = build_pod_status(ctx(job), files, {})
    a = status["containers"][0]["state"]["terminated"]
    assert (a["exitCode"], a["reason"], a.get("signal")) == (137, "OOMKilled", 9)
    assert a["message"] == f"OOMKilled: SLURM OUT_OF_MEMORY ({detail}) SLURM job 42 on node n1"
    assert status["containers"][1]["state"]["terminated"]["reason"] == "Completed"
    assert status["initContainers"][0]["state"]["terminated"]["reason"] == "Completed"
    assert is_final(status, job)
    # jobacct_gather's kill: the runner died with the step, the containers never got an exit
    failed = JobInfo("42", "FAILED", active=False, abnormal_reason="OOMKilled", node="n1", finished_at=T1,
                     detail="StepId=42.batch exceeded memory limit (172654592 > 104857600), being killed")
    status = build_pod_status(ctx(failed), {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(started=T0)}, {})
    a = status["containers"][0]["state"]["terminated"]
    assert (a["exitCode"], a["reason"]) == (137, "OOMKilled")
    assert a["message"].startswith("OOMKilled: SLURM FAILED (StepId=42.batch exceeded memory limit (")
    # an exit 137 in a job that ended for another reason stays what it was
    plain = JobInfo("42", "COMPLETED", active=False, node="n1", finished_at=T1)
    status = build_pod_status(ctx(plain), {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(T0, T1, 137)}, {})
    assert status["containers"][0]["state"]["terminated"]["reason"] == "Error"


def test_a_container_killed_from_outside_waits_for_the_jobs_verdict_when_it_is_the_last() -> None:
    running = JobInfo("42", "RUNNING", active=True, running=True, node="n1")
    files = {"init": ContainerFiles(T0, T1, 0), "a": ContainerFiles(T0, T1, 137), "b": ContainerFiles(started=T0)}
    # b still runs: a is terminated now (interLink keeps asking; the reason may change at the job's end)
    a = build_pod_status(ctx(running), files, {})["containers"][0]["state"]
    assert a["terminated"]["reason"] == "Error" and a["terminated"]["exitCode"] == 137
    # all ended, the job not yet: a terminated Error now would be interLink's last word; a stays running
    files["b"] = ContainerFiles(T0, T1, 0)
    status = build_pod_status(ctx(running), files, {})
    assert status["containers"][0]["state"] == {"running": {"startedAt": T0}}
    assert status["containers"][1]["state"]["terminated"]["reason"] == "Completed"
    assert not is_final(status, running)
    # a pod being deleted gets its ends as they are
    deleting = StatusContext(record=record(), job=running, backend="SLURM", deleting=True)
    assert build_pod_status(deleting, files, {})["containers"][0]["state"]["terminated"]["exitCode"] == 137


def test_the_last_run_keeps_the_reason_the_runner_gave_it(tmp_path: Path) -> None:
    """A container killed by its liveness probe and restarted: lastState says Unhealthy, as the kubelet does."""
    (tmp_path / "started").write_text(T1)
    (tmp_path / "restarts").write_text("1")
    (tmp_path / "last").write_text(f"137 {T0} {T1} Unhealthy")
    files = read_container_files(tmp_path)
    assert files.last == (137, T0, T1) and files.last_reason == ("Unhealthy", "")
    (tmp_path / "last").write_text(f"1 {T0} {T1}")
    assert read_container_files(tmp_path).last_reason is None
