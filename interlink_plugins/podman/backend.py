"""Podman backend: a Kubernetes pod becomes a real podman pod, one podman container per container run.

The containers of a pod share its network namespace (localhost between them, as in Kubernetes).
The plugin itself is the kubelet here: every poll it runs ONE ``podman ps`` for all its pods
(label filter), ``podman inspect`` only for containers whose state changed, and lets the pure
state machine in ``plan.py`` decide what to start, restart or stop. Actions run in the background
(never in an HTTP request), each a single podman command with a timeout.

Identity lives in podman: pods and containers carry labels (pod UID, namespace, name, instance,
job dir; per container its name, kind, index, run number and back-off), so a plugin that lost its
state directory recovers every pod from ``podman pod ps`` and its job directory (``pod.json``).

Layout of a pod's job directory ``<DataRootFolder>/<namespace>-<uid>/``: ``pod.json`` (the spec
the plugin runs from), ``volumes/`` and ``emptydir/`` (core/volumes/materialise.py), and per container run
``c/<container>/<run>/`` with ``log`` (k8s-file, written by conmon), ``oom`` (written by conmon
when the kernel OOM-killed in the container's memory cgroup: conmon runs in this directory) and
``error`` (the plugin's record of a run podman could not start); podman/jobfiles.py writes and
reads them. podman/parse.py reads podman's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, BackendDefaults, JobInfo, PreparedJob, Resources
from interlink_plugins.core.commands.local import CommandFailed, CommandResult, CommandRunner
from interlink_plugins.core.errors import BackendUnavailable, SubmitRejected
from interlink_plugins.core.model.names import job_dir_name
from interlink_plugins.core.model.pod import Pod, pod_summary
from interlink_plugins.core.podrunner.jobdir import volume_limits
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import ContainerFiles, epoch_rfc3339
from interlink_plugins.core.volumes.materialise import plan_volumes
from interlink_plugins.podman.bindcheck import check_binds
from interlink_plugins.podman.jobfiles import (
    STOP_MARKER,
    PodPlan,
    create_error_text,
    empty_tree,
    load_spec,
    plan_job_files,
    read_run_files,
    read_spec,
    remove_runs_before,
    run_numbers,
    start_error_text,
    stored_create_error,
    write_job_files,
    write_text,
)
from interlink_plugins.podman.lifecycle import PodLifecycle
from interlink_plugins.podman.parse import (
    Inspected,
    devices_label,
    inspected,
    int_or_none,
    json_list,
    parse_time,
    run_times,
    running_runs,
)
from interlink_plugins.podman.plan import Action, CreateError, Observed, PodView, Run, plan_pod
from interlink_plugins.podman.settings import PodmanSettings
from interlink_plugins.podman.spec import (
    BACKEND_NAME,
    L_BACKEND,
    L_BACKOFF,
    L_CONTAINER,
    L_GPUS,
    L_INSTANCE,
    L_NAME,
    L_NAMESPACE,
    L_RUN,
    L_UID,
    LABEL_PREFIX,
    ContainerSpec,
    HostFacts,
    PodSpec,
    build_pod_spec,
    container_devices,
    container_name,
    pod_create_argv,
    pod_name,
    run_argv,
)
from interlink_plugins.podman.states import (
    NAME_IN_USE,
    NO_SUCH,
    NOT_FOUND_IN_CONTAINER,
    START_FAILED_CODES,
    UNREACHABLE,
    WORKDIR_MISSING,
    create_failure_reason,
    phase_of,
)

log = logging.getLogger(__name__)

L_JOB_DIR = LABEL_PREFIX + "job-dir"
ACTION_CONCURRENCY = 4
STOP_CONCURRENCY = 16
PULL_TIMEOUT = 1800.0  # seconds one image pull may take (large images, slow registries)


def local_host_facts() -> HostFacts:
    """Rootless when the plugin (which runs podman) is not root; cgroup v2 when the unified hierarchy is
    mounted at /sys/fs/cgroup (what podman checks). ``podman info`` refines this once it answered."""
    return HostFacts(rootless=os.geteuid() != 0, cgroup_v2=Path("/sys/fs/cgroup/cgroup.controllers").exists())


def _memory_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class PodInfo:
    """What the labels of a podman pod say (enough to report, log and delete it without any state)."""

    pod_id: str
    uid: str
    namespace: str
    name: str
    job_dir: Path
    devices: dict[str, list[str]] = field(default_factory=dict)
    started_ts: float | None = None
    infra_running: bool = False


class PodmanBackend(BackendDefaults):
    name = "podman"
    display_name = "podman"

    def __init__(self, config: Config, runner: CommandRunner, policy: AdminPolicy) -> None:
        self.config = config
        self.runner = runner
        self.policy = policy
        self.host: HostFacts | None = None
        self._node = socket.gethostname()
        self._specs: dict[str, PodSpec] = {}  # pod id -> spec (from pod.json)
        self._prepared: dict[str, PodSpec] = {}  # pod uid -> spec, between prepare and submit
        self._pods: dict[str, PodInfo] = {}  # pod id -> labels
        self._views: dict[str, PodView] = {}  # pod id -> the last decision
        self._inspected: dict[str, Inspected] = {}  # container id -> inspect of its current state
        # container id -> (oom file, start error, why the plugin killed it)
        self._run_files: dict[str, tuple[bool, str, tuple[str, str] | None]] = {}
        self._start_errors: dict[tuple[str, str, int], str] = {}  # (pod, container, run) -> error
        self._create_errors: dict[str, dict[str, CreateError]] = {}  # pod id -> container -> error
        self._in_flight: dict[str, set[str]] = {}  # pod id -> containers with an action under way ("*": pod)
        self._pulling: dict[str, dict[str, str]] = {}  # pod id -> container -> image being pulled for it
        self._stop_requested: set[str] = set()
        self._orphans: set[str] = set()  # pods whose removal failed: retried every poll
        self._tasks: set[asyncio.Task[None]] = set()
        self._actions = asyncio.Semaphore(ACTION_CONCURRENCY)
        self._stops = asyncio.Semaphore(STOP_CONCURRENCY)  # graceful stops wait out grace periods: more at once
        self._removals = asyncio.Semaphore(ACTION_CONCURRENCY)
        self._gpu_lock = asyncio.Lock()
        # probes and lifecycle hooks, run by the plugin as the kubelet runs them (podman/lifecycle.py)
        self._lifecycle = PodLifecycle(runner, config.podman, self._podman, self._spawn, config.command_timeout)

    @property
    def settings(self) -> PodmanSettings:
        """The Podman section of the current config (SIGHUP swaps the config)."""
        return self.config.section(PodmanSettings)

    # --- helpers -----------------------------------------------------------------------

    def host_facts(self) -> HostFacts:
        return self.host or local_host_facts()

    def job_dir(self, namespace: str, uid: str) -> Path:
        return self.config.data_root / job_dir_name(namespace, uid)

    def _labelled_job_dir(self, labels: Mapping[str, Any], namespace: str, uid: str) -> Path:
        """The job dir a pod's labels name; a pod from a version without the label has the legacy name."""
        return Path(labels.get(L_JOB_DIR) or self.config.data_root / f"{namespace}-{uid}")

    async def _podman(
        self, args: Sequence[str], what: str, *, cwd: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run podman; BackendUnavailable when podman cannot be run or cannot reach its storage/service."""
        argv = [*self.config.podman, *args]
        if cwd:
            argv = ["env", "-C", cwd, *argv]  # conmon inherits the directory: its `oom` file lands there
        command = f"podman {' '.join(args[:2])}"
        try:
            result = await self.runner.run(argv, timeout=timeout or self.config.command_timeout)
        except CommandFailed as exc:
            raise BackendUnavailable("podman", f"{command} ({what})", exc.detail) from exc
        if not result.ok:
            error = result.error_text
            if UNREACHABLE.search(error) or (result.returncode == 127 and error.startswith("env:")):
                raise BackendUnavailable("podman", f"{command} ({what})", error)
        return result

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- prepare / submit --------------------------------------------------------------

    def prepare(self, pod: Pod, *, write: bool = True) -> PreparedJob:
        """Plan the job dir once (``plan``: everything validated, nothing written), describe the pod create
        from the plan, then (unless a dry run) write the plan: a refused pod writes nothing."""
        job_dir = self.job_dir(pod.namespace, pod.uid)
        plan = self.plan(pod, job_dir)
        spec = plan.spec
        create = pod_create_argv(pod, spec, instance=self.config.instance_id, network=self.settings.podman_pod_network)
        create.append(f"--label={L_JOB_DIR}={job_dir}")
        files = {"pod.json": plan.pod_json,
                 "podman-run (first run of each container)": self._run_preview(spec, job_dir)}
        if write:
            write_job_files(plan, job_dir)
            self._prepared[pod.uid] = spec
        secrets = [list(pair) for c in spec.containers for pair in c.secrets]
        return PreparedJob(
            job_dir=job_dir,
            submit={"argv": [*self.config.podman, *create], "pod_create": create, "gpus": spec.gpu_needs(),
                    "secrets": secrets},
            files=files,
        )

    def plan(self, pod: Pod, job_dir: Path) -> PodPlan:
        """The pod's job dir planned (pure): its volumes, the podman spec built on their mounts, ``pod.json``
        and the private env files. PodSpecError naming the field when the pod cannot run here."""
        volumes = plan_volumes(pod, job_dir, allowed_host_paths=self.policy.allowed_host_paths,
                               limits=volume_limits(self.config))
        spec = build_pod_spec(
            pod,
            volumes.mounts,
            grace_cap=self.config.grace_period_cap,
            pull_override=self.config.pull_policy or None,
            host=self.host_facts(),
            gpu_map=self.settings.gpu_cdi_map,
            job_dir=str(job_dir),
            instance=self.config.instance_id,
        )
        meta = pod_summary(pod)
        meta["podman"] = spec.to_json()
        return plan_job_files(job_dir, spec, volumes, json.dumps(meta, indent=1) + "\n")

    def _run_preview(self, spec: PodSpec, job_dir: Path) -> str:
        """The ``podman run`` of each container's first run, one line each (shown, never run)."""
        preview = [
            " ".join(json.dumps(w) for w in [*self.config.podman, *run_argv(
                spec, c, pod_id="<pod id>", instance=self.config.instance_id, run=0, backoff=0,
                log_path=str(job_dir / "c" / c.name / "0" / "log"), devices=[f"<{n} x {k}>" for k, n in c.gpus.items()],
            )])
            for c in spec.containers
        ]  # fmt: skip
        return "\n".join(preview) + "\n"

    async def _create_secrets(self, secrets: Sequence[tuple[str, str]]) -> None:
        """podman secrets (type env) for the env values its --env-file cannot carry: from the private
        files, bytes as they are; podman reads them when each container starts."""
        for name, path in secrets:
            await self._podman(["secret", "rm", "--", name], "env secret")
            result = await self._podman(["secret", "create", "--", name, path], "env secret")
            if not result.ok:
                raise SubmitRejected(f"podman secret create {name}: {result.error_text}")

    async def _remove_secrets(self, job_dir: Path) -> None:
        spec = await asyncio.to_thread(read_spec, job_dir)
        names = [name for c in (spec.containers if spec else ()) for name, _path in c.secrets]
        if names:
            result = await self._podman(["secret", "rm", "--", *names], "cleanup")
            if not result.ok:
                log.info("podman secret rm %s: %s", " ".join(names), result.error_text)

    async def _gpus_in_use(self) -> set[str]:
        """CDI devices held by pods of every plugin instance on this host (a pod ran out: released)."""
        result = await self._podman(
            ["pod", "ps", "--format", "json", "--filter", f"label={L_BACKEND}={BACKEND_NAME}"], "GPUs in use"
        )
        if not result.ok:
            raise BackendUnavailable("podman", "podman pod ps (GPUs in use)", result.error_text)
        used: set[str] = set()
        for entry in json_list(result.stdout):
            labels = entry.get("Labels") or {}
            view = self._views.get(str(entry.get("Id", "")))
            if (view is not None and not view.active) or str(entry.get("Status", "")).lower() in ("exited", "dead"):
                continue
            for devices in devices_label(labels.get(L_GPUS, "")).values():
                used.update(devices)
        return used

    async def submit(self, record: PodRecord) -> str:
        create = [str(w) for w in record.submit.get("pod_create", [])]
        if not create:
            raise SubmitRejected("the stored submission has no podman pod create command")
        needs: dict[str, int] = {str(k): int(v) for k, v in dict(record.submit.get("gpus") or {}).items()}
        await self._create_secrets([(str(n), str(p)) for n, p in record.submit.get("secrets") or ()])
        async with self._gpu_lock:
            devices: dict[str, list[str]] = {}
            if needs:
                used = await self._gpus_in_use()
                for kind, count in needs.items():
                    free = [d for d in self.settings.gpu_cdi_map.get(kind, ()) if d not in used]
                    if len(free) < count:
                        raise SubmitRejected(f"waiting for {count} free {kind} (CDI devices in use: {len(used)})",
                                             retryable=True)
                    devices[kind] = free[:count]
                create = [*create, f"--label={L_GPUS}={json.dumps(devices, separators=(',', ':'))}"]
            result = await self._podman(create, "submit")
        if result.ok and result.text.strip():
            pod_id = result.text.strip().splitlines()[-1]
        elif NAME_IN_USE.search(result.error_text):
            found = await self.find_job(record)
            if not found:
                raise SubmitRejected(result.error_text)
            pod_id = found
        else:
            raise SubmitRejected(result.error_text or f"podman pod create exited {result.returncode}")
        info = PodInfo(pod_id, record.uid, record.namespace, record.name, Path(record.job_dir), devices,
                       started_ts=time.time())
        self._pods[pod_id] = info
        spec = self._prepared.pop(record.uid, None)
        self._spawn(self._kick(pod_id, info, spec))
        return pod_id

    async def _kick(self, pod_id: str, info: PodInfo, spec: PodSpec | None) -> None:
        """Start what a new pod starts with (first init container, or the main containers) right away."""
        try:
            if spec is None:
                spec = await asyncio.to_thread(self._load_spec, pod_id, info.job_dir)
            if spec is None:
                return
            self._specs[pod_id] = spec
            if pod_id in self._views:
                return  # a poll got there first
            observed = Observed(runs={}, pod_started_ts=info.started_ts, infra_running=False,
                                stop_requested=pod_id in self._stop_requested,
                                in_flight=frozenset(self._in_flight.get(pod_id, ())))
            view = self._plan(spec, observed)
            self._views[pod_id] = view
            self._dispatch(pod_id, spec, view.actions)
        except Exception:  # a background task: log, the next poll decides again
            log.exception("podman: starting pod %s", pod_id)

    async def find_job(self, record: PodRecord) -> str | None:
        result = await self._podman(
            ["pod", "ps", "--format", "json", "--filter", f"label={L_UID}={record.uid}",
             "--filter", f"label={L_INSTANCE}={self.config.instance_id}",
             "--filter", f"label={L_BACKEND}={BACKEND_NAME}"], "find",
        )  # fmt: skip
        if not result.ok:
            raise BackendUnavailable("podman", "podman pod ps (find)", result.error_text)
        for entry in json_list(result.stdout):
            return str(entry.get("Id", "")) or None
        return None

    async def adopt(self) -> list[AdoptedJob]:
        result = await self._podman(
            ["pod", "ps", "--format", "json", "--filter", f"label={L_INSTANCE}={self.config.instance_id}",
             "--filter", f"label={L_BACKEND}={BACKEND_NAME}"], "adopt",
        )  # fmt: skip
        if not result.ok:
            raise BackendUnavailable("podman", "podman pod ps (adopt)", result.error_text)
        adopted = []
        for entry in json_list(result.stdout):
            labels = entry.get("Labels") or {}
            uid, namespace = labels.get(L_UID, ""), labels.get(L_NAMESPACE, "")
            if not uid:
                continue
            job_dir = str(self._labelled_job_dir(labels, namespace, uid))
            adopted.append(AdoptedJob(uid=uid, job_id=str(entry.get("Id", "")), job_dir=job_dir,
                                      namespace=namespace, name=labels.get(L_NAME, "")))
        # adopt() runs once at start, before the plugin answers: decide once now, so logs (current and
        # previous run) and the first poll after a restart work from podman's view, not from guesses
        with contextlib.suppress(BackendUnavailable):
            await self.query([job.job_id for job in adopted])
        return adopted

    # --- status ------------------------------------------------------------------------

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """ONE ``podman ps`` for every pod of this instance; inspect only what changed state."""
        result = await self._podman(
            ["ps", "-a", "--format", "json", "--filter", f"label={L_INSTANCE}={self.config.instance_id}",
             "--filter", f"label={L_BACKEND}={BACKEND_NAME}"], "status",
        )  # fmt: skip
        if not result.ok:
            raise BackendUnavailable("podman", "podman ps (status)", result.error_text)
        entries = json_list(result.stdout)
        infra: dict[str, dict[str, Any]] = {}
        members: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            pod_id = str(entry.get("Pod") or "")
            if not pod_id:
                continue  # not in a pod: e.g. a SLURM job's podman runtime container
            if entry.get("IsInfra"):
                infra[pod_id] = entry
            else:
                members.setdefault(pod_id, []).append(entry)
        for pod_id, entry in infra.items():
            self._remember_pod(pod_id, entry)
        await self._inspect_changed([e for group in members.values() for e in group])
        wanted = [j for j in job_ids if j in infra]
        await asyncio.to_thread(self._load_files, wanted, members)
        seen = {str(e.get("Id")) for e in entries}
        for cache in (self._inspected, self._run_files):
            for stale in [cid for cid in cache if cid not in seen]:
                cache.pop(stale, None)
        jobs: dict[str, JobInfo] = {}
        for pod_id in wanted:
            spec, info = self._specs.get(pod_id), self._pods[pod_id]
            if spec is None:
                continue
            observed = self._observe(pod_id, info, members.get(pod_id, []))
            view = self._plan(spec, observed)
            self._views[pod_id] = view
            self._dispatch(pod_id, spec, view.actions)
            jobs[pod_id] = self._job_info(pod_id, info, view)
            self._lifecycle.observe(pod_id, spec, info.job_dir, int_or_none(infra[pod_id].get("Pid")),
                                    running_runs(members.get(pod_id, [])), pod_id in self._stop_requested)
        self._lifecycle.retain({str(e.get("Id")) for e in entries if phase_of(str(e.get("State", ""))) == "running"})
        for orphan in list(self._orphans):
            self._spawn(self._remove_orphan(orphan))
        return jobs

    def _remember_pod(self, pod_id: str, infra: Mapping[str, Any]) -> None:
        labels = infra.get("Labels") or {}
        uid, namespace = str(labels.get(L_UID, "")), str(labels.get(L_NAMESPACE, ""))
        started = infra.get("StartedAt")
        created = infra.get("Created")
        when = next((float(v) for v in (started, created) if isinstance(v, int | float) and v > 0), None)
        info = self._pods.get(pod_id)
        if info is None:
            info = PodInfo(pod_id, uid, namespace, str(labels.get(L_NAME, "")),
                           self._labelled_job_dir(labels, namespace, uid))
            self._pods[pod_id] = info
        info.devices = devices_label(str(labels.get(L_GPUS, "")))
        info.started_ts = when if when is not None else info.started_ts
        info.infra_running = phase_of(str(infra.get("State", ""))) == "running"

    async def _inspect_changed(self, entries: list[dict[str, Any]]) -> None:
        changed = [str(e["Id"]) for e in entries
                   if e.get("Id") and (str(e["Id"]) not in self._inspected
                                        or self._inspected[str(e["Id"])].state != e.get("State"))]
        for start in range(0, len(changed), 100):
            batch = changed[start : start + 100]
            result = await self._podman(["inspect", "--type", "container", "--format", "json", *batch], "inspect")
            for item in json_list(result.stdout):  # missing ids (removed meanwhile) only fail themselves
                self._inspected[str(item.get("Id"))] = inspected(item)

    def _load_files(self, pod_ids: Sequence[str], members: Mapping[str, list[dict[str, Any]]]) -> None:
        """Blocking (worker thread): pod.json of pods not loaded yet; oom/error files of runs that ended
        or are stuck before their start."""
        for pod_id in pod_ids:
            info = self._pods[pod_id]
            if pod_id not in self._specs:
                spec = self._load_spec(pod_id, info.job_dir)
                if spec is not None:
                    self._specs[pod_id] = spec
            for entry in members.get(pod_id, []):
                cid = str(entry.get("Id", ""))
                phase = phase_of(str(entry.get("State", "")))
                labels = entry.get("Labels") or {}
                if phase == "running" or (cid in self._run_files and phase == "ended"):
                    continue
                name, run = str(labels.get(L_CONTAINER, "")), str(labels.get(L_RUN, ""))
                self._run_files[cid] = read_run_files(info.job_dir, name, run, ended=phase == "ended")

    def _load_spec(self, pod_id: str, job_dir: Path) -> PodSpec | None:
        """The spec in ``pod.json``, with the stop marker and the create errors its directory recorded."""
        try:
            spec = load_spec(job_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("podman pod %s: cannot read %s/pod.json (%s); not managed", pod_id, job_dir, exc)
            return None
        if (job_dir / STOP_MARKER).exists():
            self._stop_requested.add(pod_id)
        errors = self._create_errors.setdefault(pod_id, {})
        for container in spec.containers:
            if container.name in errors:
                continue
            stored = stored_create_error(job_dir, container.name)
            if stored is not None:
                errors[container.name] = stored
        return spec

    def _observe(self, pod_id: str, info: PodInfo, entries: list[dict[str, Any]]) -> Observed:
        """What the plan decides from: the pod's runs as podman lists them, and what the plugin knows."""
        runs: dict[str, list[Run]] = {}
        for entry in entries:
            observed = self._observed_run(pod_id, entry)
            if observed is not None:
                runs.setdefault(observed[0], []).append(observed[1])
        return Observed(
            runs=runs,
            create_errors=dict(self._create_errors.get(pod_id, {})),
            pod_started_ts=info.started_ts,
            infra_running=info.infra_running,
            stop_requested=pod_id in self._stop_requested,
            in_flight=frozenset(self._in_flight.get(pod_id, ())),
            pulling=dict(self._pulling.get(pod_id, {})),
            hooks_pending=self._lifecycle.hooks_pending(pod_id),
        )

    def _observed_run(self, pod_id: str, entry: Mapping[str, Any]) -> tuple[str, Run] | None:
        """(container name, run) of one ``podman ps`` entry; None for a foreign or removed container."""
        labels = entry.get("Labels") or {}
        name = str(labels.get(L_CONTAINER, ""))
        try:
            run_number = int(labels.get(L_RUN, ""))
            backoff = float(labels.get(L_BACKOFF, "0") or 0)
        except ValueError:
            return None
        cid = str(entry.get("Id", ""))
        state = str(entry.get("State", ""))
        phase = phase_of(state)
        if phase == "gone":
            return None
        seen = self._inspected.get(cid)
        current = seen if seen is not None and seen.state == state else None
        started, finished = run_times(entry, phase, current)
        code = entry.get("ExitCode")
        oom_file, error, killed = self._run_files.get(cid, (False, "", None))
        error = self._start_errors.get((pod_id, name, run_number), error) if phase == "created" else ""
        if error and not finished:
            finished = started = epoch_rfc3339(entry.get("Created") or time.time())
        return name, Run(
            run=run_number,
            container_id=cid,
            phase=phase,
            started=started,
            finished=finished,
            started_ts=parse_time(started) if started else None,
            finished_ts=parse_time(finished) if finished else None,
            exit_code=code if isinstance(code, int) else None,
            oom=(current.oom_killed if current else False) or oom_file,
            start_error=error,
            backoff=backoff,
            killed=killed if phase == "ended" else None,
        )

    def _plan(self, spec: PodSpec, observed: Observed) -> PodView:
        return plan_pod(spec, observed, time.time(), self.config.restart_backoff_initial,
                        self.config.restart_backoff_max)

    def _job_info(self, pod_id: str, info: PodInfo, view: PodView) -> JobInfo:
        state = "Running" if view.active else "Exited"
        if view.deadline_exceeded:
            state = "DeadlineExceeded"
        elif pod_id in self._stop_requested:
            state = "Stopping" if view.active else "Stopped"
        return JobInfo(
            job_id=pod_id,
            state=state,
            active=view.active,
            running=True,
            abnormal_reason="DeadlineExceeded" if view.deadline_exceeded else "",
            node=self._node,
            started_at=epoch_rfc3339(info.started_ts) if info.started_ts else "",
            finished_at=epoch_rfc3339(view.finished_ts) if view.finished_ts and not view.active else "",
        )

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return {}  # podman keeps no accounting: a pod that left podman is reported as vanished

    # --- actions -----------------------------------------------------------------------

    def _dispatch(self, pod_id: str, spec: PodSpec, actions: Sequence[Action]) -> None:
        flying = self._in_flight.setdefault(pod_id, set())
        for action in actions:
            key = action.container or "*"
            if key in flying:
                continue
            flying.add(key)
            self._spawn(self._act(pod_id, spec, action, key))

    async def _act(self, pod_id: str, spec: PodSpec, action: Action, key: str) -> None:
        try:
            async with self._actions:
                await self._perform(pod_id, spec, action)
        except BackendUnavailable as exc:
            log.warning("podman pod %s: %s %s: %s", pod_id, action.kind, action.container, exc)
        except Exception:
            log.exception("podman pod %s: %s %s failed", pod_id, action.kind, action.container)
        finally:
            self._in_flight.get(pod_id, set()).discard(key)

    async def _perform(self, pod_id: str, spec: PodSpec, action: Action) -> None:
        info = self._pods.get(pod_id)
        if info is None:
            return
        if action.kind in ("start", "start-existing"):
            await self._start(pod_id, spec, info, action)
        else:
            await self._stop_or_prune(pod_id, spec, info, action)

    async def _start(self, pod_id: str, spec: PodSpec, info: PodInfo, action: Action) -> None:
        """Start a run: pull its image (a new run), check its bind sources, podman run (or start), then
        its postStart hook and the record of what went wrong."""
        if pod_id in self._stop_requested:
            return
        container = spec.container(action.container)
        if container is None:
            return
        run_dir = info.job_dir / "c" / container.name / str(action.run)
        await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
        if action.kind == "start" and not await self._pull(pod_id, container, action.run, run_dir):
            return
        # last, right before podman binds them: an earlier container may have swapped a source
        pins = await check_binds(self._create_errors.setdefault(pod_id, {}), pod_id, container, action.run,
                                 run_dir, pin_dir=self.config.state_dir / f"binds-{self.config.instance_id}",
                                 pin_key=spec.uid)
        if pins is None:
            return
        args = self._start_args(pod_id, spec, info, container, action, run_dir)
        self._lifecycle.starting(pod_id, container)
        try:
            result = await self._run_start(spec, container, action.run, run_dir, pins.argv(args))
        finally:
            await pins.release()  # podman started it (or gave up): the container holds its own mounts
        self._lifecycle.post_start(pod_id, spec, container, action.run,
                                   container_name(self.config.instance_id, spec.uid, container.name, action.run),
                                   info.job_dir, started=result.ok)
        await self._after_start(pod_id, container.name, action.run, run_dir, result,
                                never_pull=any(w == "--pull=never" for w in container.options))

    def _start_args(
        self, pod_id: str, spec: PodSpec, info: PodInfo, container: ContainerSpec, action: Action, run_dir: Path
    ) -> list[str]:
        """podman's arguments for the start: ``run`` for a new run, ``start`` for a created one."""
        if action.kind != "start":
            return ["start", *action.container_ids]
        devices = container_devices(spec, info.devices).get(container.name, [])
        args = run_argv(spec, container, pod_id=pod_id, instance=self.config.instance_id, run=action.run,
                        backoff=action.backoff, log_path=str(run_dir / "log"), devices=devices)
        # pulled (or found) above: podman run must not go to the registry a second time
        return [w if not w.startswith("--pull=") else "--pull=never" for w in args]

    async def _run_start(
        self, spec: PodSpec, container: ContainerSpec, run: int, run_dir: Path, argv: list[str]
    ) -> CommandResult:
        """Run the start in the run directory; a missing workingDir is created and the start retried."""
        result = await self._podman(argv, f"start {container.name}", cwd=str(run_dir))
        workdir = next((w.partition("=")[2] for w in container.options if w.startswith("--workdir=")), "")
        if not result.ok and workdir and WORKDIR_MISSING.search(result.error_text):
            ctr = container_name(self.config.instance_id, spec.uid, container.name, run)
            if await self._create_workdir(ctr, workdir, run_dir):
                result = await self._podman(["start", ctr], f"start {container.name}", cwd=str(run_dir))
        return result

    async def _stop_or_prune(self, pod_id: str, spec: PodSpec, info: PodInfo, action: Action) -> None:
        """The other actions: stop a sidecar, stop the pod (deadline, preStop first) or finish it, prune
        the runs before the current one."""
        timeout = spec.grace_seconds + self.config.command_timeout
        if action.kind == "stop":
            left = await self._lifecycle.pre_stop_pod(pod_id, spec.grace_seconds, [action.container])
            await self._podman(["stop", "-t", str(int(left + 0.999)), *action.container_ids], "stop sidecar",
                               timeout=timeout)
        elif action.kind == "stop-pod":
            left = await self._lifecycle.pre_stop_pod(pod_id, spec.grace_seconds)
            await self._podman(["pod", "stop", "-t", str(int(left + 0.999)), pod_id], "deadline", timeout=timeout)
        elif action.kind == "finish-pod":
            await self._podman(["pod", "stop", "-t", "0", "--ignore", pod_id], "finish")
        elif action.kind == "prune":
            await self._podman(["rm", "-f", "--ignore", *action.container_ids], "prune")
            await asyncio.to_thread(remove_runs_before, info.job_dir / "c" / action.container, action.run)

    async def _pull(self, pod_id: str, container: ContainerSpec, run: int, run_dir: Path) -> bool:
        """The image step of a start, as the kubelet's: pull per the container's policy before creating it.

        While it runs the container waits, ContainerCreating "pulling image X", and the plugin log shows
        it; a failed pull keeps the container waiting (ErrImagePull, then ImagePullBackOff until the
        retry) with podman's message, which carries the registry's. False when the start must stop."""
        policy = next((w.partition("=")[2] for w in container.options if w.startswith("--pull=")), "missing")
        image = container.image
        if policy == "never":
            return True  # podman run reports a missing image: ErrImageNeverPull
        if policy == "missing":
            exists = await self._podman(["image", "exists", image], f"image {container.name}")
            if exists.ok:
                return True
        self._pulling.setdefault(pod_id, {})[container.name] = image
        log.info("podman pod %s: container %s: pulling image %s", pod_id, container.name, image)
        started = time.monotonic()
        try:
            result = await self._podman(["pull", "--quiet", image], f"pull {container.name}", timeout=PULL_TIMEOUT)
        finally:
            self._pulling.get(pod_id, {}).pop(container.name, None)
        took = time.monotonic() - started
        if result.ok:
            log.info("podman pod %s: container %s: pulled image %s in %.1fs", pod_id, container.name, image, took)
            self._create_errors.get(pod_id, {}).pop(container.name, None)
            return True
        text = " ".join((result.error_text or f"podman pull exited {result.returncode}").split())
        error = await self._record_create_error(pod_id, container.name, run, run_dir, "ErrImagePull",
                                                f"pulling image {image}: {text}")
        log.warning("podman pod %s: container %s: pulling image %s failed after %.1fs (attempt %d): %s",
                    pod_id, container.name, image, took, error.attempts, text)
        return False

    async def _record_create_error(
        self, pod_id: str, name: str, run: int, run_dir: Path, reason: str, message: str
    ) -> CreateError:
        """Run ``run`` could not be created: the container waits with ``reason``. Kept in the run directory
        too, so a restarted plugin reports it at once (podman has no trace); attempts count per run."""
        errors = self._create_errors.setdefault(pod_id, {})
        previous = errors.get(name)
        attempts = previous.attempts + 1 if previous is not None and previous.run == run else 1
        error = errors[name] = CreateError(run, reason, message, time.time(), attempts)
        await asyncio.to_thread(write_text, run_dir / "error", create_error_text(error))
        return error

    async def _create_workdir(self, ctr: str, workdir: str, run_dir: Path) -> bool:
        """Create a missing workingDir in a created container (0755, root), as the CRI runtimes do:
        ``podman cp`` an empty directory tree onto the deepest ancestor that exists."""
        parts = PurePosixPath(workdir).parts
        for depth in range(len(parts) - 1, 0, -1):
            target = str(PurePosixPath(*parts[: depth + 1]))
            source = run_dir / "workdir" / str(depth)
            await asyncio.to_thread(empty_tree, source, parts[depth + 1 :])
            result = await self._podman(["cp", str(source), f"{ctr}:{target}"], "create workingDir")
            if result.ok:
                return True
            if not NOT_FOUND_IN_CONTAINER.search(result.error_text):
                log.warning("podman cp into %s: %s", ctr, result.error_text)
                return False
        return False

    async def _after_start(
        self, pod_id: str, name: str, run: int, run_dir: Path, result: CommandResult, *, never_pull: bool
    ) -> None:
        errors = self._create_errors.setdefault(pod_id, {})
        if result.ok or NAME_IN_USE.search(result.error_text):
            errors.pop(name, None)
            return
        text = result.error_text or f"podman exited {result.returncode}"
        if result.returncode in START_FAILED_CODES or "OCI runtime" in text:
            # the container exists but could not start: the kubelet's StartError (exit 128)
            errors.pop(name, None)
            self._start_errors[(pod_id, name, run)] = text
            await asyncio.to_thread(write_text, run_dir / "error", start_error_text(text))
            log.warning("podman pod %s: container %s run %s could not start: %s", pod_id, name, run, text)
            return
        reason = create_failure_reason(text, never_pull)
        await self._record_create_error(pod_id, name, run, run_dir, reason, text)
        log.warning("podman pod %s: container %s run %s: %s: %s", pod_id, name, run, reason, text)

    # --- delete ------------------------------------------------------------------------

    async def _pod_info(self, pod_id: str) -> PodInfo | None:
        info = self._pods.get(pod_id)
        if info is not None:
            return info
        result = await self._podman(["pod", "inspect", "--format", "json", pod_id], "delete")
        if not result.ok:
            if NO_SUCH.search(result.error_text):
                return None
            raise BackendUnavailable("podman", "podman pod inspect (delete)", result.error_text)
        try:
            data = json.loads(result.stdout or b"{}")
        except ValueError:
            return None
        if isinstance(data, list):
            data = data[0] if data else {}
        labels = data.get("Labels") or {}
        uid, namespace = str(labels.get(L_UID, "")), str(labels.get(L_NAMESPACE, ""))
        info = PodInfo(pod_id, uid, namespace, str(labels.get(L_NAME, "")),
                       self._labelled_job_dir(labels, namespace, uid))
        self._pods[pod_id] = info
        return info

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        info = await self._pod_info(job_id)
        if info is None:
            return
        if job_id not in self._stop_requested:
            self._stop_requested.add(job_id)
            await asyncio.to_thread(write_text, info.job_dir / STOP_MARKER, f"{time.time()}\n")
        if graceful:
            spec = self._specs.get(job_id)
            grace = spec.grace_seconds if spec else int(self.config.grace_period_cap)
            # SIGTERM now, SIGKILL after the grace period; in the background (the core sends the hard
            # cancel at its own deadline as well)
            self._spawn(self._stop_pod(job_id, grace))
            return
        self._lifecycle.probes.stop_pod(job_id)
        result = await self._podman(["pod", "kill", job_id], "delete")
        if not result.ok and not NO_SUCH.search(result.error_text):
            log.info("podman pod kill %s: %s", job_id, result.error_text)

    async def _stop_pod(self, pod_id: str, grace: int) -> None:
        async with self._stops:
            await self._stop_pod_now(pod_id, grace)

    async def _stop_pod_now(self, pod_id: str, grace: int) -> None:
        try:
            # preStop hooks first (within the grace period), then SIGTERM, SIGKILL after what is left
            left = await self._lifecycle.pre_stop_pod(pod_id, grace)
            seconds = max(0, int(left + 0.999))
            log.info("podman pod %s: stopping (SIGTERM, SIGKILL after %ss)", pod_id, seconds)
            result = await self._podman(["pod", "stop", "-t", str(seconds), pod_id], "delete",
                                        timeout=seconds + self.config.command_timeout)
            if not result.ok and not NO_SUCH.search(result.error_text):
                log.warning("podman pod stop %s: %s", pod_id, result.error_text)
        except BackendUnavailable as exc:
            log.warning("podman pod stop %s: %s", pod_id, exc)

    async def cleanup(self, record: PodRecord) -> None:
        """Remove the pod (containers included) and its job dir, in the background: the core calls this
        from its poll loop, one pod after the other, and a bulk delete must not stall the polls."""
        targets = tuple(t for t in (record.job_id, pod_name(self.config.instance_id, record.uid)) if t)
        self._forget(record.job_id)
        self._spawn(self._remove(targets, Path(record.job_dir), record.job_id))

    async def _remove(self, targets: tuple[str, ...], job_dir: Path, pod_id: str) -> None:
        async with self._removals:
            try:
                result = await self._podman(["pod", "rm", "-f", "-t", "0", "--ignore", *targets], "cleanup")
            except BackendUnavailable as exc:
                log.warning("podman pod rm %s: %s (retried every poll)", " ".join(targets), exc)
                if pod_id:
                    self._orphans.add(pod_id)
                return
            if not result.ok:
                log.warning("podman pod rm %s: %s", " ".join(targets), result.error_text)
            with contextlib.suppress(BackendUnavailable):
                await self._remove_secrets(job_dir)
            if job_dir.parent == self.config.data_root:
                # the containers wrote into its emptyDirs: removed without following what they left there
                left = await safefs.run(safefs.remove_tree, safefs.job_location(job_dir))
                if left:
                    log.warning("job dir %s not entirely removed: %s", job_dir, "; ".join(left[:5]))

    def _forget(self, pod_id: str) -> None:
        self._lifecycle.forget(pod_id)
        self._specs.pop(pod_id, None)
        self._pods.pop(pod_id, None)
        self._views.pop(pod_id, None)
        self._create_errors.pop(pod_id, None)
        self._in_flight.pop(pod_id, None)
        self._stop_requested.discard(pod_id)
        self._orphans.discard(pod_id)
        for key in [k for k in self._start_errors if k[0] == pod_id]:
            self._start_errors.pop(key, None)

    async def _remove_orphan(self, pod_id: str) -> None:
        with contextlib.suppress(BackendUnavailable):
            result = await self._podman(["pod", "rm", "-f", "-t", "0", "--ignore", pod_id], "cleanup")
            if result.ok:
                self._orphans.discard(pod_id)

    # --- ping --------------------------------------------------------------------------

    async def resources(self) -> Resources:
        result = await self._podman(["info", "--format", "json"], "resources")
        if not result.ok:
            raise BackendUnavailable("podman", "podman info", result.error_text)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            host = json.loads(result.stdout).get("host") or {}
            self.host = HostFacts(
                rootless=bool((host.get("security") or {}).get("rootless")),
                cgroup_v2=str(host.get("cgroupVersion", "")) == "v2",
            )
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 0
        gpus = {kind: len(devices) for kind, devices in self.settings.gpu_cdi_map.items() if devices}
        return Resources(cpus=cpus, memory_bytes=_memory_total(), gpus=gpus)

    # --- per-container view ------------------------------------------------------------

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        view = self._views.get(record.job_id)
        return self._lifecycle.overlay(record.job_id, view.files) if view is not None else {}

    def _current_run(self, record: PodRecord, container: str) -> int | None:
        view = self._views.get(record.job_id)
        if view is not None and container in view.current_run:
            return view.current_run[container]
        runs = run_numbers(Path(record.job_dir) / "c" / container)
        return runs[-1] if runs else None

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        base = safefs.job_location(record.job_dir) / "c" / container
        current = self._current_run(record, container)
        if current is None:
            return base / "none" / "log"
        if not previous:
            return base / str(current) / "log"
        earlier = [n for n in run_numbers(base.path) if n < current and safefs.is_file(base / str(n) / "log")]
        return base / str(earlier[-1] if earlier else current - 1) / "log"

    def container_started(self, record: PodRecord, container: str) -> bool:
        view = self._views.get(record.job_id)
        if view is not None and container in view.started:
            return view.started[container] and safefs.is_file(self.log_file(record, container, previous=False))
        return safefs.is_file(self.log_file(record, container, previous=False))

    def runner_finished(self, record: PodRecord) -> bool:
        view = self._views.get(record.job_id)
        return view is not None and not view.active
