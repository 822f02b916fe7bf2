"""HTCondor job ads -> JobInfo: every JobStatus, holds, removals and their reasons."""

from __future__ import annotations

from typing import Any

import pytest

from interlink_plugins.htcondor import states
from interlink_plugins.htcondor.runnerstate import from_chirp as _from_chirp
from interlink_plugins.htcondor.runnerstate import held_view as _held_view
from interlink_plugins.htcondor.submit import parse_chirped


def ad(status: int, **extra: Any) -> dict[str, Any]:
    return {"ClusterId": 12, "ProcId": 0, "JobStatus": status, "RemoteHost": "slot1_1@node7",
            "JobCurrentStartDate": 1795626400, "EnteredCurrentStatus": 1795626460, **extra}


@pytest.mark.parametrize(
    ("status", "active", "running", "waiting"),
    [(1, True, False, "Pending"), (2, True, True, ""), (3, False, False, ""), (4, False, False, ""),
     (5, True, False, "Held"), (6, True, True, ""), (7, True, True, ""), (99, True, False, "Unknown")],
)
def test_every_job_status_is_mapped(status: int, active: bool, running: bool, waiting: str) -> None:
    info = states.job_info(ad(status, HoldReason="x", HoldReasonCode=1))
    assert (info.active, info.running, info.waiting_reason) == (active, running, waiting)
    assert info.job_id == "12.0" and info.node == "node7"
    assert info.started_at == "2026-11-25T17:06:40Z"
    assert info.finished_at == ("" if active else "2026-11-25T17:07:40Z")


def test_held_carries_the_hold_reason() -> None:
    info = states.job_info(ad(5, HoldReason="via condor_hold (by user alice)", HoldReasonCode=1, HoldReasonSubCode=0))
    assert info.waiting_reason == "Held" and "via condor_hold (by user alice)" in info.detail
    assert "HoldReasonCode 1" in info.detail


def test_spooling_input_hold_is_container_creating() -> None:
    info = states.job_info(ad(5, HoldReason="Spooling input data files", HoldReasonCode=16))
    assert info.waiting_reason == "ContainerCreating" and info.active


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"LastHoldReasonCode": 47, "LastHoldReason": "exceeded allowed execute duration"}, "DeadlineExceeded"),
        ({"LastHoldReasonCode": 46, "LastHoldReason": "exceeded allowed job duration"}, "DeadlineExceeded"),
        ({"LastHoldReasonCode": 3, "LastHoldReasonSubCode": 4701, "LastHoldReason": "deadline"}, "DeadlineExceeded"),
        ({"LastHoldReasonCode": 34, "LastHoldReason": "memory usage exceeded"}, "OOMKilled"),
        ({"LastHoldReasonCode": 1, "LastHoldReason": "via condor_hold",
          "RemoveReason": "The job attribute PeriodicRemove expression '...' evaluated to TRUE"}, "HeldTimeout"),
        ({"HoldReasonCode": 3, "HoldReasonSubCode": 4701, "HoldReason": "in the queue"}, "DeadlineExceeded"),
        ({"RemoveReason": "via condor_rm (by user bob)"}, "Cancelled"),
        ({}, "Cancelled"),
    ],
)
def test_removed_jobs_keep_their_reason(extra: dict[str, Any], reason: str) -> None:
    info = states.job_info(ad(3, **extra))
    assert not info.active and info.abnormal_reason == reason
    if "LastHoldReason" in extra:
        assert extra["LastHoldReason"] in info.state


def test_completed_exit_code_and_signal() -> None:
    assert states.job_info(ad(4, ExitCode=3, ExitBySignal=False)).exit_code == 3
    killed = states.job_info(ad(4, ExitBySignal=True, ExitSignal=9))
    assert killed.exit_code == 137 and killed.signal == 9 and killed.abnormal_reason == "Error"


def test_undefined_values_are_absent() -> None:
    class Undefined:  # stands for classad2.Value.Undefined
        pass

    info = states.job_info(ad(1, HoldReason=Undefined(), NumJobStarts=Undefined()))
    assert info.detail == "" and info.restarts == 0


def test_chirped_state_round_trip() -> None:
    text = ("init|2026-11-25T10:00:00Z|2026-11-25T10:00:01Z|0||||;"
            "c|2026-11-25T10:00:02Z|||1|1 2026-11-25T10:00:01Z 2026-11-25T10:00:02Z|"
            "CrashLoopBackOff back-off 10s|;")
    parsed = parse_chirped(text)
    init, main = _from_chirp(parsed["init"]), _from_chirp(parsed["c"])
    assert init.exit_code == 0 and init.finished == "2026-11-25T10:00:01Z"
    assert main.exit_code is None and main.restarts == 1 and main.last == (1, "2026-11-25T10:00:01Z",
                                                                           "2026-11-25T10:00:02Z")
    assert main.waiting == ("CrashLoopBackOff", "back-off 10s")
    held = _held_view(init)
    assert held.started == "" and held.restarts == 1 and held.last == (0, "2026-11-25T10:00:00Z",
                                                                       "2026-11-25T10:00:01Z")


def test_a_removed_job_still_running_in_the_queue_is_removing() -> None:
    """condor_rm: JobStatus 3 at once, the job's processes get job_max_vacate_time (preStop, grace period)."""
    removing = states.job_info(ad(3, RemoveReason="pod deleted by interLink"), in_queue=True)
    assert removing.active and removing.running and removing.state == "Removing"
    # the same ad from the history, or a job removed before it ran (no RemoteHost): over
    assert not states.job_info(ad(3), in_queue=False).active
    assert not states.job_info(ad(3, RemoteHost=None), in_queue=True).active


def test_the_last_run_reason_comes_through_the_chirped_state() -> None:
    files = _from_chirp(["", "", "", "1", "137 2026-01-01T00:00:00Z 2026-01-01T00:00:05Z Unhealthy", "", ""])
    assert files.last == (137, "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z") and files.last_reason == ("Unhealthy", "")
