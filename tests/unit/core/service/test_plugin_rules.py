"""PluginService's lifecycle rules (DESIGN.md, Semantics: "Backend down", "Identity of a job", "Delete",
"Ping") in milliseconds: the real service and state store around a STAND-IN scheduler and clock
(tests/unit/fakes.py). The e2e tier proves the same rules against the real daemons.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.api.answers import error_answer
from interlink_plugins.core.errors import BackendUnavailable, SubmitRejected
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import epoch_rfc3339
from interlink_plugins.core.service import (
    BACKEND_TAINT,
    PARTITION_TAINT,
    THROTTLE_BACKOFF_MAX,
    VANISHED_AFTER_SECONDS,
    LogRequest,
    PluginService,
)
from tests.podfactory import container, pod_body, status_pod
from tests.unit.fakes import FakeBackend, FakeClock, FakeRemoteLogs, LostAnswer, make_service, restart

INTERVAL = 5.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def create(service: PluginService, name: str = "p", **spec: Any) -> dict[str, Any]:
    body = pod_body(name, [container("c", ["true"])], **spec)
    answer = run(service.create(body))
    assert answer["PodUID"] == body["pod"]["metadata"]["uid"]
    return body


def record(service: PluginService, body: dict[str, Any]) -> PodRecord:
    found = service.store.get(body["pod"]["metadata"]["uid"])
    assert found is not None
    return found


def waiting(service: PluginService, body: dict[str, Any]) -> dict[str, Any]:
    """The waiting state of the pod's container as /status answers it."""
    [status] = service.status([status_pod(body)])
    state = status["containers"][0]["state"]
    assert "waiting" in state, state
    return dict(state["waiting"])


def terminated(service: PluginService, body: dict[str, Any]) -> dict[str, Any]:
    [status] = service.status([status_pod(body)])
    state = status["containers"][0]["state"]
    assert "terminated" in state, state
    return dict(state["terminated"])


def taints(service: PluginService) -> set[str]:
    return {taint["key"] for taint in service.ping()["taints"]}


@pytest.fixture
def svc(tmp_path: Path) -> tuple[PluginService, FakeBackend, FakeClock]:
    return make_service(tmp_path, poll_interval=INTERVAL, submit_deadline=900.0, grace_period_cap=60.0)


# --- create and submission ---------------------------------------------------------------------


def test_a_create_submits_once_and_answers_the_job_id(svc: Any) -> None:
    service, backend, _clock = svc
    body = create(service)
    rec = record(service, body)
    assert rec.phase == "submitted" and rec.job_id == backend.job_of(rec.uid)
    # interLink retries a create it did not see answered: the same pod is never submitted twice
    assert run(service.create(body))["PodJID"] == rec.job_id
    assert len(backend.called("submit")) == 1 and backend.called("find_job") == []


def test_backend_down_at_create_answers_200_and_submits_when_it_is_back(svc: Any) -> None:
    service, backend, clock = svc
    backend.down = True
    body = create(service)
    rec = record(service, body)
    assert rec.phase == "waiting-backend" and rec.pod_jid == f"pending-{rec.uid}"
    assert waiting(service, body)["reason"] == "BackendUnavailable"
    clock.advance(INTERVAL)
    run(service.poll_once())  # still down: the pod waits
    assert record(service, body).phase == "waiting-backend"
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    rec = record(service, body)
    assert rec.phase == "submitted" and rec.last_error == ""
    assert list(backend.jobs) == [rec.job_id]  # one job, however many attempts


def test_while_down_one_probe_per_poll_then_every_waiting_pod_at_once(svc: Any) -> None:
    service, backend, clock = svc
    backend.down = True
    bodies = [create(service, f"p{i}") for i in range(3)]
    attempts = len(backend.called("submit"))
    assert attempts == 1  # the first create found the outage; the others were stored without trying
    clock.advance(INTERVAL)
    before = len(backend.calls)
    run(service.poll_once())
    # the oldest is the probe: after an attempt that may have reached the scheduler, a look-up comes first
    probes = [call for call in backend.calls[before:] if call[0] in ("submit", "find_job")]
    assert probes == [("find_job", record_uid(bodies[0]))]
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert all(record(service, body).phase == "submitted" for body in bodies)
    assert len(backend.jobs) == 3


def test_a_submission_whose_answer_was_lost_is_found_not_submitted_again(svc: Any) -> None:
    service, backend, clock = svc
    backend.submit_errors.append(LostAnswer())
    body = create(service)
    assert record(service, body).phase == "waiting-backend"
    clock.advance(INTERVAL)
    run(service.poll_once())
    rec = record(service, body)
    assert rec.phase == "submitted" and rec.job_id == backend.job_of(rec.uid)
    assert len(backend.jobs) == 1 and len(backend.called("submit")) == 1
    assert backend.called("find_job") == [("find_job", rec.uid)]


