"""HTCondor job states as data: JobStatus and hold codes -> what they mean for the pod."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interlink_plugins.core.backend import JobInfo

# hold reason codes (HoldReasonCode) the plugin acts on
HOLD_USER = 1  # condor_hold
HOLD_JOB_POLICY = 3  # periodic_hold (our deadline fallback, subcode DEADLINE_SUBCODE)
HOLD_SPOOLING_INPUT = 16  # submit(spool=True) before spool()
HOLD_OUT_OF_RESOURCES = 34  # memory usage above request_memory (startd policy)
HOLD_JOB_DURATION = 46  # allowed_job_duration
HOLD_EXECUTE_DURATION = 47  # allowed_execute_duration
DEADLINE_SUBCODE = 4701  # periodic_hold subcode of the plugin's own deadline check


@dataclass(frozen=True)
class CondorState:
    word: str
    active: bool
    running: bool
    waiting_reason: str = ""


STATES: dict[int, CondorState] = {
    1: CondorState("Idle", True, False, waiting_reason="Pending"),
    2: CondorState("Running", True, True),
    3: CondorState("Removed", False, False),
    4: CondorState("Completed", False, False),
    5: CondorState("Held", True, False, waiting_reason="Held"),
    6: CondorState("TransferringOutput", True, True),
    7: CondorState("Suspended", True, True),
}
UNKNOWN = CondorState("Unknown", True, False, waiting_reason="Unknown")
# condor_rm of a running job: JobStatus is 3 at once, but the job stays in the queue while its starter
# gives it the kill signal and job_max_vacate_time (the runner's preStop hooks and grace period)
REMOVING = CondorState("Removing", True, True)

# attributes every query and history call projects (attribute names are case-insensitive)
PROJECTION = [
    "ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode", "HoldReasonSubCode",
    "LastHoldReason", "LastHoldReasonCode", "LastHoldReasonSubCode", "RemoveReason", "RemoteHost",
    "LastRemoteHost", "JobCurrentStartDate", "CompletionDate", "EnteredCurrentStatus", "ExitCode",
    "ExitBySignal", "ExitSignal", "NumJobStarts", "StageOutFinish", "InterLinkPodUID", "InterLinkJobDir",
    "InterLinkContainers", "QDate", "JobMaxVacateTime",
]  # fmt: skip


def value(ad: Mapping[str, Any], key: str) -> Any:
    """An attribute as a plain Python value; None when missing, undefined or an error."""
    found = ad.get(key)
    if found is None or isinstance(found, bool | int | float | str):
        return found
    return None  # classad2.Value.Undefined / Error, expressions


def text(ad: Mapping[str, Any], key: str) -> str:
    found = value(ad, key)
    return found if isinstance(found, str) else ""


def number(ad: Mapping[str, Any], key: str) -> int | None:
    found = value(ad, key)
    if isinstance(found, bool):
        return int(found)
    if isinstance(found, int | float):
        return int(found)
    return None


def job_id(ad: Mapping[str, Any]) -> str:
    return f"{number(ad, 'ClusterId')}.{number(ad, 'ProcId') or 0}"


def _rfc3339(epoch: int | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node(ad: Mapping[str, Any]) -> str:
    slot = text(ad, "RemoteHost") or text(ad, "LastRemoteHost")
    return slot.rpartition("@")[2]


def _hold(ad: Mapping[str, Any], prefix: str) -> tuple[int | None, int | None, str]:
    return number(ad, f"{prefix}HoldReasonCode"), number(ad, f"{prefix}HoldReasonSubCode"), text(
        ad, f"{prefix}HoldReason"
    )


def _removed_reason(ad: Mapping[str, Any], deleting: bool) -> tuple[str, str]:
    """(abnormal reason, state text) of a removed job, from its last hold and RemoveReason."""
    code, sub, hold_text = _hold(ad, "Last")
    if code is None:  # still in the queue right after the removal: the hold is not "Last" yet
        code, sub, hold_text = _hold(ad, "")
    remove_text = text(ad, "RemoveReason")
    if code in (HOLD_EXECUTE_DURATION, HOLD_JOB_DURATION) or (code == HOLD_JOB_POLICY and sub == DEADLINE_SUBCODE):
        return "DeadlineExceeded", f"removed after exceeding its deadline ({hold_text})"
    if code == HOLD_OUT_OF_RESOURCES:
        return "OOMKilled", f"removed after being held: {hold_text}"
    if code is not None and "PeriodicRemove" in remove_text and not deleting:
        return "HeldTimeout", f"removed after being held longer than HeldTimeout: {hold_text}"
    detail = f"removed: {remove_text}" if remove_text else "removed"
    return "Cancelled", detail


def removing(ad: Mapping[str, Any]) -> bool:
    """A removed job (a queue ad) whose processes still run: its shadow still holds the execute slot."""
    return number(ad, "JobStatus") == 3 and bool(text(ad, "RemoteHost"))


def job_info(ad: Mapping[str, Any], *, deleting: bool = False, in_queue: bool = False) -> JobInfo:
    """One job ad (queue or history) as the core's JobInfo."""
    status = number(ad, "JobStatus") or 0
    state = STATES.get(status, UNKNOWN)
    if in_queue and removing(ad):
        return _info(ad, REMOVING.word, REMOVING.active, REMOVING.running, "",
                     "removal requested: the job's processes are stopping in their grace period")
    word, detail, abnormal = state.word, "", ""
    exit_code = number(ad, "ExitCode")
    signal = None
    if status == 5:
        code, sub, hold_text = _hold(ad, "")
        if code == HOLD_SPOOLING_INPUT:
            return _info(ad, "Held", True, False, "ContainerCreating", "spooling input files")
        detail = f"{hold_text} (HoldReasonCode {code}, subcode {sub})" if code is not None else hold_text
    elif status == 1 and (number(ad, "NumJobStarts") or 0) > 0:
        detail = "idle again after an earlier start (evicted or released)"
    elif status == 3:
        abnormal, word = _removed_reason(ad, deleting)
    elif status == 4 and value(ad, "ExitBySignal") is True:
        signal = number(ad, "ExitSignal")
        abnormal = "Error"
        word = f"Completed: the pod runner was killed by signal {signal}"
        exit_code = 128 + signal if signal else exit_code
    return _info(ad, word, state.active, state.running, state.waiting_reason, detail,
                 abnormal=abnormal, exit_code=exit_code, signal=signal)


def _info(
    ad: Mapping[str, Any],
    word: str,
    active: bool,
    running: bool,
    waiting: str,
    detail: str,
    *,
    abnormal: str = "",
    exit_code: int | None = None,
    signal: int | None = None,
) -> JobInfo:
    finished = "" if active else _rfc3339(number(ad, "CompletionDate") or number(ad, "EnteredCurrentStatus"))
    return JobInfo(
        job_id=job_id(ad),
        state=word,
        active=active,
        running=running,
        abnormal_reason=abnormal,
        detail=detail,
        node=_node(ad),
        exit_code=exit_code,
        signal=signal,
        started_at=_rfc3339(number(ad, "JobCurrentStartDate")),
        finished_at=finished,
        waiting_reason=waiting,
        restarts=max(0, (number(ad, "NumJobStarts") or 0) - 1),
    )
