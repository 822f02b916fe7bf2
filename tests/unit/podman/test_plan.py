"""The Podman backend's pod state machine (podman/plan.py), a pure function of podman's view."""

from __future__ import annotations

from interlink_plugins.core.records.status import epoch_rfc3339
from interlink_plugins.podman.plan import CreateError, Observed, PodView, Run, backoff_after, plan_pod
from interlink_plugins.podman.spec import ContainerSpec, PodSpec

T0 = 1_800_000_000.0


def spec(*containers: ContainerSpec, deadline: int | None = None) -> PodSpec:
    return PodSpec(uid="u1", namespace="ns", name="p", containers=containers, grace_seconds=5, active_deadline=deadline)


def c(name: str, kind: str = "main", restart: str = "Never") -> ContainerSpec:
    return ContainerSpec(name=name, kind=kind, index=0, restart=restart, options=(), image="img",  # type: ignore[arg-type]
                         args=())


def ran(run: int, code: int | None, start: float, end: float | None = None, **extra: object) -> Run:
    return Run(
        run=run, container_id=f"id-{run}-{start}", phase="ended" if end is not None else "running",
        started=epoch_rfc3339(start), finished=epoch_rfc3339(end) if end is not None else "",
        started_ts=start, finished_ts=end, exit_code=code, **extra,  # type: ignore[arg-type]
    )


def plan(s: PodSpec, now: float = T0 + 100, **observed: object) -> PodView:
    return plan_pod(s, Observed(**observed), now, 10.0, 300.0)  # type: ignore[arg-type]


def kinds(view: PodView) -> list[tuple[str, str, int]]:
    return [(a.kind, a.container, a.run) for a in view.actions]


def test_a_new_pod_starts_its_first_init_container_only() -> None:
    s = spec(c("i1", "init"), c("i2", "init"), c("a"), c("b"))
    view = plan(s, runs={})
    assert kinds(view) == [("start", "i1", 0)]
    assert view.files["i2"].waiting == ("PodInitializing", "waiting for init container i1")
    assert view.files["a"].waiting == ("PodInitializing", "waiting for the init containers")
    assert view.active


def test_main_containers_start_together_after_the_init_containers() -> None:
    s = spec(c("i1", "init"), c("a"), c("b"))
    view = plan(s, runs={"i1": [ran(0, 0, T0, T0 + 1)]})
    assert kinds(view) == [("start", "a", 0), ("start", "b", 0)]
    assert view.files["i1"].exit_code == 0


def test_a_failing_init_container_fails_the_pod_when_it_never_restarts() -> None:
    s = spec(c("bad", "init", "Never"), c("never", "init", "Never"), c("a"))
    view = plan(s, runs={"bad": [ran(0, 7, T0, T0 + 1)]})
    assert not view.active and kinds(view) == [("finish-pod", "", 0)]
    assert view.files["bad"].exit_code == 7
    for name in ("never", "a"):
        assert view.files[name].exit_code == 1
        assert view.files[name].reason == ("InitContainerFailed", "init container bad exited 7")


def test_a_failing_init_container_is_retried_with_back_off_unless_never() -> None:
    s = spec(c("bad", "init", "OnFailure"), c("a", restart="OnFailure"))
    waiting = plan(s, now=T0 + 5, runs={"bad": [ran(0, 1, T0, T0 + 1)]})
    assert waiting.actions == () and waiting.active
    assert waiting.files["bad"].waiting is not None and waiting.files["bad"].waiting[0] == "CrashLoopBackOff"
    assert waiting.files["bad"].restarts == 1 and waiting.files["bad"].last is not None
    due = plan(s, now=T0 + 11, runs={"bad": [ran(0, 1, T0, T0 + 1)]})
    assert [(a.kind, a.container, a.run, a.backoff) for a in due.actions] == [("start", "bad", 1, 10.0)]


def test_restart_policies_and_the_kubelet_back_off() -> None:
    never = spec(c("a", restart="Never"))
    assert not plan(never, runs={"a": [ran(0, 3, T0, T0 + 1)]}).active
    on_failure = spec(c("a", restart="OnFailure"))
    assert not plan(on_failure, runs={"a": [ran(0, 0, T0, T0 + 1)]}).active
    view = plan(on_failure, now=T0 + 1, runs={"a": [ran(0, 3, T0, T0 + 1)]})
    assert view.active and view.current_run["a"] == 1 and not view.started["a"]
    assert view.files["a"].waiting == ("CrashLoopBackOff", "back-off 10s restarting failed container a")
    always = spec(c("a", restart="Always"))
    assert plan(always, runs={"a": [ran(0, 0, T0, T0 + 1)]}).active
    # doubling, capped, and reset after a run of twice the maximum
    assert backoff_after(ran(1, 1, T0, T0 + 1, backoff=10.0), 10, 300) == 20
    assert backoff_after(ran(5, 1, T0, T0 + 1, backoff=160.0), 10, 300) == 300
    assert backoff_after(ran(6, 1, T0, T0 + 601, backoff=300.0), 10, 300) == 10
    assert backoff_after(ran(0, 1, T0, T0 + 1), 10, 300) == 10