def test_a_refused_submission_is_final_with_slurms_words(svc: Any) -> None:
    service, backend, _clock = svc
    backend.submit_errors.append(SubmitRejected("sbatch: error: Invalid partition name specified"))
    body = create(service)
    rec = record(service, body)
    assert rec.phase == "failed-submit"
    state = terminated(service, body)
    assert (state["exitCode"], state["reason"]) == (1, "SubmitFailed")
    assert "Invalid partition name specified" in state["message"]
    run(service.poll_once())
    assert len(backend.called("submit")) == 1


# --- throttling --------------------------------------------------------------------------------


def test_throttling_backs_off_doubling_up_to_the_cap_and_outlives_the_deadline(svc: Any) -> None:
    service, backend, clock = svc
    limit = "sbatch: error: QOSMaxSubmitJobPerUserLimit"
    backend.submit_errors += [SubmitRejected(limit, retryable=True) for _ in range(8)]
    start = clock.now
    body = create(service)
    assert waiting(service, body)["reason"] == "SubmitThrottled"
    backoffs = []
    for _ in range(7):
        rec = record(service, body)
        wait = rec.lifecycle.retry_at - clock.now
        backoffs.append(wait)
        clock.advance(wait - 0.5)
        before = len(backend.called("submit"))
        run(service.poll_once())
        assert len(backend.called("submit")) == before  # not before its time
        clock.advance(0.5)
        run(service.poll_once())
        assert len(backend.called("submit")) == before + 1
    assert backoffs == [min(THROTTLE_BACKOFF_MAX, INTERVAL * 2**n) for n in range(7)]
    # the scheduler answered each time: never looked up, and the submit deadline (for outages) moves on
    assert backend.called("find_job") == []
    rec = record(service, body)
    assert rec.deadline_at >= clock.now + 900.0 - THROTTLE_BACKOFF_MAX
    assert rec.phase == "waiting-backend"
    clock.advance(THROTTLE_BACKOFF_MAX)
    run(service.poll_once())  # the limit is lifted
    assert record(service, body).phase == "submitted" and clock.now - start > 900.0 / 4


def test_a_throttled_pod_keeps_its_back_off_across_a_restart(svc: Any) -> None:
    service, backend, clock = svc
    backend.submit_errors += [SubmitRejected("QOSMaxSubmitJobPerUserLimit", retryable=True) for _ in range(2)]
    body = create(service)
    clock.advance(INTERVAL)
    run(service.poll_once())  # the second refusal: the next attempt in 2 intervals
    retry_at = record(service, body).lifecycle.retry_at
    assert retry_at == clock.now + 2 * INTERVAL
    service = restart(service, backend, clock)
    rec = record(service, body)
    assert (rec.lifecycle.throttled, rec.lifecycle.retry_at, rec.lifecycle.submit_refused) == (2, retry_at, True)
    assert waiting(service, body)["reason"] == "SubmitThrottled"
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert len(backend.called("submit")) == 2  # not before its time
    clock.advance(INTERVAL)
    run(service.poll_once())
    # the scheduler refused the last attempt: it cannot have gone through, so it is not looked up
    assert record(service, body).phase == "submitted" and backend.called("find_job") == []


# --- SubmitDeadline ----------------------------------------------------------------------------


def test_submit_deadline_ends_a_pod_the_backend_never_took(svc: Any) -> None:
    service, backend, clock = svc
    backend.down = True
    body = create(service)
    clock.advance(899.0)
    run(service.poll_once())
    assert record(service, body).phase == "waiting-backend"
    clock.advance(1.0)
    run(service.poll_once())
    rec = record(service, body)
    assert rec.phase == "failed-submit"
    state = terminated(service, body)
    assert (state["exitCode"], state["reason"]) == (1, "SubmitFailed")
    assert "fake unavailable" in state["message"] and "connection refused" in state["message"]
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert backend.jobs == {}  # given up: never submitted afterwards


# --- recovery after a crash --------------------------------------------------------------------


def crashed_record(service: PluginService, body: dict[str, Any]) -> PodRecord:
    """What a crash between the state write and sbatch's answer leaves: a record still 'submitting'."""
    rec = record(service, body)
    rec.phase, rec.job_id = "submitting", ""
    service.store.put(rec)
    return rec


