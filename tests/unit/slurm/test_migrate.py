"""Go-plugin job dirs (migration), retention, and the status rules for probes, requeue and a job the
scheduler is still stopping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import ContainerFiles, StatusContext, build_pod_status
from interlink_plugins.core.service.retention import expired, finished_at
from interlink_plugins.slurm import migrate
from interlink_plugins.slurm.backend import SlurmBackend

T0, T1 = "2026-11-25T10:00:00.000000Z", "2026-11-25T10:00:05.000000Z"


def go_dir(root: Path, uid: str = "0b6c-uid", name: str = "web") -> Path:
    path = root / f"default-{uid}"
    path.mkdir(parents=True)
    (path / "JobID.jid").write_text("77")
    (path / "PodUID.uid").write_text(uid)
    (path / "PodNamespace.ns").write_text("default")
    (path / "StartedAt.time").write_text("2026-11-25 11:00:00.123456789 +0100 CET")
    (path / "job.sh").write_text(
        f"printf '%s\\n' \"This pod {name}/{uid} has been submitted to SLURM node ${{SLURMD_NODENAME}}.\"\n"
        "runInitCtn setup singularity exec img true\nruncCtn nope\nrunCtn main singularity run img\n"
        "runCtn side singularity run img\n"
    )
    return path


def test_go_time_format() -> None:
    assert migrate.go_time("2026-11-25 11:00:00.123456789 +0100 CET") == "2026-11-25T10:00:00.123456Z"
    assert migrate.go_time("2026-11-25 10:00:00 +0000 UTC m=+0.01") == "2026-11-25T10:00:00.000000Z"
    assert migrate.go_time("garbage") == ""


def test_scan_reads_the_go_layout_and_skips_ours(tmp_path: Path) -> None:
    path = go_dir(tmp_path)
    ours = tmp_path / "default-ours"
    ours.mkdir()
    for marker in migrate.MARKERS:
        (ours / marker).write_text("1")
    (ours / "pod-runner.sh").write_text("")
    (tmp_path / "default-incomplete").mkdir()
    (path / "run-extra.out").write_text("")
    found = migrate.scan(tmp_path)
    assert [f.path for f in found] == [path]
    job = found[0]
    assert (job.uid, job.namespace, job.job_id, job.name) == ("0b6c-uid", "default", "77", "web")
    assert job.init_names == ("setup",) and job.main_names == ("main", "side", "extra")
    assert sorted(p.name for p in path.iterdir()) == sorted(  # adoption writes nothing into the Go dir
        ["JobID.jid", "PodUID.uid", "PodNamespace.ns", "StartedAt.time", "job.sh", "run-extra.out"])
    assert migrate.summary(job)["main_names"] == ["main", "side", "extra"]
    (path / "pod.json").write_text("{}")  # an earlier version wrote one: still the Go layout
    assert migrate.is_go_job_dir(safefs.job_location(path))


def test_scan_never_takes_planted_markers_or_symlinks(tmp_path: Path) -> None:
    """A dir with our runner's c/ (a job of ours that deleted pod-runner.sh), a symlinked job dir and
    symlinked markers are not Go dirs; a symlinked job.sh is not read."""
    secret = tmp_path / "secret"
    secret.write_text("runCtn stolen x\n")
    data = tmp_path / "data"
    planted = data / "default-planted"
    (planted / "c" / "main").mkdir(parents=True)
    for marker in migrate.MARKERS:
        (planted / marker).write_text("1")
    linked = data / "default-linked"
    linked.mkdir()
    (linked / "JobID.jid").symlink_to(secret)
    (linked / "PodUID.uid").write_text("u")
    (linked / "PodNamespace.ns").write_text("default")
    (data / "default-dirlink").symlink_to(go_dir(tmp_path / "elsewhere"))
    script = go_dir(data, uid="s-uid")
    (script / "job.sh").unlink()
    (script / "job.sh").symlink_to(secret)
    found = migrate.scan(data)
    assert [(job.uid, job.main_names) for job in found] == [("s-uid", ())]


def test_a_job_dir_the_plugin_cannot_read_is_skipped_not_fatal(tmp_path: Path) -> None:
    """The 0700 dir of a job run as another user (sbatch --uid) in the data root: the scan at start (run
    here without any capability, so that the other user's dir is closed to it) skips it instead of
    failing the start-up."""
    readable = go_dir(tmp_path, uid="readable-uid")
    private = go_dir(tmp_path, uid="private-uid")
    for path in (private, *private.iterdir()):
        os.chown(path, 65534, 65534)
    private.chmod(0o700)
    code = f"from pathlib import Path; from interlink_plugins.slurm import migrate; " \
           f"print([j.uid for j in migrate.scan(Path({str(tmp_path)!r}))])"
    result = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['readable-uid']" and readable.exists()


def test_container_files_and_runner_finished(tmp_path: Path) -> None:
    path = go_dir(tmp_path)
    where = safefs.job_location(path)
    assert migrate.container_files(where, "main", ["setup"]) == ContainerFiles()
    (path / "init-setup.out").write_text("ok\n")
    (path / "init-setup.status").write_text("0\n")
    (path / "run-main.out").write_text("working\n")
    main = migrate.container_files(where, "main", ["setup"])
    assert main.started == "2026-11-25T10:00:00.123456Z" and main.exit_code is None
    (path / "run-main.status").write_text("3\n")
    done = migrate.container_files(where, "main", ["setup"])
    assert done.exit_code == 3 and done.finished.endswith("Z")
    assert migrate.container_files(where, "setup", ["setup"]).exit_code == 0
    assert not migrate.runner_finished(where, ["setup"], ["main", "side"])
    (path / "run-side.status").write_text("0\n")
    assert migrate.runner_finished(where, ["setup"], ["main", "side"])
    (path / "init-setup.status").write_text("2\n")
    assert migrate.runner_finished(where, ["setup"], ["main", "side", "never"])


def test_logs_are_converted_incrementally_to_cri_lines(tmp_path: Path) -> None:
    path = go_dir(tmp_path / "data")
    where = safefs.job_location(path)
    copy = safefs.Location(tmp_path / "state", ("go-logs", path.name, "main"))
    log = tmp_path / "state" / "go-logs" / path.name / "main.log"
    out = path / "run-main.out"
    out.write_bytes(b"one\ntwo\npart")
    migrate.sync_log(where, copy, "main", [])
    lines = log.read_text().splitlines()
    assert [line.split(" ", 3)[1:] for line in lines] == [["stdout", "F", "one"], ["stdout", "F", "two"]]
    assert lines[0].split()[0].endswith("000Z")
    with open(out, "ab") as handle:
        handle.write(b"ial\nthree\n")
    os.utime(out, (time.time() + 5, time.time() + 5))
    migrate.sync_log(where, copy, "main", [])
    texts = [line.split(" ", 3)[3] for line in log.read_text().splitlines()]
    assert texts == ["one", "two", "partial", "three"]
    stamps = [line.split()[0] for line in log.read_text().splitlines()]
    assert stamps[2] > stamps[1]  # the new lines carry the later write time
    (path / "run-main.status").write_text("0")
    with open(out, "ab") as handle:
        handle.write(b"no newline at the end")
    migrate.sync_log(where, copy, "main", [])
    assert log.read_text().splitlines()[-1].endswith(" F no newline at the end")
    migrate.sync_log(where, copy, "main", [])
    assert len(log.read_text().splitlines()) == 5  # nothing new: nothing added
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []  # nothing written there


def test_log_conversion_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """Attack: the Go job links its .out to a root-only file; nothing of it reaches the converted log."""
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    path = go_dir(tmp_path / "data")
    (path / "run-main.out").symlink_to(secret)
    copy = safefs.Location(tmp_path / "state", ("go-logs", path.name, "main"))
    migrate.sync_log(safefs.job_location(path), copy, "main", [])
    assert not (tmp_path / "state" / "go-logs" / path.name / "main.log").exists()
    source = migrate.GoLayoutFiles(tmp_path / "state")
    record = PodRecord(uid="0b6c-uid", namespace="default", name="web", job_dir=str(path), init_names=[],
                       main_names=["main"], phase="submitted", job_id="77", layout="go")
    assert source.snapshot(record)["main"] == ContainerFiles()
    assert b"root only" not in (safefs.read_bytes(source.log(record, "main", previous=False)) or b"")



class _NoCommands:
    async def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> CommandResult:
        raise AssertionError(f"no command expected: {argv}")


def test_the_backend_reads_a_go_record_through_its_source_and_cleanup_forgets_its_log_copies(tmp_path: Path) -> None:
    """The record's layout picks the source once (state_source): a Go dir's log is converted into a private
    copy under StateDir, which cleanup removes with the job dir; a record of ours never reads the Go layout."""
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "data"),
                              "StateDir": str(tmp_path / "state"), "AllowRootJobs": True}, environ={})
    backend = SlurmBackend(config, _NoCommands(), policy_from_config(config.policy_raw))  # type: ignore[arg-type]
    path = go_dir(tmp_path / "data")
    (path / "run-main.out").write_text("hello from go\n")
    record = PodRecord(uid="0b6c-uid", namespace="default", name="web", job_dir=str(path), init_names=[],
                       main_names=["main"], phase="submitted", job_id="77", layout="go")
    assert b"hello from go" in (safefs.read_bytes(backend.log_file(record, "main", previous=False)) or b"")
    copies = tmp_path / "state" / migrate.LOG_DIR / path.name
    assert copies.is_dir()
    ours = PodRecord(uid="0b6c-uid", namespace="default", name="web", job_dir=str(path), init_names=[],
                     main_names=["main"], phase="submitted", job_id="77")
    assert backend.log_file(ours, "main", previous=False).path.is_relative_to(path / "c")
    asyncio.run(backend.cleanup(record))
    assert not path.exists() and not copies.exists()


# --- retention -------------------------------------------------------------------------------------


def record(uid: str, status: dict[str, object] | None, phase: str = "submitted", created: float = 0.0) -> PodRecord:
    return PodRecord(uid=uid, namespace="ns", name=uid, job_dir="/x", init_names=[], main_names=["c"],
                     phase=phase, job_id="1", final_status=status, created_at=created)  # type: ignore[arg-type]


def final(finished: str) -> dict[str, object]:
    return {"containers": [{"name": "c", "state": {"terminated": {"exitCode": 0, "finishedAt": finished}}}],
            "initContainers": []}


def test_only_finished_pods_older_than_the_retention_expire() -> None:
    old = record("old", final("2026-11-01T00:00:00Z"))
    recent = record("recent", final("2026-11-24T23:00:00Z"))
    running = record("running", None)
    deleting = record("deleting", final("2026-11-01T00:00:00Z"), phase="deleting")
    no_time = record("no-time", {"containers": [], "initContainers": []}, created=1.0)
    now = 1795600000.0  # 2026-11-25
    assert finished_at(old) == 1793491200.0 and finished_at(running) is None
    assert [r.uid for r in expired([old, recent, running, deleting, no_time], now, 7)] == ["old", "no-time"]
    assert expired([old], now, 0) == []


# --- status: probes, requeue, a job being stopped --------------------------------------------------


def status(job: JobInfo, files: ContainerFiles, deleting: bool = False) -> dict[str, object]:
    rec = record("u", None)
    ctx = StatusContext(record=rec, job=job, backend="SLURM", deleting=deleting)
    built = build_pod_status(ctx, {"c": files}, {})
    entry: dict[str, object] = built["containers"][0]
    return entry


RUNNING = JobInfo("1", "RUNNING", active=True, running=True, node="n1")


def test_ready_and_started_come_from_the_probe_files() -> None:
    assert status(RUNNING, ContainerFiles(started=T0))["ready"] is True
    not_ready = status(RUNNING, ContainerFiles(started=T0, ready=False, startup=False))
    assert not_ready["state"] == {"running": {"startedAt": T0}}
    assert (not_ready["ready"], not_ready["started"]) == (False, False)
    ready = status(RUNNING, ContainerFiles(started=T0, ready=True, startup=True))
    assert (ready["ready"], ready["started"]) == (True, True)
    # ready implies started, whatever order the probe files were written in
    assert status(RUNNING, ContainerFiles(started=T0, ready=True, startup=False))["ready"] is False


def test_a_requeued_job_waits_with_one_more_restart() -> None:
    pending = JobInfo("1", "PENDING", active=True, detail="BeginTime", waiting_reason="Pending")
    files = ContainerFiles(T0, T1, 143, restarts=0, reason=("Terminated", "killed by SIGTERM"))
    entry = status(pending, files)
    assert entry["state"]["waiting"]["reason"] == "Requeued"  # type: ignore[index]
    assert "SLURM job 1" in entry["state"]["waiting"]["message"]  # type: ignore[index]
    assert entry["restartCount"] == 1
    assert entry["lastState"] == {"terminated": {"exitCode": 143, "reason": "Error", "message": "", "startedAt": T0,
                                                 "finishedAt": T1, "signal": 15}}


def test_a_requeued_job_running_again_before_the_runner_started_over() -> None:
    again = JobInfo("1", "RUNNING", active=True, running=True, node="n1", started_at="2026-11-25T10:00:06Z")
    files = ContainerFiles(T0, T1, 143, reason=("Terminated", "killed by SIGTERM"))
    entry = status(again, files)
    assert entry["state"]["waiting"]["reason"] == "Requeued" and entry["restartCount"] == 1  # type: ignore[index]
    first_run = JobInfo("1", "RUNNING", active=True, running=True, node="n1", started_at="2026-11-25T09:59:59Z")
    assert "running" in status(first_run, ContainerFiles(started=T0))["state"]  # type: ignore[operator]


def test_a_container_stopped_by_the_scheduler_is_not_terminated_before_the_verdict() -> None:
    completing = JobInfo("1", "COMPLETING", active=True, running=True, node="n1")
    killed = ContainerFiles(T0, T1, 143, reason=("Terminated", "killed by SIGTERM"))
    held = status(completing, killed)
    assert held["state"] == {"running": {"startedAt": T0}} and held["ready"] is False
    preempted = JobInfo("1", "PREEMPTED", active=False, abnormal_reason="Preempted", node="n1")
    term = status(preempted, killed)["state"]["terminated"]  # type: ignore[index]
    assert term["reason"] == "Preempted" and term["message"].startswith("Preempted: SLURM PREEMPTED")
    # asked by /delete, or ended by the container itself: terminated at once
    assert "terminated" in status(completing, killed, deleting=True)["state"]  # type: ignore[operator]
    assert "terminated" in status(completing, ContainerFiles(T0, T1, 0))["state"]  # type: ignore[operator]