def test_restart_count_last_state_and_pruning_of_old_runs() -> None:
    s = spec(c("a", restart="Always"))
    runs = [ran(0, 1, T0, T0 + 1), ran(1, 2, T0 + 11, T0 + 12, backoff=10.0), ran(2, 0, T0 + 40, backoff=20.0)]
    view = plan(s, runs={"a": runs})
    files = view.files["a"]
    assert files.started == epoch_rfc3339(T0 + 40) and files.restarts == 2
    assert files.last == (2, epoch_rfc3339(T0 + 11), epoch_rfc3339(T0 + 12))
    prune = [a for a in view.actions if a.kind == "prune"]
    assert len(prune) == 1 and prune[0].container_ids == (runs[0].container_id,) and prune[0].run == 1


def test_sidecars_run_beside_the_main_containers_and_are_stopped_at_the_end() -> None:
    s = spec(c("proxy", "sidecar", "Always"), c("after", "init"), c("main"))
    first = plan(s, runs={})
    assert kinds(first) == [("start", "proxy", 0)]
    running_side = {"proxy": [ran(0, None, T0)]}
    assert kinds(plan(s, runs=running_side)) == [("start", "after", 0)]
    with_main = {**running_side, "after": [ran(0, 0, T0 + 1, T0 + 2)], "main": [ran(0, None, T0 + 3)]}
    assert plan(s, runs=with_main).actions == ()
    # a crashed sidecar is restarted while the main container runs, and blocks nothing
    crashed = {**with_main, "proxy": [ran(0, 1, T0, T0 + 5)]}
    assert kinds(plan(s, now=T0 + 20, runs=crashed)) == [("start", "proxy", 1)]
    done = {**running_side, "after": [ran(0, 0, T0 + 1, T0 + 2)], "main": [ran(0, 0, T0 + 3, T0 + 4)]}
    stopping = plan(s, runs=done)
    assert kinds(stopping) == [("stop", "proxy", 0)] and stopping.active
    stopped = {**done, "proxy": [ran(0, 137, T0, T0 + 5)]}
    final = plan(s, runs=stopped, infra_running=False)
    assert not final.active and final.actions == ()
    assert final.files["proxy"].exit_code == 0 and final.files["proxy"].reason is not None
    assert final.files["proxy"].reason[0] == "Completed"


def test_start_errors_oom_and_create_errors() -> None:
    s = spec(c("a"), c("b"), c("d"))
    view = plan(s, runs={
        "a": [Run(0, "x", "created", start_error="exec: not found")],
        "b": [ran(0, 137, T0, T0 + 1, oom=True)],
    }, create_errors={"d": CreateError(0, "ErrImageNeverPull", "image not known", T0 + 99)})
    assert view.files["a"].exit_code == 128 and view.files["a"].reason == ("StartError", "exec: not found")
    assert view.files["b"].exit_code == 137 and view.files["b"].reason is not None
    assert view.files["b"].reason[0] == "OOMKilled"
    assert view.files["d"].waiting == ("ErrImageNeverPull", "image not known") and view.actions == ()
    retry = plan(s, now=T0 + 110, runs={}, create_errors={"d": CreateError(0, "ErrImagePull", "x", T0 + 99)})
    assert ("start", "d", 0) in kinds(retry)


def test_last_state_keeps_why_the_previous_run_ended() -> None:
    """A run podman could not start, or the kernel OOM-killed, shows as such in lastState after the restart
    (the kubelet's StartError and OOMKilled, with the message), not as a bare Error."""
    s = spec(c("a", restart="Always"), c("b", restart="Always"))
    view = plan(s, runs={
        "a": [Run(0, "x", "created", start_error="slirp4netns: not found", backoff=0.0), ran(1, None, T0 + 20)],
        "b": [ran(0, 137, T0, T0 + 1, oom=True), ran(1, None, T0 + 20)],
    })
    assert view.files["a"].restarts == 1 and view.files["a"].last is not None
    assert view.files["a"].last[0] == 128 and view.files["a"].last_reason == ("StartError", "slirp4netns: not found")
    assert view.files["b"].last_reason is not None and view.files["b"].last_reason[0] == "OOMKilled"
    # and while it waits out the back-off before the next run
    waiting = plan(s, runs={"a": [Run(0, "x", "created", start_error="exec: not found")],
                            "b": [ran(0, 137, T0, T0 + 1, oom=True)]})
    assert waiting.files["a"].waiting is not None and waiting.files["a"].waiting[0] == "CrashLoopBackOff"
    assert waiting.files["a"].last_reason == ("StartError", "exec: not found")
    assert waiting.files["b"].last_reason is not None and waiting.files["b"].last_reason[0] == "OOMKilled"