def test_recovery_finds_the_job_of_a_pod_caught_submitting(svc: Any) -> None:
    service, backend, _clock = svc
    body = create(service)
    job_id = record(service, body).job_id
    crashed_record(service, body)
    run(service.recover())
    rec = record(service, body)
    assert (rec.phase, rec.job_id) == ("submitted", job_id)
    assert len(backend.called("submit")) == 1 and len(backend.jobs) == 1


def test_recovery_submits_a_pod_whose_submission_never_arrived(svc: Any) -> None:
    service, backend, _clock = svc
    backend.submit_errors.append(SubmitRejected("lost before sbatch ran", retryable=True))
    body = create(service)
    crashed_record(service, body)
    run(service.recover())
    rec = record(service, body)
    assert rec.phase == "submitted" and rec.job_id == backend.job_of(rec.uid)
    assert len(backend.jobs) == 1


def test_recovery_with_the_backend_down_submits_when_it_is_back(svc: Any) -> None:
    service, backend, clock = svc
    backend.submit_errors.append(SubmitRejected("lost before sbatch ran", retryable=True))
    body = create(service)
    crashed_record(service, body)
    backend.down = True
    run(service.recover())
    assert BACKEND_TAINT in taints(service)
    assert record(service, body).phase == "waiting-backend"
    assert waiting(service, body)["reason"] == "BackendUnavailable"
    backend.down = False
    clock.advance(INTERVAL)
    before = len(backend.calls)
    run(service.poll_once())
    rec = record(service, body)
    assert rec.phase == "submitted" and rec.job_id == backend.job_of(rec.uid)
    # the submission the crash interrupted may have reached the scheduler: looked up before submitting
    lookups = [call[0] for call in backend.calls[before:] if call[0] in ("find_job", "submit")]
    assert lookups == ["find_job", "submit"]
    assert BACKEND_TAINT not in taints(service)


def test_recovery_with_the_backend_down_finds_the_job_the_lost_submission_queued(svc: Any) -> None:
    service, backend, clock = svc
    backend.down = True
    body = create(service)  # waits for the backend
    backend.down = False
    backend.submit_errors.append(LostAnswer())
    clock.advance(INTERVAL)
    run(service.poll_once())  # the retry reaches the queue, its answer is lost: then the plugin crashes
    job_id = backend.job_of(record(service, body).uid)
    assert job_id is not None
    crashed_record(service, body)
    backend.down = True
    run(service.recover())
    assert record(service, body).phase == "waiting-backend"
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    rec = record(service, body)
    assert (rec.phase, rec.job_id) == ("submitted", job_id)
    assert list(backend.jobs) == [job_id]  # never submitted twice


def test_recovery_with_the_backend_down_for_good_ends_at_the_submit_deadline(svc: Any) -> None:
    service, backend, clock = svc
    body = create(service)
    crashed_record(service, body)
    backend.jobs.clear()  # the crash came before sbatch ran
    second = create(service, "q")
    crashed_record(service, second)
    backend.jobs.clear()
    backend.down = True
    before = len(backend.calls)
    run(service.recover())
    # one probe finds the outage: the other pod caught submitting is not probed again at start
    assert [call[0] for call in backend.calls[before:]].count("find_job") == 1
    assert {record(service, b).phase for b in (body, second)} == {"waiting-backend"}
    clock.advance(900.0)
    run(service.poll_once())
    for b in (body, second):
        assert record(service, b).phase == "failed-submit"
        state = terminated(service, b)
        assert state["reason"] == "SubmitFailed" and "connection refused" in state["message"]
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert backend.jobs == {}


# --- JobVanished -------------------------------------------------------------------------------


def test_a_job_that_left_queue_and_accounting_is_vanished_after_the_bound(svc: Any) -> None:
    service, backend, clock = svc
    body = create(service)
    job = backend.jobs[record(service, body).job_id]
    job.state = "RUNNING"
    run(service.poll_once())
    job.in_queue = job.in_accounting = False
    bound = max(VANISHED_AFTER_SECONDS, 3 * INTERVAL)
    run(service.poll_once())  # first seen missing
    clock.advance(bound - 1)
    run(service.poll_once())
    assert record(service, body).final_status is None
    clock.advance(1)
    run(service.poll_once())
    state = terminated(service, body)
    assert state["reason"] == "JobVanished" and state["exitCode"] == 137
    assert record(service, body).final_status is not None


def test_a_job_back_in_the_queue_is_not_vanished(svc: Any) -> None:
    service, backend, clock = svc
    body = create(service)
    job = backend.jobs[record(service, body).job_id]
    job.in_queue = False
    job.in_accounting = False
    run(service.poll_once())
    clock.advance(VANISHED_AFTER_SECONDS - 1)
    job.in_queue = True
    run(service.poll_once())
    job.in_queue = False
    clock.advance(VANISHED_AFTER_SECONDS - 1)
    run(service.poll_once())  # missing again: the bound counts from now
    assert record(service, body).final_status is None


