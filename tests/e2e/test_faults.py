"""Fault suite, written once and parametrised by backend: plugin kill -9, backend outage."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.kits import KIT_NAMES, BackendKit, open_kit
from tests.harness import PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

@pytest.fixture(params=KIT_NAMES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    yield from open_kit(request, tmp_path, request.param)


def _restart(plugin: PluginProcess) -> None:
    plugin.kill(signal.SIGKILL)
    plugin.start()


def test_kill_9_with_pods_in_every_phase(kit: BackendKit) -> None:
    if kit.name == "podman":
        pytest.skip("needs a pod kept pending by the scheduler; podman has no queue "
                    "(test_podman_e2e.py::test_kill_9_with_pods_in_every_phase covers podman)")
    plugin = kit.plugin()
    pending = pod_body("pending", [container("c", ["true"])], annotations=kit.pending_annotations())
    running = pod_body("running", [container("c", ["sh", "-c", "echo up; sleep 600"])], terminationGracePeriodSeconds=1)
    done = pod_body("done", [container("c", ["sh", "-c", "echo finished"])])
    failed = pod_body("failed", [container("c", ["sh", "-c", "echo bad; exit 3"])])
    deleting = pod_body("deleting", [container("c", ["sleep", "600"])], terminationGracePeriodSeconds=30)
    pods = [pending, running, done, failed, deleting]
    jids = {p["pod"]["metadata"]["name"]: plugin.create(p)["PodJID"] for p in pods}
    plugin.wait_done(done)
    plugin.wait_done(failed)
    plugin.wait_status(running, lambda s: "running" in s["containers"][0]["state"])
    plugin.wait_status(deleting, lambda s: "running" in s["containers"][0]["state"])
    assert plugin.delete(deleting).status_code == 200

    _restart(plugin)

    assert "waiting" in plugin.status(pending)["containers"][0]["state"]
    assert plugin.status(pending)["JID"] == jids["pending"]
    assert "running" in plugin.wait_status(running, lambda s: True)["containers"][0]["state"]
    assert exit_codes(plugin.status(done)) == {"c": 0}
    assert exit_codes(plugin.status(failed)) == {"c": 3}
    assert plugin.logs(done, "c").text == "finished\n"
    assert plugin.logs(failed, "c").text == "bad\n"
    assert plugin.logs(running, "c").text == "up\n"
    # the delete asked before the crash is carried out (graceful cancel, then the hard one)
    deadline = time.monotonic() + 60
    while plugin.status(deleting) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert plugin.status(deleting) is None
    assert not kit.job_alive(jids["deleting"])
    for pod in (pending, running, done, failed):
        assert plugin.delete(pod).status_code == 200
    deadline = time.monotonic() + 30
    while any(kit.job_alive(jids[n]) for n in ("pending", "running")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not kit.job_alive(jids["pending"]) and not kit.job_alive(jids["running"])
    for pod in pods:
        uid = pod["pod"]["metadata"]["uid"]
        assert len(kit.jobs_for(plugin, uid)) == 1, "a restart must never submit again"


@pytest.mark.parametrize("step", ["before-submit", "after-submit", "as-answered"])
def test_kill_at_each_step_of_create_leaves_exactly_one_job(kit: BackendKit, tmp_path: Path, step: str) -> None:
    """as-answered: the kill lands while the plugin takes sbatch's answer, when the job id is written
    behind (core/records/state.py: put_soon): lost or not, recovery finds the one job."""
    if kit.name != "slurm":
        pytest.skip("the crash wrapper wraps sbatch")
    wrapper = tmp_path / "sbatch-crash"
    marker = tmp_path / "crash-once"
    marker.write_text(step)
    real = shutil.which("sbatch")
    # named stand-in around the REAL sbatch: kills the plugin (its parent) at the chosen step, once
    wrapper.write_text(
        "#!/bin/bash\n"
        f"mode=$(cat {marker} 2>/dev/null); rm -f {marker}\n"
        '[ "$mode" = before-submit ] && kill -9 $PPID && exit 1\n'
        f'out=$({real} "$@"); rc=$?\n'
        '[ "$mode" = after-submit ] && kill -9 $PPID && sleep 1 && exit 1\n'
        '[ "$mode" = as-answered ] && { (kill -9 $PPID) & }\n'
        'printf "%s\\n" "$out"; exit $rc\n'
    )
    wrapper.chmod(0o755)
    plugin = kit.plugin(SbatchPath=str(wrapper))
    body = pod_body("crashy", [container("c", ["sh", "-c", "echo survived"])])
    uid = body["pod"]["metadata"]["uid"]
    if step == "as-answered":
        with contextlib.suppress(httpx.HTTPError):  # the answer may or may not get out first
            plugin.client.post("/create", json=body)
    else:
        with pytest.raises(Exception):
            plugin.client.post("/create", json=body)
    assert plugin.proc is not None
    plugin.proc.wait(timeout=20)
    plugin.start()
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0}
    assert len(kit.jobs_for(plugin, uid)) == 1
    # interLink may repeat the create after the failure: still one job
    assert plugin.create(body)["PodJID"] == status["JID"]
    assert len(kit.jobs_for(plugin, uid)) == 1
    assert plugin.logs(body, "c").text == "survived\n"


def test_recovery_from_the_scheduler_alone(kit: BackendKit) -> None:
    plugin = kit.plugin()
    body = pod_body(
        "orphan", [container("c", ["sh", "-c", "echo still-here; sleep 600"])], terminationGracePeriodSeconds=1
    )
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, lambda s: "running" in s["containers"][0]["state"])
    plugin.kill(signal.SIGKILL)
    shutil.rmtree(plugin.config["StateDir"])
    plugin.start()
    status = plugin.wait_status(body, lambda s: "running" in s["containers"][0]["state"])
    assert status["JID"] == job_id
    assert plugin.logs(body, "c").text == "still-here\n"
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 30
    while kit.job_alive(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not kit.job_alive(job_id)


def test_backend_outage_exactly_as_designed(kit: BackendKit) -> None:
    plugin = kit.plugin(SubmitDeadline=600)
    quick = kit.plugin(SubmitDeadline=3)
    survivor = pod_body("survivor", [container("c", ["sh", "-c", "sleep 8; echo done"])])
    doomed = pod_body("doomed", [container("c", ["sleep", "600"])], terminationGracePeriodSeconds=1)
    plugin.create(survivor)
    doomed_jid = plugin.create(doomed)["PodJID"]
    plugin.wait_status(survivor, lambda s: "running" in s["containers"][0]["state"])
    plugin.wait_status(doomed, lambda s: "running" in s["containers"][0]["state"])

    kit.stop_backend()
    try:
        # SLURM clients need ~9 s to give up on a stopped slurmctld: wait for the failed poll
        deadline = time.monotonic() + 60
        ping = plugin.ping()
        while not ping["taints"] and time.monotonic() < deadline:
            time.sleep(0.5)
            ping = plugin.ping()
        assert ping["status"] == "ok" and "resources" not in ping
        assert {"key": "interlink.eu/backend-unavailable", "value": "true", "effect": "NoSchedule"} in ping["taints"]
        assert plugin.status(survivor) is not None  # answered from the cache, 200

        deferred = pod_body("deferred", [container("c", ["sh", "-c", "echo late"])])
        created = plugin.create(deferred)
        assert created["PodJID"] == f"pending-{deferred['pod']['metadata']['uid']}"
        waiting = plugin.status(deferred)["containers"][0]["state"]["waiting"]
        assert waiting["reason"] == "BackendUnavailable"
        assert "backend unreachable since" in waiting["message"]

        assert plugin.delete(doomed).status_code == 200  # a durable tombstone

        expired = pod_body("expired", [container("c", ["true"])])
        quick.create(expired)
        status = quick.wait_done(expired, timeout=30)
        term = states(status)["c"]["terminated"]
        assert term["exitCode"] == 1 and term["reason"] == "SubmitFailed"
        assert kit.name in term["message"].lower()
        logs = plugin.logs(deferred, "c")
        assert logs.status_code in (400, 503)
    finally:
        kit.start_backend()

    status = plugin.wait_done(deferred, timeout=60)
    assert exit_codes(status) == {"c": 0} and not status["JID"].startswith("pending-")
    assert plugin.logs(deferred, "c").text == "late\n"
    assert exit_codes(plugin.wait_done(survivor, timeout=60)) == {"c": 0}
    deadline = time.monotonic() + 30
    while kit.job_alive(doomed_jid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not kit.job_alive(doomed_jid)
    assert kit.jobs_for(quick, expired["pod"]["metadata"]["uid"]) == []
    deadline = time.monotonic() + 40
    while (
        any(t["key"] == "interlink.eu/backend-unavailable" for t in plugin.ping()["taints"])
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not any(t["key"] == "interlink.eu/backend-unavailable" for t in plugin.ping()["taints"])
    assert all_terminated(plugin.status(deferred))
