"""The Podman backend's prober (podman/probes.py) and the planner's view of killed runs and pending
postStart hooks (podman/plan.py); the probes themselves run for real in tests/e2e/test_podman_probes.py."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path

import pytest

from interlink_plugins.core.podrunner.plan import ProbeRun
from interlink_plugins.podman.handlers import Outcome, kill_exec_leftovers
from interlink_plugins.podman.hooks import KILLED_FILE, read_killed, write_killed
from interlink_plugins.podman.plan import Observed, Run, plan_pod
from interlink_plugins.podman.probes import ProbeSupervisor, Target
from interlink_plugins.podman.spec import ContainerSpec, PodSpec


def _target(started: float | None = None) -> Target:
    return Target("pod", "c", 0, "cid", None, time.time() if started is None else started)


def test_startup_gates_liveness_and_a_failed_liveness_is_reported_once() -> None:
    calls: list[str] = []
    failures: list[str] = []
    answers = {"startup": iter([False, False, True]), "liveness": iter([True, False, False, False])}

    async def run_probe(target: Target, probe: ProbeRun) -> Outcome:
        calls.append(probe.kind)
        return Outcome(next(answers[probe.kind], False), "exit 1")

    async def scenario() -> ProbeSupervisor:
        sup = ProbeSupervisor(run_probe, lambda t, p, m: failures.append(m))
        probes = (ProbeRun("startup", ("exec", "x"), period_seconds=1, failure_threshold=5),
                  ProbeRun("liveness", ("exec", "y"), period_seconds=1, failure_threshold=2))
        sup.ensure(_target(), probes)
        state = sup.state("cid")
        assert state is not None and state.started is False and state.ready is False
        await asyncio.sleep(6.5)
        return sup

    sup = asyncio.run(scenario())
    assert calls[:3] == ["startup"] * 3 and set(calls[3:]) == {"liveness"}, calls
    assert failures == ["liveness probe failed 2 times (exit 1)"]
    state = sup.state("cid")
    assert state is not None and state.started is True and state.ready is False


def test_readiness_needs_success_threshold_and_falls_after_failure_threshold() -> None:
    answers = iter([True, True, False, False, True])
    seen: list[bool | None] = []

    async def run_probe(target: Target, probe: ProbeRun) -> Outcome:
        return Outcome(next(answers, True))

    async def scenario() -> None:
        sup = ProbeSupervisor(run_probe, lambda t, p, m: None)
        sup.ensure(_target(), (ProbeRun("readiness", ("exec", "r"), period_seconds=1, success_threshold=2,
                                        failure_threshold=2),))
        for _ in range(5):
            state = sup.state("cid")
            seen.append(state.ready if state else None)
            await asyncio.sleep(1)
        sup.retain(set())
        assert sup.state("cid") is None

    asyncio.run(scenario())
    # checks at 0,1,2,3,4 s: ok, ok (ready), fail, fail (not ready), ok
    assert seen[0] is False and seen[2] is True and seen[4] is False, seen


def test_a_container_found_running_after_a_plugin_restart_counts_as_started() -> None:
    async def run_probe(target: Target, probe: ProbeRun) -> Outcome:
        raise AssertionError("the startup probe of an adopted container does not run again")

    async def scenario() -> None:
        sup = ProbeSupervisor(run_probe, lambda t, p, m: None)
        sup.ensure(_target(started=time.time() - 60), (ProbeRun("startup", ("tcp", "127.0.0.1", "1")),))
        await asyncio.sleep(0.1)
        state = sup.state("cid")
        assert state is not None and state.started is True and state.ready is True

    asyncio.run(scenario())


def test_a_container_started_in_the_plugins_first_second_is_not_adopted() -> None:
    """podman ps reports StartedAt in whole seconds: a container started just after the plugin, in the
    same second, shows a start before the plugin's birth; its startup probe must still gate it (it was
    taken for a container from before a restart, started and ready at once: the CI's podman probes test)."""
    async def run_probe(target: Target, probe: ProbeRun) -> Outcome:
        return Outcome(False, "not yet")

    async def scenario() -> None:
        sup = ProbeSupervisor(run_probe, lambda t, p, m: None)
        sup._born = math.floor(time.time()) + 0.9  # late in its second
        sup.ensure(_target(started=float(math.floor(sup._born))), (ProbeRun("startup", ("tcp", "127.0.0.1", "1")),))
        await asyncio.sleep(0.1)
        state = sup.state("cid")
        assert state is not None and state.started is False and state.ready is False
        sup.retain(set())

    asyncio.run(scenario())