def test_a_job_in_accounting_only_is_its_final_state_not_vanished(svc: Any) -> None:
    service, backend, clock = svc
    body = create(service)
    job = backend.jobs[record(service, body).job_id]
    job.state, job.in_queue, job.exit_code = "CANCELLED", False, 0
    clock.advance(2 * VANISHED_AFTER_SECONDS)
    run(service.poll_once())
    assert terminated(service, body)["reason"] == "Cancelled"


# --- delete ------------------------------------------------------------------------------------


def running(service: PluginService, backend: FakeBackend, **spec: Any) -> tuple[dict[str, Any], str]:
    body = create(service, **spec)
    job_id = record(service, body).job_id
    backend.jobs[job_id].state = "RUNNING"
    run(service.poll_once())
    return body, job_id


def test_delete_of_a_running_job_terms_then_kills_after_the_capped_grace(svc: Any) -> None:
    service, backend, clock = svc
    body, job_id = running(service, backend, terminationGracePeriodSeconds=600)
    run(service.delete(status_pod(body)))
    assert backend.called("cancel") == [("cancel", job_id, True)]
    clock.advance(59)
    run(service.poll_once())
    assert backend.called("cancel") == [("cancel", job_id, True)]  # within the cap of 60 s
    clock.advance(1)
    run(service.poll_once())
    assert backend.called("cancel")[-1] == ("cancel", job_id, False)
    run(service.poll_once())  # the job is gone: the pod is forgotten and its job dir removed
    assert service.store.get(record_uid(body)) is None
    assert backend.called("cleanup") == [("cleanup", record_uid(body))]


def record_uid(body: dict[str, Any]) -> str:
    return str(body["pod"]["metadata"]["uid"])


def test_a_delete_under_way_goes_on_after_a_restart_without_a_second_graceful_cancel(svc: Any) -> None:
    service, backend, clock = svc
    body, job_id = running(service, backend, terminationGracePeriodSeconds=20)
    run(service.delete(status_pod(body)))
    service = restart(service, backend, clock)
    assert record(service, body).lifecycle.delete_graceful_sent
    clock.advance(19)
    run(service.poll_once())
    assert backend.called("cancel") == [("cancel", job_id, True)]
    clock.advance(1)
    run(service.poll_once())
    assert backend.called("cancel")[-1] == ("cancel", job_id, False)
    run(service.poll_once())
    assert service.store.get(record_uid(body)) is None


def test_delete_grace_period_of_the_request_wins_below_the_cap(svc: Any) -> None:
    service, backend, clock = svc
    body, job_id = running(service, backend, terminationGracePeriodSeconds=600)
    request = status_pod(body)
    request["metadata"]["deletionGracePeriodSeconds"] = 10
    run(service.delete(request))
    clock.advance(9)
    run(service.poll_once())
    assert len(backend.called("cancel")) == 1
    clock.advance(1)
    run(service.poll_once())
    assert backend.called("cancel")[-1] == ("cancel", job_id, False)


def test_delete_of_a_pending_job_is_a_plain_cancel(svc: Any) -> None:
    service, backend, _clock = svc
    body = create(service)
    job_id = record(service, body).job_id
    run(service.poll_once())  # the job is known to be pending
    run(service.delete(status_pod(body)))
    assert backend.called("cancel") == [("cancel", job_id, False)]
    run(service.poll_once())
    assert service.store.get(record_uid(body)) is None


def test_delete_before_submission_forgets_the_pod(svc: Any) -> None:
    service, backend, _clock = svc
    backend.down = True
    body = create(service)
    answer = run(service.delete(status_pod(body)))
    assert "deleted before submission" in answer and service.store.get(record_uid(body)) is None
    backend.down = False
    run(service.poll_once())
    assert backend.jobs == {}


def test_delete_while_down_is_a_tombstone_carried_out_when_the_backend_returns(svc: Any) -> None:
    service, backend, clock = svc
    body, job_id = running(service, backend, terminationGracePeriodSeconds=5)
    backend.down = True
    answer = run(service.delete(status_pod(body)))
    assert job_id in answer and record(service, body).phase == "deleting"
    assert backend.jobs[job_id].state == "RUNNING"
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert record(service, body).phase == "deleting"  # durable: kept until the backend returns
    backend.down = False
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert ("cancel", job_id, True) in backend.calls
    clock.advance(INTERVAL)
    run(service.poll_once())
    assert backend.called("cancel")[-1] == ("cancel", job_id, False)
    run(service.poll_once())
    assert service.store.get(record_uid(body)) is None


