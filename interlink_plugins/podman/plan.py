"""The pod state machine of the Podman backend, as a pure function.

Input: the pod's spec and what podman shows (every run of every container, from ONE ``podman ps``
per poll, refined by ``podman inspect`` for runs that changed state). Output: each container's
snapshot (what core/records/status.py turns into the wire JSON), the actions to take now (start a run,
stop sidecars, ...) and whether the pod is still active. Everything is derived from podman's view
and labels, so a plugin that lost its state decides exactly as the one that crashed.

Semantics (the kubelet's, as the SLURM pod runner implements them): init containers one at a time
in order (a failing one is retried with back-off unless the pod's restartPolicy is Never, in which
case the pod fails and the containers that never ran get exit 1, InitContainerFailed); sidecar init
containers (restartPolicy Always) start in order, keep running beside the main containers (restarted
when they end) and are stopped once every main container has ended; main containers start together;
restartPolicy Never / OnFailure / Always with back-off doubling from RestartBackoffInitial to
RestartBackoffMax (reset after a run of twice the maximum). A restart is a new podman container:
run N+1 of a container, labelled with N+1 and the back-off it waited; the previous run stays for
lastState and for Previous logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from interlink_plugins.core.records.status import ContainerFiles, epoch_rfc3339
from interlink_plugins.podman.spec import ContainerSpec, PodSpec
from interlink_plugins.podman.states import START_ERROR_EXIT, Phase

Outcome = Literal["pending", "running", "succeeded", "failed", "backoff"]


@dataclass(frozen=True)
class Run:
    """One podman container: one run of one pod container."""

    run: int
    container_id: str
    phase: Phase
    started: str = ""  # RFC 3339 UTC, "" if it never started
    finished: str = ""
    started_ts: float | None = None
    finished_ts: float | None = None
    exit_code: int | None = None
    oom: bool = False
    start_error: str = ""  # podman created it but could not start it (the kubelet's StartError)
    backoff: float = 0.0  # seconds waited before this run
    killed: tuple[str, str] | None = None  # the plugin killed it: (reason, message), e.g. Unhealthy

    @property
    def ended(self) -> bool:
        return self.phase == "ended" or bool(self.start_error)

    @property
    def code(self) -> int:
        if self.start_error:
            return START_ERROR_EXIT
        return self.exit_code if self.exit_code is not None else 0

    @property
    def did_start(self) -> bool:
        return not self.start_error and self.phase in ("running", "ended") and bool(self.started)


@dataclass(frozen=True)
class CreateError:
    """podman could not create run ``run`` (missing image, bad option): the kubelet keeps it waiting."""

    run: int
    reason: str  # ErrImageNeverPull, ErrImagePull, CreateContainerError
    message: str
    at: float
    attempts: int = 1


@dataclass(frozen=True)
class Observed:
    runs: Mapping[str, Sequence[Run]]  # container name -> its runs, oldest first
    create_errors: Mapping[str, CreateError] = field(default_factory=dict)
    pod_started_ts: float | None = None
    infra_running: bool = True
    stop_requested: bool = False  # /delete asked for this pod
    in_flight: frozenset[str] = frozenset()  # containers with an action under way
    pulling: Mapping[str, str] = field(default_factory=dict)  # container -> image being pulled for it
    hooks_pending: frozenset[str] = frozenset()  # containers whose postStart hook still runs


ActionKind = Literal["start", "start-existing", "stop", "stop-pod", "finish-pod", "prune"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    container: str = ""
    run: int = 0
    backoff: float = 0.0
    container_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodView:
    files: dict[str, ContainerFiles]
    current_run: dict[str, int]  # the run whose log is the current one (it may not exist yet)
    started: dict[str, bool]  # that run has started (it has a log)
    actions: tuple[Action, ...]
    active: bool
    deadline_exceeded: bool = False
    finished_ts: float | None = None


@dataclass
class _State:
    outcome: Outcome
    files: ContainerFiles
    current_run: int
    started: bool
    action: Action | None = None
    running_id: str = ""  # podman id of a running run
    end_ts: float | None = None
    code: int | None = None


_InitFailure = tuple[str, int, float]  # the init container that failed: (name, exit code, when it ended)


def backoff_after(run: Run, initial: float, maximum: float) -> float:
    """The kubelet's back-off before the run after ``run``: doubling, capped, reset after a long run."""
    duration = 0.0
    if run.started_ts is not None and run.finished_ts is not None:
        duration = run.finished_ts - run.started_ts
    if run.backoff <= 0 or duration >= 2 * maximum:
        return min(initial, maximum)
    return min(run.backoff * 2, maximum)


