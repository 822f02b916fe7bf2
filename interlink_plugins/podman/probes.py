"""Probe workers of the Podman backend: the kubelet's prober, one asyncio task per probe of a running run.

Semantics as the kubelet's (and the SLURM pod runner's, templates/pod_runner.sh): the first check
at ``initialDelaySeconds`` after the container started, then every ``periodSeconds``, each bounded
by ``timeoutSeconds``; ``successThreshold`` successes in a row pass, ``failureThreshold`` failures
in a row fail. The startup probe gates the others (they start once it passed, and it stops then);
readiness only moves ``ready``; a failed liveness or startup probe hands the container to
``on_failure`` (the backend kills it, reason Unhealthy, and the restart policy decides).

Workers are keyed by podman container id (one run): a restart is a new container with new workers,
and a worker whose container is no longer running is cancelled at the next poll (``retain``). A
plugin that restarted resumes the workers of the pods it adopted; a container that had started
before this plugin did counts as started, as the kubelet treats containers it finds after a restart.
Each probe is its own task: a hung probe of one container delays nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from interlink_plugins.core.podrunner.plan import ProbeRun
from interlink_plugins.podman.handlers import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One running run of a pod container."""

    pod_id: str
    container: str
    run: int
    container_id: str
    container_pid: int | None
    started_ts: float


RunProbe = Callable[[Target, ProbeRun], Awaitable[Outcome]]
OnFailure = Callable[[Target, ProbeRun, str], None]


@dataclass
class ProbeState:
    """What the status shows: ``ready`` / ``started`` (None: no probe decides it)."""

    ready: bool | None
    started: bool | None


@dataclass
class _Worker:
    target: Target
    state: ProbeState
    started: asyncio.Event
    has_readiness: bool = False
    adopted: bool = False  # its container was running before this plugin started
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def cancel(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class ProbeSupervisor:
    def __init__(self, run_probe: RunProbe, on_failure: OnFailure) -> None:
        self._run_probe = run_probe
        self._on_failure = on_failure
        self._workers: dict[str, _Worker] = {}  # container id -> its probe workers
        self._born = time.time()

    def ensure(self, target: Target, probes: tuple[ProbeRun, ...]) -> None:
        """Workers for ``target``'s probes, started once (later calls only refresh the target)."""
        worker = self._workers.get(target.container_id)
        if worker is not None:
            worker.target = target
            return
        if not probes:
            return
        kinds = {p.kind for p in probes}
        # podman ps gives the start in whole seconds: only a start in a second before the plugin's own is
        # surely older than the plugin (one in the same second gets its startup probe, the safe side)
        adopted = target.started_ts < math.floor(self._born)
        started = "startup" not in kinds or adopted
        state = ProbeState(
            ready=None if not kinds & {"startup", "readiness"} else ("readiness" not in kinds and started),
            started=None if "startup" not in kinds else started,
        )
        worker = _Worker(target, state, asyncio.Event(), has_readiness="readiness" in kinds, adopted=adopted)
        if started:
            worker.started.set()
        self._workers[target.container_id] = worker
        for probe in probes:
            if probe.kind == "startup" and started:
                continue
            task = asyncio.create_task(self._loop(worker, probe), name=f"probe {target.container} {probe.kind}")
            worker.tasks.append(task)

    def retain(self, running: set[str]) -> None:
        """Stop the workers of containers that are no longer running."""
        for cid in [c for c in self._workers if c not in running]:
            self._stop(cid)

    def stop_pod(self, pod_id: str) -> None:
        """No more probes for this pod (it is being stopped or deleted)."""
        for cid in [c for c, w in self._workers.items() if w.target.pod_id == pod_id]:
            self._stop(cid)

    def state(self, container_id: str) -> ProbeState | None:
        worker = self._workers.get(container_id)
        return worker.state if worker is not None else None

    def _stop(self, cid: str) -> None:
        worker = self._workers.pop(cid, None)
        if worker is not None:
            worker.cancel()

    async def close(self) -> None:
        tasks = [t for w in self._workers.values() for t in w.tasks]
        for cid in list(self._workers):
            self._stop(cid)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _loop(self, worker: _Worker, probe: ProbeRun) -> None:
        try:
            await self._probe(worker, probe)
        except asyncio.CancelledError:
            raise
        except Exception:  # a worker never takes the plugin down: log, the probe stops
            log.exception("podman: %s probe of %s", probe.kind, worker.target.container)

    async def _probe(self, worker: _Worker, probe: ProbeRun) -> None:
        if probe.kind != "startup":
            await worker.started.wait()
        due = worker.target.started_ts + probe.initial_delay_seconds
        if worker.adopted:
            # after a plugin restart every worker starts at once: spread them over a period (the kubelet too)
            due = max(due, time.time() + random.uniform(0, probe.period_seconds))  # noqa: S311 (jitter)
        successes = failures = 0
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            due = time.time() + probe.period_seconds
            outcome = await self._run_probe(worker.target, probe)
            if outcome.ok:
                successes, failures = successes + 1, 0
                if successes < probe.success_threshold:
                    continue
                if probe.kind == "startup":
                    worker.state.started = True
                    if not worker.has_readiness:
                        worker.state.ready = True
                    worker.started.set()
                    log.info("podman pod %s: container %s: startup probe passed", worker.target.pod_id,
                             worker.target.container)
                    return
                if probe.kind == "readiness" and not worker.state.ready:
                    worker.state.ready = True
                continue
            successes, failures = 0, failures + 1
            if failures < probe.failure_threshold:
                continue
            if probe.kind == "readiness":
                worker.state.ready = False
                continue
            message = f"{probe.kind} probe failed {failures} times ({outcome.detail})"
            worker.state.ready = False
            worker.cancel()  # the worker stays (not ready) until its container is seen ended
            self._on_failure(worker.target, probe, message)
            return