# --- start ------------------------------------------------------------------------------------


def test_status_right_after_a_start_says_running_for_a_job_the_scheduler_runs(svc: Any) -> None:
    """The first poll comes before serving: without it, the first /status after a restart has no job state
    and a running pod reads ContainerCreating ('waiting for the scheduler') until the poller's first round."""
    service, backend, clock = svc
    body = create(service, init_containers=[container("i", ["true"])])
    backend.run(record_uid(body))
    service = restart(service, backend, clock)
    assert waiting(service, body)["reason"] == "ContainerCreating"  # before the start: nothing polled yet

    async def scenario() -> dict[str, Any]:
        await service.start()
        try:
            [status] = service.status([status_pod(body)])
            return dict(status)
        finally:
            await service.stop()

    status = run(scenario())
    assert status["containers"][0]["state"] == {"running": {"startedAt": "2027-01-15T08:00:00Z"}}
    assert status["initContainers"][0]["state"]["terminated"]["exitCode"] == 0


# --- outage: taints, cached status, 503 for logs, recovery -----------------------------------------


def test_outage_taints_the_node_keeps_statuses_and_recovers(svc: Any) -> None:
    service, backend, clock = svc
    run(service.start())
    try:
        body = create(service)
        run(service.poll_once())
        ping = service.ping()
        assert ping["resources"] == {"cpu": "8", "memory": f"{16 * 1024}Mi"} and BACKEND_TAINT not in taints(service)
        backend.down = True
        clock.advance(INTERVAL)
        down_at = clock.now
        run(service.poll_once())
        ping = service.ping()
        assert ping["status"] == "ok" and "resources" not in ping  # never 0: left out
        assert {"key": BACKEND_TAINT, "value": "true", "effect": "NoSchedule"} in ping["taints"]
        # /status answers from the cache, saying since when the backend is unreachable
        assert f"backend unreachable since {epoch_rfc3339(down_at)}" in waiting(service, body)["message"]
        clock.advance(INTERVAL)
        run(service.poll_once())
        assert service.down_since_text == epoch_rfc3339(down_at)  # the first failure, not the last
        backend.down = False
        clock.advance(INTERVAL)
        run(service.poll_once())
        assert BACKEND_TAINT not in taints(service) and "resources" in service.ping()
        assert "unreachable" not in waiting(service, body).get("message", "")
    finally:
        run(service.stop())


def test_a_drained_partition_is_a_taint_of_its_own(svc: Any) -> None:
    service, backend, _clock = svc
    backend.capacity = type(backend.capacity)(cpus=0, unavailable_reason="partition(s) debug down or drained")
    run(service.poll_once())
    assert taints(service) == {PARTITION_TAINT} and "resources" not in service.ping()


def test_only_a_log_read_answers_503_naming_the_backend(tmp_path: Path) -> None:
    service, backend, _clock = make_service(tmp_path, FakeRemoteLogs(tmp_path / "jobs"), poll_interval=INTERVAL)
    body = create(service)
    backend.down = True
    request = LogRequest(pod_uid=record_uid(body), container="c")
    with pytest.raises(BackendUnavailable) as raised:
        run(service.open_read(request))
    status, content = error_answer(raised.value)
    assert status == 503 and content["error"].startswith("backend fake unavailable: fetch_log")
    # the other routes answer 200 while it is down
    assert service.status([status_pod(body)]) and service.ping()["status"] == "ok"
    assert "being deleted" in run(service.delete(status_pod(body)))


def test_stop_ends_a_poll_loop_that_lost_the_first_cancel(svc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11's wait_for drops a cancel that arrives as the awaited command finishes: the poll loop
    went on and the plugin never exited on SIGTERM (a clean-clone run left such a plugin behind). stop()
    cancels until the loop has ended."""
    service, _backend, _clock = svc
    lost: list[bool] = []

    async def poll_once_losing_a_cancel() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            lost.append(True)  # swallowed, as wait_for does when the command has just exited

    monkeypatch.setattr(service.poller, "poll_once", poll_once_losing_a_cancel)

    async def scenario() -> None:
        service._poll_task = asyncio.create_task(service.poller.poll_forever(), name="poller")
        await asyncio.sleep(0.05)
        await asyncio.wait_for(service.stop(), 15)  # hung for ever before the fix

    run(scenario())
    assert lost == [True] and service._poll_task is not None and service._poll_task.done()
