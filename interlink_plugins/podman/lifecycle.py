"""Probes and lifecycle hooks of the Podman backend's pods: what the backend calls, in one place.

The backend feeds it every poll's view (``observe``: running runs, the infra process whose network
namespace probes enter) and calls it at a container's start (``post_start``) and at a delete
(``pre_stop_pod``). It answers the status: ``hooks_pending`` (containers whose postStart still runs:
reported waiting) and ``overlay`` (ready/started from the probes). Everything runs in background
tasks with timeouts; nothing here is awaited on the status path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from interlink_plugins.core.commands.local import CommandResult, CommandRunner
from interlink_plugins.core.podrunner.plan import ProbeRun
from interlink_plugins.core.records.status import ContainerFiles
from interlink_plugins.podman import hooks
from interlink_plugins.podman.handlers import Outcome, run_handler
from interlink_plugins.podman.probes import ProbeSupervisor, Target
from interlink_plugins.podman.spec import ContainerSpec, PodSpec

log = logging.getLogger(__name__)

Podman = Callable[..., Awaitable[CommandResult]]  # the backend's _podman(args, what, timeout=...)
Spawn = Callable[[Any], None]


@dataclasses.dataclass
class _Running:
    spec: ContainerSpec
    target: Target


class PodLifecycle:
    def __init__(self, runner: CommandRunner, podman_argv: Sequence[str], podman: Podman, spawn: Spawn,
                 command_timeout: float) -> None:
        self.runner = runner
        self.podman_argv = tuple(podman_argv)
        self.podman = podman
        self.spawn = spawn
        self.command_timeout = command_timeout
        self.probes = ProbeSupervisor(self._run_probe, self._probe_failed)
        self._netns: dict[str, int] = {}  # pod id -> pid of its infra container
        self._running: dict[str, dict[str, _Running]] = {}  # pod id -> container -> its running run
        self._pending: dict[str, set[str]] = {}  # pod id -> containers whose postStart hook runs
        self._grace: dict[str, int] = {}  # pod id -> its grace period
        self._job_dirs: dict[str, Path] = {}
        self._stopping: set[str] = set()

    # --- the backend's view ------------------------------------------------------------

    def observe(self, pod_id: str, spec: PodSpec, job_dir: Path, infra_pid: int | None,
                running: Mapping[str, tuple[int, str, int | None, float]], stopping: bool) -> None:
        """One poll: ``running`` maps container name -> (run, podman id, pid, start time) of running runs."""
        if infra_pid:
            self._netns[pod_id] = infra_pid
        self._grace[pod_id] = spec.grace_seconds
        self._job_dirs[pod_id] = job_dir
        now: dict[str, _Running] = {}
        for name, (run, cid, pid, started) in running.items():
            container = spec.container(name)
            if container is None:
                continue
            target = Target(pod_id, name, run, cid, pid, started)
            now[name] = _Running(container, target)
            if stopping or pod_id in self._stopping:
                continue
            if name in self._pending.get(pod_id, ()):
                continue  # probes start once postStart finished (the kubelet starts them then)
            self.probes.ensure(target, container.probes)
        self._running[pod_id] = now
        if stopping:
            self.probes.stop_pod(pod_id)

    def retain(self, running_ids: set[str]) -> None:
        self.probes.retain(running_ids)

    def hooks_pending(self, pod_id: str) -> frozenset[str]:
        return frozenset(self._pending.get(pod_id, ()))

    def overlay(self, pod_id: str, files: Mapping[str, ContainerFiles]) -> dict[str, ContainerFiles]:
        """The status of running containers with what their probes decided (ready, started)."""
        out = dict(files)
        for name, running in self._running.get(pod_id, {}).items():
            state = self.probes.state(running.target.container_id)
            current = out.get(name)
            if state is None or current is None or not current.started or current.exit_code is not None:
                continue
            out[name] = dataclasses.replace(current, ready=state.ready, startup=state.started)
        return out

    def forget(self, pod_id: str) -> None:
        self.probes.stop_pod(pod_id)
        self._netns.pop(pod_id, None)
        self._running.pop(pod_id, None)
        self._pending.pop(pod_id, None)
        self._grace.pop(pod_id, None)
        self._job_dirs.pop(pod_id, None)
        self._stopping.discard(pod_id)

    # --- handlers ----------------------------------------------------------------------

    async def _pid_of(self, container: str) -> int | None:
        result = await self.podman(["inspect", "--type", "container", "--format", "{{.State.Pid}}", container],
                                   "hook")
        text = result.text.strip()
        return int(text) if result.ok and text.isdigit() and int(text) > 0 else None

    async def _handler(self, pod_id: str, container: str, pid: int | None, handler: Sequence[str],
                       timeout: float) -> Outcome:
        action, words = handler[0], tuple(handler[1:])
        netns = self._netns.get(pod_id)
        if pid is None and (action == "exec" or netns is None):
            pid = await self._pid_of(container)
        return await run_handler(self.runner, self.podman_argv, action, words, container=container,
                                 netns_pid=netns or pid, container_pid=pid, timeout=timeout)

    async def _run_probe(self, target: Target, probe: ProbeRun) -> Outcome:
        return await self._handler(target.pod_id, target.container_id, target.container_pid, probe.argv,
                                   float(probe.timeout_seconds))

    def _probe_failed(self, target: Target, probe: ProbeRun, message: str) -> None:
        running = self._running.get(target.pod_id, {}).get(target.container)
        grace = probe.grace_seconds if probe.grace_seconds is not None else self._grace.get(target.pod_id, 30)
        log.warning("podman pod %s: container %s: %s; killing it", target.pod_id, target.container, message)
        pre_stop = running.spec.pre_stop if running is not None else ()
        self.spawn(self._kill(target.pod_id, target.container, target.run, target.container_id,
                              target.container_pid, pre_stop, grace, ("Unhealthy", message)))

    async def _kill(self, pod_id: str, name: str, run: int, container: str, pid: int | None,
                    pre_stop: Sequence[str], grace: float, why: tuple[str, str]) -> None:
        """The kubelet's killContainer: record why, preStop within the grace period, SIGTERM, SIGKILL."""
        job_dir = self._job_dirs.get(pod_id)
        if job_dir is not None:
            await asyncio.to_thread(hooks.write_killed, job_dir, name, run, *why)

        async def run_hook(handler: hooks.Handler, timeout: float) -> Outcome:
            return await self._handler(pod_id, container, pid, handler, timeout)

        async def stop(left: float) -> None:
            seconds = str(max(0, int(left + 0.999)))
            result = await self.podman(["stop", "-t", seconds, container], "kill",
                                       timeout=left + self.command_timeout)
            if not result.ok:
                log.warning("podman pod %s: stopping container %s: %s", pod_id, name, result.error_text)

        try:
            await hooks.pre_stop_then_stop(run_hook, pre_stop, grace, stop, self._hook_logger(pod_id, name, "preStop"))
        except Exception:
            log.exception("podman pod %s: killing container %s", pod_id, name)

    def _hook_logger(self, pod_id: str, name: str, hook: str) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            if outcome.ok:
                log.info("podman pod %s: container %s: %s hook done", pod_id, name, hook)
            else:
                log.warning("podman pod %s: container %s: %s hook failed: %s", pod_id, name, hook, outcome.detail)
        return record

    # --- hooks -------------------------------------------------------------------------

    def starting(self, pod_id: str, container: ContainerSpec) -> None:
        """Before ``podman run``: a container with a postStart hook is not reported running until it ran."""
        if container.post_start:
            self._pending.setdefault(pod_id, set()).add(container.name)

    def post_start(self, pod_id: str, spec: PodSpec, container: ContainerSpec, run: int, name: str,
                   job_dir: Path, *, started: bool) -> None:
        """After ``podman run`` of ``name``: if it started, run its postStart hook (the container waits,
        ContainerCreating, until the hook finished; a failing hook kills it, PostStartHookError)."""
        if not container.post_start:
            return
        if not started:
            self._pending.get(pod_id, set()).discard(container.name)
            return
        self._grace[pod_id] = spec.grace_seconds
        self._job_dirs[pod_id] = job_dir
        self.spawn(self._post_start(pod_id, spec, container, run, name))

    async def _post_start(self, pod_id: str, spec: PodSpec, container: ContainerSpec, run: int, name: str) -> None:
        started = time.monotonic()
        try:
            outcome = await self._handler(pod_id, name, None, container.post_start, hooks.POST_START_TIMEOUT)
        except Exception as exc:  # never leave the container waiting forever
            log.exception("podman pod %s: container %s: postStart hook", pod_id, container.name)
            outcome = Outcome(False, str(exc))
        finally:
            self._pending.get(pod_id, set()).discard(container.name)
        took = time.monotonic() - started
        if outcome.ok:
            log.info("podman pod %s: container %s: postStart hook done in %.1fs", pod_id, container.name, took)
            return
        message = f"postStart hook failed: {outcome.detail}"
        log.warning("podman pod %s: container %s: %s; killing it", pod_id, container.name, message)
        await self._kill(pod_id, container.name, run, name, None, container.pre_stop, spec.grace_seconds,
                         ("PostStartHookError", message))

    async def pre_stop_pod(self, pod_id: str, grace: int, containers: Sequence[str] | None = None) -> float:
        """A delete or a deadline (or, with ``containers``, sidecars stopped after the main containers):
        stop probing, run the preStop hooks of those running containers together within the grace period;
        the seconds left for SIGTERM before SIGKILL."""
        if containers is None:
            self._stopping.add(pod_id)
            self.probes.stop_pod(pod_id)
        running = [r for name, r in self._running.get(pod_id, {}).items()
                   if r.spec.pre_stop and (containers is None or name in containers)]
        if not running or grace <= 0:
            return float(grace)
        started = time.monotonic()

        async def one(r: _Running) -> None:
            log.info("podman pod %s: container %s: preStop hook", pod_id, r.spec.name)
            outcome = await self._handler(pod_id, r.target.container_id, r.target.container_pid, r.spec.pre_stop,
                                          float(grace))
            self._hook_logger(pod_id, r.spec.name, "preStop")(outcome)

        await asyncio.gather(*(one(r) for r in running), return_exceptions=True)
        return max(grace - (time.monotonic() - started), hooks.EXTRA_AFTER_HOOK)

    async def close(self) -> None:
        await self.probes.close()