def _spec(restart: str) -> PodSpec:
    c = ContainerSpec("c", "main", 0, restart, (), "img", ())  # type: ignore[arg-type]
    return PodSpec("uid", "ns", "p", (c,), 30)


@pytest.mark.parametrize("restart", ["Never", "OnFailure", "Always"])
def test_a_run_killed_by_a_probe_restarts_unless_never_and_shows_why(restart: str) -> None:
    now = time.time()
    killed = Run(0, "id0", "ended", "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", now - 30, now - 25, exit_code=0,
                 killed=("Unhealthy", "liveness probe failed 3 times (exit 1)"))
    view = plan_pod(_spec(restart), Observed(runs={"c": [killed]}), now, 1.0, 10.0)
    files = view.files["c"]
    if restart == "Never":
        assert files.reason == ("Unhealthy", "liveness probe failed 3 times (exit 1)") and not view.active
    else:  # OnFailure too, although the process exited 0 after SIGTERM (the kubelet restarts it)
        assert files.restarts == 1 and files.last_reason == killed.killed
        assert [a.kind for a in view.actions] == ["start"]


def test_a_running_container_waits_while_its_post_start_hook_runs() -> None:
    now = time.time()
    run = Run(0, "id0", "running", "2026-01-01T00:00:00Z", started_ts=now - 1)
    pending = plan_pod(_spec("Never"), Observed(runs={"c": [run]}, hooks_pending=frozenset({"c"})), now, 1, 10)
    assert pending.files["c"].waiting == ("ContainerCreating", "postStart hook running")
    assert not pending.files["c"].started and pending.active
    done = plan_pod(_spec("Never"), Observed(runs={"c": [run]}), now, 1, 10)
    assert done.files["c"].started and done.files["c"].waiting is None


def test_exec_leftover_kill_touches_only_marked_processes_of_that_namespace() -> None:
    import os
    import subprocess

    # a process carrying a marker in this (the test's) pid namespace, and one without it
    marked = subprocess.Popen(["sleep", "30"], env={"INTERLINK_EXEC_ID": "abc", "PATH": os.environ["PATH"]})
    other = subprocess.Popen(["sleep", "30"], env={"INTERLINK_EXEC_ID": "abcd", "PATH": os.environ["PATH"]})
    try:
        assert kill_exec_leftovers(os.getpid(), "abc") == 1
        assert marked.wait(timeout=5) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_hung_probe_of_one_pod_delays_no_other() -> None:
    counts = {"a": 0, "b": 0}

    async def run_probe(target: Target, probe: ProbeRun) -> Outcome:
        counts[target.pod_id] += 1
        if target.pod_id == "a":
            await asyncio.sleep(3600)  # hangs (the real handler is bounded by timeoutSeconds; this one is not)
        return Outcome(True)

    async def scenario() -> None:
        sup = ProbeSupervisor(run_probe, lambda t, p, m: None)
        probe = (ProbeRun("liveness", ("exec", "x"), period_seconds=1),)
        sup.ensure(Target("a", "c", 0, "ida", None, time.time()), probe)
        sup.ensure(Target("b", "c", 0, "idb", None, time.time()), probe)
        await asyncio.sleep(3.5)
        sup.stop_pod("a")
        await sup.close()

    asyncio.run(scenario())
    assert counts == {"a": 1, "b": 4}, counts


def test_the_killed_record_is_never_read_or_written_through_a_symlink_or_a_fifo(tmp_path: Path) -> None:
    """Attack: the run dir's `killed` record swapped for a symlink to a root-only file, or for a FIFO. The
    record is read without following it and without blocking, and a write never lands on the link's target."""
    job_dir = tmp_path / "data" / "ns-uid"
    run_dir = job_dir / "c" / "app" / "0"
    run_dir.mkdir(parents=True)
    secret = tmp_path / "root-only"
    secret.write_text(json.dumps({"reason": "Forged", "message": "read through a link"}))
    (run_dir / KILLED_FILE).symlink_to(secret)
    assert read_killed(job_dir, "app", 0) is None
    write_killed(job_dir, "app", 0, "Unhealthy", "liveness probe failed")
    assert json.loads(secret.read_text())["reason"] == "Forged"  # the target was not written
    assert read_killed(job_dir, "app", 0) == ("Unhealthy", "liveness probe failed")  # the link was replaced
    fifo_run = job_dir / "c" / "app" / "1"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / KILLED_FILE)
    started = time.monotonic()
    assert read_killed(job_dir, "app", 1) is None
    assert time.monotonic() - started < 5
