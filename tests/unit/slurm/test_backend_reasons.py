"""SLURM's reasons at unit level: the --time/--deadline arithmetic, slurmstepd's memory-kill line and
the hostile job output it is read from. tests/e2e/test_slurm_reasons.py proves both on real SLURM.

The canned squeue/sacct answers below are SLURM 22.05's own output, recorded on the e2e clusters
(a stand-in for the scheduler, named as such: only the parsing is under test here).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.slurm.backend import SlurmBackend, deadline_options
from interlink_plugins.slurm.memory import OUTPUT_TAIL_BYTES, memory_kill_detail, output_tail

T0 = datetime(2026, 12, 7, 10, 0, 0)
JOBACCT_LINE = "StepId=7.batch exceeded memory limit (172654592 > 104857600), being killed"
CGROUP_LINE = "Detected 1 oom-kill event(s) in StepId=8.batch."


# --- activeDeadlineSeconds -> --time / --deadline ------------------------------------------------


def test_time_limit_is_the_time_left_rounded_up_and_the_deadline_that_much_past_the_pods() -> None:
    # submitted 5 s after the pod started, 150 s allowed: 145 s left -> 3 minutes
    assert deadline_options(T0, 150, T0 + timedelta(seconds=5)) == (3, T0 + timedelta(seconds=150 + 180))
    # SLURM removes a pending job once now + limit > deadline, i.e. exactly after the pod's deadline
    minutes, deadline = deadline_options(T0, 20, T0 + timedelta(seconds=1))
    assert minutes == 1 and deadline - timedelta(minutes=minutes) == T0 + timedelta(seconds=20)


def test_a_deadline_is_never_rounded_earlier_and_never_in_the_past() -> None:
    minutes, deadline = deadline_options(T0 + timedelta(microseconds=300), 60, T0)
    assert minutes == 2 and deadline == T0 + timedelta(seconds=181)
    # already past: a one-minute limit and a deadline 30 s ahead, which SLURM accepts and ends at once
    now = T0 + timedelta(minutes=10, microseconds=700)
    assert deadline_options(T0, 60, now) == (1, T0 + timedelta(minutes=10, seconds=30))


# --- slurmstepd's line ---------------------------------------------------------------------------


def test_memory_kill_detail_finds_slurmstepds_lines_only() -> None:
    out = (b"2026-12-07T04:53:06.1Z pod-runner: container hog started (pid 31)\n"
           b"slurmstepd-vm: error: " + JOBACCT_LINE.encode() + b"\n"
           b"slurmstepd-vm: error: Exceeded job memory limit\n"
           b"slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-12-07T04:53:07 ***\n")
    assert memory_kill_detail(out) == JOBACCT_LINE
    cgroup = b"slurmstepd-n1: error: " + CGROUP_LINE.encode() + b" Some of your processes may have been killed\n"
    assert memory_kill_detail(cgroup) == CGROUP_LINE
    # not at the start of a line (a container's log text quoted by the runner), or not slurmstepd's
    assert memory_kill_detail(b"echo slurmstepd-vm: error: " + JOBACCT_LINE.encode()) == ""
    assert memory_kill_detail(b"slurmd: error: " + JOBACCT_LINE.encode()) == ""
    assert memory_kill_detail(b"slurmstepd: error: Detected 1 oom-kill event(s) in StepId=$(id).") == ""


def job_dir(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "jobs"
    directory = root / "default-u1"
    directory.mkdir(parents=True)
    return root, directory


def test_output_tail_reads_the_end_of_a_regular_file_only(tmp_path: Path) -> None:
    _root, directory = job_dir(tmp_path)
    out = directory / "runner.out"
    with out.open("wb") as handle:  # a huge sparse file: only its tail is read
        handle.truncate(2**40)
        handle.seek(2**40)
        handle.write(b"\nslurmstepd-vm: error: " + JOBACCT_LINE.encode() + b"\n")
    tail = output_tail(str(directory))
    assert len(tail) == OUTPUT_TAIL_BYTES and memory_kill_detail(tail) == JOBACCT_LINE


def test_output_tail_refuses_links_fifos_and_linked_job_dirs(tmp_path: Path) -> None:
    root, directory = job_dir(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"slurmstepd-vm: error: " + JOBACCT_LINE.encode() + b"\n")
    (directory / "runner.out").symlink_to(secret)
    assert output_tail(str(directory)) == b""
    (directory / "runner.out").unlink()
    os.mkfifo(directory / "runner.out")  # no writer: a blocking open would hang the poll
    assert output_tail(str(directory)) == b""
    # the job dir itself replaced by a link, a traversal
    os.symlink(tmp_path, root / "default-u2")
    (tmp_path / "runner.out").write_bytes(secret.read_bytes())
    assert output_tail(str(root / "default-u2")) == b""
    assert output_tail(str(root / "..")) == b""


# --- the backend: FAILED + slurmstepd's line -> OOMKilled ------------------------------------------


class CannedSlurm:
    """Stand-in for squeue/sacct: SLURM 22.05's recorded answers, by command."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> CommandResult:
        self.calls.append(argv[0])
        return CommandResult(tuple(argv), 0, self.answers[argv[0]].encode(), b"", 0.0)


def backend(tmp_path: Path, runner: CannedSlurm) -> SlurmBackend:
    config, _ = parse_config({"ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs")}, environ={})
    return SlurmBackend(config, runner, policy_from_config(config.policy_raw))  # type: ignore[arg-type]


@pytest.mark.parametrize("line", [JOBACCT_LINE, ""])
def test_a_failed_job_is_oomkilled_only_with_slurmstepds_line(tmp_path: Path, line: str) -> None:
    _root, directory = job_dir(tmp_path)
    (directory / "runner.out").write_text(f"slurmstepd-vm: error: {line}\n" if line else "pod-runner: started\n")
    squeue = "\x1f".join(["7", "FAILED", "JobLaunchFailure", "vm", "2026-12-07T04:53:06", "2026-12-07T04:53:07",
                          "il:u1@x", str(directory)])
    sacct = f"7|FAILED|0:9|2026-12-07T04:53:06|2026-12-07T04:53:07|vm|{directory}\n"
    runner = CannedSlurm({"squeue": squeue + "\n", "sacct": sacct})
    b = backend(tmp_path, runner)
    for job in (asyncio.run(b.query(["7"]))["7"], asyncio.run(b.query_finished(["7"]))["7"]):
        if line:
            assert (job.abnormal_reason, job.detail) == ("OOMKilled", line)
        else:
            assert job.abnormal_reason == "" and job.state == "FAILED"


def test_out_of_memory_is_oomkilled_with_or_without_the_output(tmp_path: Path) -> None:
    _root, directory = job_dir(tmp_path)
    fields = ["8", "OUT_OF_MEMORY", "OutOfMemory", "vm", "2026-12-07T04:53:38", "2026-12-07T04:53:38", "il:u1@x"]
    runner = CannedSlurm({"squeue": "\x1f".join([*fields, str(directory)]) + "\n"})
    job = asyncio.run(backend(tmp_path, runner).query(["8"]))["8"]
    assert (job.abnormal_reason, job.detail) == ("OOMKilled", "OutOfMemory")
    (directory / "runner.out").write_text(f"slurmstepd-vm: error: {CGROUP_LINE} Some of your processes ...\n")
    job = asyncio.run(backend(tmp_path, runner).query(["8"]))["8"]
    assert (job.abnormal_reason, job.detail) == ("OOMKilled", CGROUP_LINE)