PULL_ERROR_SHOWN = 2.0  # seconds a failed pull shows ErrImagePull before ImagePullBackOff


def _retry_delay(attempts: int, initial: float, maximum: float) -> float:
    return float(min(initial * 2 ** max(0, attempts - 1), maximum))


def _seconds(value: float) -> str:
    return f"{value:g}"


def _last_state(runs: Sequence[Run], before: int) -> tuple[int, str, str] | None:
    """lastState: the run before ``before`` (if it ended)."""
    previous = [r for r in runs if r.run < before and r.ended]
    if not previous:
        return None
    run = previous[-1]
    started = run.started or run.finished
    return run.code, started, run.finished or started


def _run_reason(run: Run) -> tuple[str, str] | None:
    """Why a run ended, as the kubelet names it; None: its exit code says (Completed, Error)."""
    if run.start_error:
        return "StartError", run.start_error
    if run.killed:
        return run.killed
    if run.oom:
        return "OOMKilled", "the container exceeded its memory limit"
    return None


def _last_reason(runs: Sequence[Run], before: int) -> tuple[str, str] | None:
    """lastState's reason: the run before ``before`` (a start error and an OOM kill too, as the kubelet)."""
    previous = [r for r in runs if r.run < before and r.ended]
    return _run_reason(previous[-1]) if previous else None


def _ended_files(run: Run, runs: Sequence[Run]) -> ContainerFiles:
    reason = _run_reason(run)
    started = run.started or run.finished
    return ContainerFiles(
        started=started,
        finished=run.finished or started,
        exit_code=run.code,
        restarts=run.run,
        last=_last_state(runs, run.run),
        last_reason=_last_reason(runs, run.run),
        reason=reason,
    )


