"""SLURM job states as data: scheduler word -> what it means for the pod.

Memory enforcement shows in two ways in SLURM 22.05: with task/cgroup (ConstrainRAMSpace) the
kernel's OOM killer acts inside the job's cgroup and the job ends OUT_OF_MEMORY; with
jobacct_gather/linux and ``JobAcctGatherParams=OverMemoryKill`` slurmstepd SIGKILLs the whole
batch step and the job ends FAILED (reason JobLaunchFailure, ExitCode 0:9), the memory kill named
only in slurmstepd's lines in the job's output file (slurm.memory reads them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmState:
    active: bool
    running: bool
    abnormal_reason: str = ""  # for ended jobs: why the containers were stopped
    waiting_reason: str = ""  # for active jobs that are not running


STATES: dict[str, SlurmState] = {
    "PENDING": SlurmState(True, False, waiting_reason="Pending"),
    "CONFIGURING": SlurmState(True, False, waiting_reason="ContainerCreating"),
    "REQUEUED": SlurmState(True, False, waiting_reason="Requeued"),
    "REQUEUE_HOLD": SlurmState(True, False, waiting_reason="Requeued"),
    "REQUEUE_FED": SlurmState(True, False, waiting_reason="Requeued"),
    "RESV_DEL_HOLD": SlurmState(True, False, waiting_reason="Held"),
    "SUSPENDED": SlurmState(True, True),
    "STOPPED": SlurmState(True, True),
    "RUNNING": SlurmState(True, True),
    "COMPLETING": SlurmState(True, True),
    "RESIZING": SlurmState(True, True),
    "SIGNALING": SlurmState(True, True),
    "STAGE_OUT": SlurmState(True, True),
    "COMPLETED": SlurmState(False, False),
    "FAILED": SlurmState(False, False),
    "SPECIAL_EXIT": SlurmState(False, False),
    "CANCELLED": SlurmState(False, False, abnormal_reason="Cancelled"),
    "REVOKED": SlurmState(False, False, abnormal_reason="Cancelled"),
    "TIMEOUT": SlurmState(False, False, abnormal_reason="DeadlineExceeded"),
    "DEADLINE": SlurmState(False, False, abnormal_reason="DeadlineExceeded"),
    "OUT_OF_MEMORY": SlurmState(False, False, abnormal_reason="OOMKilled"),
    "NODE_FAIL": SlurmState(False, False, abnormal_reason="NodeFail"),
    "BOOT_FAIL": SlurmState(False, False, abnormal_reason="NodeFail"),
    "PREEMPTED": SlurmState(False, False, abnormal_reason="Preempted"),
}

UNKNOWN = SlurmState(True, False, waiting_reason="Unknown")
OOM_KILLED = "OOMKilled"


def lookup(word: str) -> SlurmState:
    """sacct prints e.g. 'CANCELLED by 0': the first word decides."""
    return STATES.get(word.split()[0].upper() if word.strip() else "", UNKNOWN)


def may_be_memory_kill(state_word: str, reason: str, signal: int | None) -> bool:
    """An ended job whose output is worth reading for slurmstepd's memory-kill line."""
    word = state_word.split()[0].upper() if state_word.strip() else ""
    if word == "OUT_OF_MEMORY":
        return True
    return word == "FAILED" and (reason == "JobLaunchFailure" or signal == 9)