def test_on_failure_restarts_a_probe_kill_whatever_its_exit_code_and_a_hook_kill_by_its_exit_code() -> None:
    """The kubelet restarts a container its liveness probe killed unless the policy is Never; a container
    killed for a failed postStart is judged by its exit code, as any other exit (0: not restarted)."""
    s = spec(c("probe", restart="OnFailure"), c("hook", restart="OnFailure"), c("hook-term", restart="OnFailure"))
    view = plan(s, runs={
        "probe": [ran(0, 0, T0, T0 + 1, killed=("Unhealthy", "liveness probe failed 3 times (exit 1)"))],
        "hook": [ran(0, 0, T0, T0 + 1, killed=("PostStartHookError", "postStart hook failed (exit 1)"))],
        "hook-term": [ran(0, 143, T0, T0 + 1, killed=("PostStartHookError", "postStart hook failed (exit 1)"))],
    })
    assert ("start", "probe", 1) in kinds(view) and ("start", "hook-term", 1) in kinds(view)
    assert not any(a.container == "hook" for a in view.actions)
    assert view.files["hook"].reason == ("PostStartHookError", "postStart hook failed (exit 1)")
    assert view.files["probe"].last_reason == ("Unhealthy", "liveness probe failed 3 times (exit 1)")


def test_a_run_created_but_never_started_is_started_and_in_flight_work_is_not_repeated() -> None:
    s = spec(c("a"))
    view = plan(s, runs={"a": [Run(0, "cid", "created")]})
    assert [(a.kind, a.container_ids) for a in view.actions] == [("start-existing", ("cid",))]
    assert plan(s, runs={}, in_flight=frozenset({"a"})).actions == ()
    assert plan(s, runs={}, in_flight=frozenset({"a"})).active


def test_delete_starts_nothing_and_reports_every_container_stopped() -> None:
    s = spec(c("a", restart="Always"), c("b"), c("late"))
    runs = {"a": [ran(0, 1, T0, T0 + 1)], "b": [ran(0, 143, T0, T0 + 50)]}
    view = plan(s, runs=runs, stop_requested=True)
    assert not view.active and view.actions == ()
    assert view.files["b"].reason == ("Terminated", "killed by SIGTERM")
    assert view.files["a"].exit_code == 1  # its last run: nothing restarts once the pod is deleted
    assert view.files["late"].exit_code == 143
    assert view.files["late"].reason == ("Terminated", "pod stopped before the container started")
    still = plan(s, runs={"a": [ran(0, None, T0)]}, stop_requested=True)
    assert still.active and still.actions == ()


def test_active_deadline_stops_the_pod_once() -> None:
    s = spec(c("a"), deadline=30)
    running = plan(s, now=T0 + 31, runs={"a": [ran(0, None, T0 + 1)]}, pod_started_ts=T0)
    assert running.deadline_exceeded and kinds(running) == [("stop-pod", "", 0)]
    assert plan(s, now=T0 + 31, runs={"a": [ran(0, None, T0 + 1)]}, pod_started_ts=T0,
                in_flight=frozenset({"*"})).actions == ()
    ended = plan(s, now=T0 + 40, runs={"a": [ran(0, 137, T0 + 1, T0 + 35)]}, pod_started_ts=T0, infra_running=False)
    assert not ended.active
    assert ended.files["a"].reason == ("DeadlineExceeded", "activeDeadlineSeconds 30 exceeded")


def test_image_pull_waits_container_creating_then_err_image_pull_then_back_off() -> None:
    s = spec(c("a"))
    pulling = plan(s, runs={}, in_flight=frozenset({"a"}), pulling={"a": "reg.example/app:1"})
    assert pulling.files["a"].waiting == ("ContainerCreating", "pulling image reg.example/app:1")
    assert pulling.actions == ()
    failed = CreateError(0, "ErrImagePull", "pulling image reg.example/app:1: unauthorized", T0 + 99)
    fresh = plan(s, now=T0 + 100, runs={}, create_errors={"a": failed})
    assert fresh.files["a"].waiting == ("ErrImagePull", "pulling image reg.example/app:1: unauthorized")
    waiting = plan(s, now=T0 + 104, runs={}, create_errors={"a": failed})
    assert waiting.files["a"].waiting == ("ImagePullBackOff",
                                          "Back-off pulling image: pulling image reg.example/app:1: unauthorized")
    assert waiting.actions == ()
    assert ("start", "a", 0) in kinds(plan(s, now=T0 + 110, runs={}, create_errors={"a": failed}))
    # a retry under way shows the pull again, not the old error
    again = plan(s, now=T0 + 111, runs={}, create_errors={"a": failed}, in_flight=frozenset({"a"}),
                 pulling={"a": "reg.example/app:1"})
    assert again.files["a"].waiting == ("ContainerCreating", "pulling image reg.example/app:1")