class Planner:
    """Decides for one pod; ``initial``/``maximum`` are the restart back-off bounds (seconds)."""

    def __init__(self, spec: PodSpec, observed: Observed, now: float, initial: float, maximum: float) -> None:
        self.spec = spec
        self.obs = observed
        self.now = now
        self.initial = initial
        self.maximum = maximum

    def _runs(self, name: str) -> list[Run]:
        return sorted(self.obs.runs.get(name, ()), key=lambda r: r.run)

    def drive(self, c: ContainerSpec, *, allow_start: bool, restart: bool, waiting: tuple[str, str]) -> _State:
        """One container: its snapshot, and the action it needs now (if ``allow_start``)."""
        runs = self._runs(c.name)
        last = runs[-1] if runs else None
        may_start = allow_start and c.name not in self.obs.in_flight
        error = self.obs.create_errors.get(c.name)
        if last is None or (error is not None and error.run > last.run):
            return self._to_create(c, runs, error, waiting, may_start=may_start)
        if last.phase == "created" and not last.start_error:
            # created but not started (a start interrupted by a crash): start it
            files = ContainerFiles(restarts=last.run, last=_last_state(runs, last.run),
                                   last_reason=_last_reason(runs, last.run), waiting=waiting)
            action = Action("start-existing", c.name, last.run, container_ids=(last.container_id,))
            return _State("pending", files, last.run, False, action if may_start else None)
        if last.phase == "running":
            return self._running(c, runs, last)
        return self._ended(c, runs, last, restart=restart, may_start=may_start)

    def _to_create(self, c: ContainerSpec, runs: Sequence[Run], error: CreateError | None,
                   waiting: tuple[str, str], *, may_start: bool) -> _State:
        """The next run does not exist yet: the image is pulled, podman failed to create it, or it is due."""
        last = runs[-1] if runs else None
        run = error.run if error is not None else 0
        image = self.obs.pulling.get(c.name)
        if image is not None:
            waiting = ("ContainerCreating", f"pulling image {image}")
        action = None
        if error is not None and image is None:
            due = self.now >= error.at + _retry_delay(error.attempts, self.initial, self.maximum)
            waiting = self._create_error_waiting(error, due)
            if may_start and due:
                waited = backoff_after(last, self.initial, self.maximum) if last and last.ended else 0.0
                action = Action("start", c.name, run, backoff=waited)
        elif may_start:
            action = Action("start", c.name, 0, 0.0)
        files = ContainerFiles(restarts=run, last=_last_state(runs, run), last_reason=_last_reason(runs, run),
                               waiting=waiting)
        return _State("pending", files, run, False, action)

    def _create_error_waiting(self, error: CreateError, due: bool) -> tuple[str, str]:
        """The waiting reason of a failed create; the kubelet: ErrImagePull when a pull fails,
        ImagePullBackOff while it waits to retry."""
        if error.reason == "ErrImagePull" and not due and self.now >= error.at + PULL_ERROR_SHOWN:
            return "ImagePullBackOff", f"Back-off pulling image: {error.message}"
        return error.reason, error.message

    def _running(self, c: ContainerSpec, runs: Sequence[Run], last: Run) -> _State:
        if c.name in self.obs.hooks_pending:
            # the kubelet reports a container running only once its postStart hook finished
            files = ContainerFiles(restarts=last.run, last=_last_state(runs, last.run),
                                   last_reason=_last_reason(runs, last.run),
                                   waiting=("ContainerCreating", "postStart hook running"))
        else:
            files = ContainerFiles(started=last.started or epoch_rfc3339(self.now), restarts=last.run,
                                   last=_last_state(runs, last.run), last_reason=_last_reason(runs, last.run))
        return _State("running", files, last.run, True, running_id=last.container_id)

    def _ended(self, c: ContainerSpec, runs: Sequence[Run], last: Run, *, restart: bool, may_start: bool) -> _State:
        """The last run ended: the container restarts after its back-off, or it is done."""
        code = last.code
        end = last.finished_ts if last.finished_ts is not None else self.now
        # as the kubelet: a container its liveness or startup probe killed restarts unless the policy is Never,
        # whatever its exit code; any other end (a failed postStart too) by the exit code under OnFailure
        probe_killed = last.killed is not None and last.killed[0] == "Unhealthy"
        wants = c.restart == "Always" or (c.restart == "OnFailure" and (code != 0 or probe_killed))
        if restart and wants:
            delay = backoff_after(last, self.initial, self.maximum)
            started, finished = last.started or last.finished, last.finished or last.started
            files = ContainerFiles(
                restarts=last.run + 1,
                last=(code, started, finished),
                last_reason=_run_reason(last),
                waiting=("CrashLoopBackOff", f"back-off {_seconds(delay)}s restarting failed container {c.name}"),
            )
            action = None
            if may_start and self.now >= end + delay:
                action = Action("start", c.name, last.run + 1, delay)
            return _State("backoff", files, last.run + 1, False, action, end_ts=end, code=code)
        outcome: Outcome = "succeeded" if code == 0 else "failed"
        return _State(outcome, _ended_files(last, runs), last.run, last.did_start, end_ts=end, code=code)

    def plan(self) -> PodView:
        spec, obs = self.spec, self.obs
        deadline_at = None
        if spec.active_deadline and obs.pod_started_ts is not None:
            deadline_at = obs.pod_started_ts + spec.active_deadline
        deadline = deadline_at is not None and self.now >= deadline_at
        stopping = obs.stop_requested or deadline
        states: dict[str, _State] = {}
        actions: list[Action] = []
        blocked_by, init_failed = self._drive_init(states, stopping)
        mains_done = self._drive_main(states, blocked_by, init_failed, stopping)
        # sidecars end once the main containers are done (or an init container failed)
        if mains_done and not stopping:
            actions += self._end_sidecars(
                states, "an init container failed" if init_failed else "the main containers finished"
            )
        if stopping:
            actions += self._stop(states, deadline=deadline, deadline_at=deadline_at)
        actions += [s.action for s in states.values() if s.action is not None and not stopping]
        return self._view(states, actions, stopping=stopping, mains_done=mains_done, deadline=deadline)

    def _drive_init(self, states: dict[str, _State], stopping: bool) -> tuple[str, _InitFailure | None]:
        """Init containers, in order: (the one the next ones wait for, the init container that failed).

        Once the main containers have started the pod is initialized for good (the kubelet never goes
        back): init containers are only reported, sidecars kept running.
        """
        initialized = any(self._runs(c.name) or c.name in self.obs.create_errors for c in self.spec.main)
        blocked_by = ""
        init_failed: _InitFailure | None = None
        for c in self.spec.init:
            if initialized:
                sidecar = c.kind == "sidecar"
                states[c.name] = self.drive(c, allow_start=sidecar and not stopping, restart=sidecar and not stopping,
                                            waiting=("ContainerCreating", "starting"))
                continue
            if blocked_by or init_failed:
                before = blocked_by or (init_failed[0] if init_failed else "")
                waiting = ("PodInitializing", f"waiting for init container {before}")
                states[c.name] = self.drive(c, allow_start=False, restart=False, waiting=waiting)
                continue
            state = self.drive(c, allow_start=not stopping, restart=not stopping,
                               waiting=("ContainerCreating", "starting"))
            states[c.name] = state
            if c.kind == "sidecar":
                if state.outcome != "running":
                    blocked_by = c.name
                continue
            if state.outcome == "succeeded":
                continue
            if state.outcome == "failed":
                init_failed = (c.name, state.code or 0, state.end_ts or self.now)
                continue
            blocked_by = c.name
        return blocked_by, init_failed

    def _drive_main(
        self, states: dict[str, _State], blocked_by: str, init_failed: _InitFailure | None, stopping: bool
    ) -> bool:
        """Main containers, together: whether they are all done (failed with an init container included)."""
        if init_failed is not None:
            self._fail_after_init(states, init_failed)
            return True
        if blocked_by:
            for c in self.spec.main:
                states[c.name] = self.drive(c, allow_start=False, restart=False,
                                            waiting=("PodInitializing", "waiting for the init containers"))
            return False
        for c in self.spec.main:
            states[c.name] = self.drive(c, allow_start=not stopping, restart=not stopping,
                                        waiting=("ContainerCreating", "starting"))
        return all(states[c.name].outcome in ("succeeded", "failed") for c in self.spec.main)

    def _fail_after_init(self, states: dict[str, _State], init_failed: _InitFailure) -> None:
        """An init container failed: the main containers and the init containers that never ran fail."""
        name, code, at = init_failed
        when = epoch_rfc3339(at)
        never_ran = [c for c in self.spec.init if c.kind == "init" and not self._runs(c.name) and c.name != name]
        for c in (*self.spec.main, *never_ran):
            states[c.name] = _State(
                "failed",
                ContainerFiles(started=when, finished=when, exit_code=1,
                               reason=("InitContainerFailed", f"init container {name} exited {code}")),
                0, False, end_ts=at, code=1,
            )

    def _end_sidecars(self, states: dict[str, _State], why: str) -> list[Action]:
        """Sidecars still running are stopped; those that ended are reported Completed."""
        actions: list[Action] = []
        for c in self.spec.init:
            if c.kind != "sidecar":
                continue
            state = self.drive(c, allow_start=False, restart=False, waiting=("ContainerCreating", "starting"))
            if state.outcome == "running":
                if c.name not in self.obs.in_flight:
                    actions.append(Action("stop", c.name, state.current_run, container_ids=(state.running_id,)))
            elif state.outcome in ("succeeded", "failed", "backoff", "pending"):
                state = self._sidecar_done(c, state, why)
            states[c.name] = state
        return actions

    def _stop(self, states: dict[str, _State], *, deadline: bool, deadline_at: float | None) -> list[Action]:
        """The pod is being stopped: each container's final state, and the pod stopped at its deadline."""
        obs = self.obs
        for c in self.spec.containers:
            states[c.name] = self._stopped(c, states[c.name], obs.stop_requested, deadline_at)
        running_now = any(s.outcome == "running" for s in states.values())
        if deadline and not obs.stop_requested and running_now and "*" not in obs.in_flight:
            return [Action("stop-pod")]
        return []

    def _view(
        self, states: dict[str, _State], actions: list[Action], *, stopping: bool, mains_done: bool, deadline: bool
    ) -> PodView:
        """The pod's view from its containers' states: still active, when it finished, the last actions."""
        obs = self.obs
        actions = list(actions)
        running = any(s.outcome == "running" for s in states.values())
        flying = bool(obs.in_flight)
        active = (running or flying) if stopping else not (mains_done and not running and not flying)
        ends = [s.end_ts for s in states.values() if s.end_ts is not None]
        finished_ts = max(ends) if ends and not active else None
        if not active and obs.infra_running and not obs.stop_requested and "*" not in obs.in_flight:
            actions.append(Action("finish-pod"))
        if not flying:
            actions += self._prune()
        return PodView(
            files={name: s.files for name, s in states.items()},
            current_run={name: s.current_run for name, s in states.items()},
            started={name: s.started for name, s in states.items()},
            actions=tuple(actions),
            active=active,
            deadline_exceeded=deadline,
            finished_ts=finished_ts,
        )

    def _sidecar_done(self, c: ContainerSpec, state: _State, why: str) -> _State:
        """A sidecar stopped by the plugin ends like the runner reports it: exit 0, Completed."""
        runs = self._runs(c.name)
        ran = [r for r in runs if r.ended]
        if not ran:
            when = epoch_rfc3339(self.now)
            files = ContainerFiles(started=when, finished=when, exit_code=0,
                                   reason=("Completed", f"sidecar stopped because {why}"))
            return _State("succeeded", files, state.current_run, False, end_ts=self.now, code=0)
        last = ran[-1]
        files = ContainerFiles(
            started=last.started or last.finished,
            finished=last.finished or last.started,
            exit_code=0,
            restarts=last.run,
            last=_last_state(runs, last.run),
            last_reason=_last_reason(runs, last.run),
            reason=("Completed", f"sidecar stopped because {why}"),
        )
        return _State("succeeded", files, last.run, last.did_start, end_ts=last.finished_ts, code=0)

    def _stopped(self, c: ContainerSpec, state: _State, deleted: bool, deadline_at: float | None) -> _State:
        """The pod is being stopped (/delete or activeDeadlineSeconds): nothing starts any more."""
        runs = self._runs(c.name)
        if state.outcome == "running":
            return state
        deadline = ("DeadlineExceeded", f"activeDeadlineSeconds {self.spec.active_deadline} exceeded")
        last = runs[-1] if runs else None
        if state.outcome in ("succeeded", "failed") and last is not None and last.ended:
            files = state.files
            stopped_by_us = last.finished_ts is not None and deadline_at is not None and last.finished_ts >= deadline_at
            if not deleted and stopped_by_us and files.reason is None:
                files = _replace_reason(files, deadline)
            elif deleted and files.reason is None and last.code in (137, 143):
                files = _replace_reason(
                    files,
                    ("Killed", "SIGKILL after the grace period") if last.code == 137
                    else ("Terminated", "killed by SIGTERM"),
                )
            return _State(state.outcome, files, state.current_run, state.started, end_ts=state.end_ts, code=state.code)
        if state.outcome in ("succeeded", "failed"):
            return state  # e.g. InitContainerFailed for a container that never ran
        when_ts = deadline_at if (deadline_at is not None and not deleted) else self.now
        when = epoch_rfc3339(min(when_ts, self.now))
        reason = deadline if not deleted else ("Terminated", "pod stopped before the container started")
        files = ContainerFiles(started=when, finished=when, exit_code=143, restarts=state.files.restarts,
                               last=state.files.last, last_reason=state.files.last_reason, reason=reason)
        return _State("failed", files, state.current_run, False, end_ts=self.now, code=143)

    def _prune(self) -> list[Action]:
        """Runs older than the previous one go (podman container and run directory): the current and
        the previous run stay, for the status (lastState) and for Previous logs."""
        actions: list[Action] = []
        for c in self.spec.containers:
            runs = self._runs(c.name)
            old = [r for r in runs[:-2] if r.ended]
            if old:
                actions.append(Action("prune", c.name, runs[-2].run, container_ids=tuple(r.container_id for r in old)))
        return actions


def _replace_reason(files: ContainerFiles, reason: tuple[str, str]) -> ContainerFiles:
    return dataclasses.replace(files, reason=reason)


def plan_pod(spec: PodSpec, observed: Observed, now: float, initial: float, maximum: float) -> PodView:
    return Planner(spec, observed, now, initial, maximum).plan()
