"""A pod turned into a job directory and a RunPlan: shared by every batch backend (SLURM, HTCondor).

Plan, then write: :func:`plan_job` is pure (the RunPlan and every file of the job dir: path, bytes,
mode, volumes included), made once per prepare; :func:`write_local` writes a plan into the job dir
(through core/safefs, no symlink followed), :func:`write_stage` into a local stage that is uploaded
as the job dir (SFTP); both through :func:`write_planned`, the writer of planned volumes and files
(which the Podman backend's plan uses too). The static helpers are not in the plan's files: they live once per content
hash in the data root (core/podrunner/helpers.py), unless the plan carries them inline (a job that sees none of
the data root, e.g. HTCondor's spool mode).

Besides the containers, the RunPlan carries what the pod's annotations ask for inside the job:
runtime options (singularity options and mounts, policy-checked), the MPI launcher
(mpi-flags), probes and lifecycle hooks, and the admin-enabled raw shell (interLink's wstunnel
commands, pre-exec, the full-mesh script as a wrapper around the containers). interLink's
``jobScript`` replaces the containers with one pseudo-container ``jobscript`` whose state every
spec container shows (c/<name> links to c/jobscript).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from interlink_plugins.core import safefs
from interlink_plugins.core.commands.local import CommandFailed, run_blocking
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import GPU_RESOURCES, Container, Pod, pod_summary
from interlink_plugins.core.podrunner import helpers as helpers_mod
from interlink_plugins.core.podrunner.plan import ContainerRun, ProbeRun, RestartPolicy, RunPlan
from interlink_plugins.core.podrunner.render import render_runner
from interlink_plugins.core.policy import annotations as ann
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.runtimes.containers import (
    NS_EXEC_NAME,
    Runtime,
    RuntimeContext,
    apptainer_settings,
    configured_binary,
    helper_files,
    runtime_for,
)
from interlink_plugins.core.runtimes.probes import MPI_HELPER, handler_argv, probe_helper_files, probe_runs
from interlink_plugins.core.volumes.bindcheck import bind_sources
from interlink_plugins.core.volumes.materialise import VolumeLimits, VolumePlan, plan_volumes, write_volumes

if TYPE_CHECKING:  # core reads the config, it does not import it
    from interlink_plugins.config import Config

log = logging.getLogger(__name__)

JOB_SCRIPT_CONTAINER = "jobscript"
JOB_SCRIPT_FILE = "jobScript.sh"
MESH_FILE = "mesh.sh"


def _restart_policy(pod: Pod, container: Container) -> RestartPolicy:
    if container.is_sidecar:
        return "Always"
    if container.kind == "init":
        # the kubelet retries failed init containers unless the pod never restarts
        return "Never" if pod.restart_policy == "Never" else "OnFailure"
    policy = pod.restart_policy
    return "Always" if policy == "Always" else "OnFailure" if policy == "OnFailure" else "Never"


def _runtime_binary(config: Config, runtime_name: str) -> str | None:
    """The runtime executable inside the job (a single path: the job runs it, not the plugin)."""
    configured = configured_binary(config, runtime_name)
    if not configured or configured == (runtime_name,):
        return None
    return configured[0]


def _runtime_options(pod: Pod, policy: AdminPolicy, runtime_name: str) -> tuple[str, ...]:
    """Policy-checked options of the runtime's annotations (mounts first, as the Go plugin)."""
    words: list[str] = []
    if runtime_name in ("apptainer", "singularity"):
        keys = (*policy.annotation_keys(ann.SINGULARITY_MOUNTS), *policy.annotation_keys(ann.SINGULARITY_OPTIONS))
        for key, text in ann.present(pod.annotations, keys):
            for option in policy.singularity_options(text, field=f"metadata.annotations[{key}]"):
                words.append(f"--{option.name}" if option.value is None else f"--{option.name}={option.value}")
    return tuple(words)


def _hook_argv(
    pod: Pod, container: Container, runtime: Runtime, ctx: RuntimeContext, hook: object, field: str
) -> tuple[str, ...]:
    if not isinstance(hook, dict) or not hook:
        return ()
    return handler_argv(
        hook, field=field, pod=pod, container=container, runtime=runtime, ctx=ctx, job_dir=ctx.job_dir, hook=True
    )


def _mpi_launch(pod: Pod, config: Config, policy: AdminPolicy, runtime_name: str, helper_dir: str,
                launcher: Sequence[str]) -> tuple[str, ...]:
    """`bash mpi.sh launch LAUNCHER... FLAGS... --il-task RUNTIME` for pods with mpi-flags, else ()."""
    # only a backend whose section declares mpi-flags keys launches MPI (inside its allocation); the
    # annotation present at all (even empty) means MPI, "false" turns it off
    keys = policy.annotation_keys(ann.MPI_FLAGS, config.backend)
    found = next(((k, pod.annotations[k]) for k in keys if k in pod.annotations), None)
    if found is None or ann.mpi_disabled(found[1]):
        return ()
    key, text = found
    field = f"metadata.annotations[{key}]"
    if not runtime_for(runtime_name).mpi_tasks:
        raise PodSpecError(
            field, f"MPI launch is not supported with ContainerRuntime {runtime_name} (one container per pod)"
        )
    words = ann.mpi_launch_words(policy, text, launcher, field=field)
    return ("bash", os.path.join(helper_dir, MPI_HELPER), "launch", *words, "--il-task", runtime_name)


def _prologue(pod: Pod, policy: AdminPolicy, job_dir: Path) -> tuple[list[str], tuple[str, ...], str]:
    """Admin-enabled raw shell in the Go plugin's order (wstunnel, pre-exec), the mesh wrapper and its script."""
    prologue: list[str] = []
    wrapper: tuple[str, ...] = ()
    wrapper_script = ""
    wstunnel = pod.annotations.get(ann.WSTUNNEL, "")
    if wstunnel.strip():
        policy.check_raw_shell(f"metadata.annotations[{ann.WSTUNNEL}]")
        prologue.append(wstunnel)
    for key, text in ann.present(pod.annotations, policy.annotation_keys(ann.PRE_EXEC)):
        policy.check_raw_shell(f"metadata.annotations[{key}]")
        rest, mesh = ann.split_mesh(text)
        if mesh is not None and not wrapper:
            wrapper = (str(job_dir / MESH_FILE),)
            wrapper_script = mesh
            text = rest
        if text.strip():
            prologue.append(text)
    return prologue, wrapper, wrapper_script


def _job_script_run(pod: Pod, job_dir: Path) -> ContainerRun:
    script = pod.job_script or ""
    path = str(job_dir / JOB_SCRIPT_FILE)
    argv = (path,) if script.startswith("#!") else ("bash", path)
    return ContainerRun(name=JOB_SCRIPT_CONTAINER, kind="main", argv=argv, restart_policy="Never")


@lru_cache(maxsize=1)
def host_namespaces_available() -> tuple[bool, str]:
    """Can ns-exec.sh build a private mount namespace here? (bubblewrap present and permitted)"""
    with tempfile.TemporaryDirectory(prefix="il-probe-") as tmp:
        script = Path(tmp) / NS_EXEC_NAME
        script.write_text(helper_files()[NS_EXEC_NAME])
        try:
            result = run_blocking(["bash", str(script), "--probe"], timeout=20)
        except CommandFailed as exc:
            return False, exc.detail
    return result.ok, result.error_text


def _refuse_mounts_without_namespaces(pod: Pod) -> None:
    available, why = host_namespaces_available()
    if available:
        return
    for container in pod.all_containers:
        if container.volume_mounts or container.working_dir:
            position = pod.all_containers.index(container)
            if container.kind == "main":
                position -= len(pod.init_containers)
            field = f"{container.field_path}[{position}].volumeMounts[0].mountPath"
            target = container.volume_mounts[0].mount_path if container.volume_mounts else container.working_dir
            raise PodSpecError(
                field, f"cannot give {target!r} container semantics with runtime 'none' on this host: {why}"
            )


def volume_limits(config: Config) -> VolumeLimits:
    """MaxVolumeFiles and MaxVolumeBytes: what one pod's file volumes may write."""
    return VolumeLimits(max_files=config.max_volume_files, max_bytes=config.max_volume_bytes)


def describe_volume_limits(config: Config) -> str:
    """The caps as `check` and `render` report them."""
    return (f"volume files per pod: at most {config.max_volume_files} files and directories, "
            f"{config.max_volume_bytes} bytes (MaxVolumeFiles, MaxVolumeBytes)")


def make_job_dir(job_dir: Path) -> None:
    """The pod's job dir, private (0700), made by this plugin: an existing one that is a symlink or belongs
    to another uid (a job of an earlier pod with this UID) is refused, never written into."""
    job_dir.parent.mkdir(parents=True, exist_ok=True)  # the data root: the admin's path
    location = safefs.job_location(job_dir)
    try:
        with safefs.open_dir(location, create=True) as directory:  # one walk: made, checked, chmod'ed
            info = directory.stat()
            if info.st_uid != os.geteuid():
                raise PodSpecError("metadata.uid", f"job dir {job_dir} exists, owned by uid {info.st_uid}: "
                                   "not reused", status=409)
            directory.chmod(0o700)
    except safefs.Refused as exc:
        raise PodSpecError("metadata.uid", f"job dir {job_dir} is {exc.kind}: refused", status=409) from None


@dataclass(frozen=True)
class JobFile:
    """One file of a job dir: its path relative to the job dir ('/'-separated), bytes and mode."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True)
class JobPlan:
    """Everything a prepare puts in a job dir, computed once and written by a writer."""

    run: RunPlan
    volumes: VolumePlan
    files: tuple[JobFile, ...]  # runner, pod.json, mesh.sh, jobScript.sh (and inline helpers), env files
    job_script_links: tuple[tuple[str, str], ...]  # (container name, kind): c/<name> -> jobscript
    helpers: helpers_mod.HelperSet | None  # to be present in the data root; None when inline
    helper_root: str  # the data root holding them (as the job sees it)

    def top_names(self) -> list[str]:
        """The names the writer makes directly in the job dir (sorted)."""
        names = {item.path.split("/")[0] for item in self.files}
        names.update("volumes" if v.category == "files" else "emptydir" for v in self.volumes.volumes
                     if v.category != "hostpath")
        if self.job_script_links:
            names.add("c")
        return sorted(names)

    def texts(self) -> dict[str, str]:
        """The job dir's top-level text files by name (what `render` shows)."""
        shown = {f.path: f.data.decode() for f in self.files if "/" not in f.path}
        if self.helpers is not None:
            shown.update(self.helpers.texts())
        return shown


def build_run_plan(pod: Pod, job_dir: Path, config: Config, policy: AdminPolicy, *, write: bool = False,
                   helper_dir: str | None = None, mpi_launcher: Sequence[str] = ()) -> RunPlan:
    """The RunPlan of plan_job (for callers that need only it; the helpers inline unless `helper_dir`
    says otherwise); with ``write``, the files written into `job_dir` as well (write_local)."""
    plan = plan_job(pod, job_dir, config, policy, helper_dir=helper_dir, mpi_launcher=mpi_launcher)
    if write:
        write_local(plan, job_dir)
    return plan.run


def plan_job(pod: Pod, job_dir: Path, config: Config, policy: AdminPolicy, *, helper_dir: str | None = "",
             mpi_launcher: Sequence[str] = ()) -> JobPlan:
    """The pod's job dir as the job sees it at `job_dir`: volumes and every container turned into argv
    for the runtime, the runner and the files. Pure: nothing is written.

    ``helper_dir``: where the job finds the static helpers; "" = the data root's content-hashed copy
    (config.data_root); None = inline, in the job dir itself (the runner self-contained).
    ``mpi_launcher``: the backend's launcher of pods that ask for MPI (the backend's setting)."""
    PLAN_COUNTER.count += 1
    helper_set = helpers_mod.helper_set()
    helpers_at = str(job_dir) if helper_dir is None else helper_dir or helper_set.dir_below(config.data_root)
    volume_plan = plan_volumes(pod, job_dir, allowed_host_paths=policy.allowed_host_paths,
                               limits=volume_limits(config))
    runtime_name = config.container_runtime
    if runtime_name == "none":
        _refuse_mounts_without_namespaces(pod)
    planning = _PodPlanning(
        pod=pod, job_dir=job_dir, config=config, volumes=volume_plan, runtime=runtime_for(runtime_name),
        runtime_name=runtime_name, image_root=ann.image_root(pod.annotations, policy.annotation_keys(ann.IMAGE_ROOT)),
        options=_runtime_options(pod, policy, runtime_name),
        mpi=_mpi_launch(pod, config, policy, runtime_name, helpers_at, mpi_launcher), helpers_at=helpers_at,
    )
    planned: list[_PlannedContainer] = []
    if pod.job_script is not None:
        # interLink's job script replaces the containers (the Go plugin's pseudo-container jobScript)
        policy.check_raw_shell("jobScript")
        planned.append(_PlannedContainer(_job_script_run(pod, job_dir), (), (), ()))
    for index, container in enumerate(() if pod.job_script is not None else pod.all_containers):
        planned.append(planning.container(container, index if container.kind == "init"
                                          else index - len(pod.init_containers)))
    run = _run_plan(pod, job_dir, config, policy, planned, helper_dir="" if helper_dir is None else helpers_at)
    return JobPlan(
        run=run,
        volumes=volume_plan,
        files=(*_top_files(pod, run, inline_helpers=helper_dir is None),
               *(JobFile(os.path.relpath(path, job_dir), content, 0o600) for path, content in run.private_files)),
        job_script_links=tuple((c.name, c.kind) for c in pod.all_containers) if pod.job_script is not None else (),
        helpers=None if helper_dir is None else helper_set,
        helper_root=str(config.data_root),
    )


@dataclass(frozen=True)
class _PlannedContainer:
    """One container's run and what it adds to the job dir and the runner's preparation."""

    run: ContainerRun
    files: tuple[tuple[str, bytes], ...]
    prepare: tuple[tuple[str, ...], ...]
    credential_paths: tuple[str, ...]


@dataclass(frozen=True)
class _PodPlanning:
    """What every container of one pod is planned with."""

    pod: Pod
    job_dir: Path
    config: Config
    volumes: VolumePlan
    runtime: Runtime
    runtime_name: str
    image_root: str
    options: tuple[str, ...]
    mpi: tuple[str, ...]
    helpers_at: str

    def container(self, container: Container, position: int) -> _PlannedContainer:
        """``container`` (``position`` within its kind) as the runtime's argv, hooks and probes."""
        pod, config = self.pod, self.config
        ctx = RuntimeContext(
            container=container,
            mounts=tuple(self.volumes.mounts.get(container.name, ())),
            env=container.env,
            job_dir=str(self.job_dir),
            pod_uid=pod.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            instance=config.instance_id,
            image_prefix=self.image_root or config.image_prefix,
            pull_policy_override=config.pull_policy or None,
            gpus=sum(container.resources.extended.get(kind, 0) for kind in GPU_RESOURCES),
            extra_options=self.options,
            binary=_runtime_binary(config, self.runtime_name),
            container_index=position,
            apptainer=apptainer_settings(config),
            helper_dir=self.helpers_at,
        )
        argv = self.runtime.argv(ctx)
        path = f"{container.field_path}[{position}]"
        probes: tuple[ProbeRun, ...] = ()
        if config.enable_probes and (container.kind == "main" or container.is_sidecar):
            probes = probe_runs(pod, container, runtime=self.runtime, ctx=ctx, job_dir=self.helpers_at, field=path)
        hooks = {name: _hook_argv(pod, container, self.runtime, ctx, container.lifecycle.get(name),
                                  f"{path}.lifecycle.{name}") for name in ("postStart", "preStop")}
        run = ContainerRun(
            name=container.name,
            kind=container.kind,
            argv=(*self.mpi, *argv.argv) if self.mpi and container.kind == "main" else argv.argv,
            restart_policy=_restart_policy(pod, container),
            sidecar=container.is_sidecar,
            cleanup_argv=argv.cleanup_argv,
            post_start_argv=hooks["postStart"],
            pre_stop_argv=hooks["preStop"],
            probes=probes,
            image_argv=argv.image_argv,
            image=container.image,
            image_failure=argv.image_failure,
            binds=bind_sources(ctx.mounts),
        )
        return _PlannedContainer(run, (*argv.files, *argv.credential_files), tuple(argv.prepare_argvs),
                                 tuple(path for path, _content in argv.credential_files))


def _run_plan(pod: Pod, job_dir: Path, config: Config, policy: AdminPolicy, planned: list[_PlannedContainer], *,
              helper_dir: str) -> RunPlan:
    """The runner's plan: the containers in order, the pod's limits and the admin's prologue."""
    prologue, wrapper, wrapper_script = _prologue(pod, policy, job_dir)
    if config.command_prefix:
        prologue.insert(0, config.command_prefix)  # the admin's CommandPrefix: before interLink's and the pod's
    runner_env = dict(config.job_environment)
    pod_ip = pod.annotations.get(ann.POD_IP, "")
    if pod_ip:
        runner_env["POD_IP"] = pod_ip
    return RunPlan(
        job_dir=str(job_dir),
        containers=tuple(item.run for item in planned),
        grace_seconds=int(min(pod.termination_grace_seconds, config.grace_period_cap)),
        backoff_initial_seconds=config.restart_backoff_initial,
        backoff_max_seconds=config.restart_backoff_max,
        log_max_bytes=config.max_container_log_bytes,
        runner_path=config.job_path,
        prologue=tuple(prologue),
        runner_env=tuple(sorted(runner_env.items())),
        wrapper=wrapper,
        wrapper_script=wrapper_script,
        private_files=tuple(file for item in planned for file in item.files),
        prepare=tuple(step for item in planned for step in item.prepare),
        credential_files=tuple(path for item in planned for path in item.credential_paths),
        helper_dir=helper_dir,
    )


class _Counter:
    """How many job plans this process made (a test proves every backend plans once per prepare)."""

    count = 0


PLAN_COUNTER = _Counter()


def _top_files(pod: Pod, plan: RunPlan, *, inline_helpers: bool) -> list[JobFile]:
    """pod-runner.sh, pod.json (and mesh.sh, jobScript.sh; the helpers when inline)."""
    texts = {"pod-runner.sh": render_runner(plan)}
    if inline_helpers:
        texts.update({**helper_files(), **probe_helper_files()})
    texts["pod.json"] = json.dumps(pod_summary(pod), indent=1) + "\n"
    if plan.wrapper and plan.wrapper_script:
        texts[MESH_FILE] = plan.wrapper_script
    if pod.job_script is not None:
        texts[JOB_SCRIPT_FILE] = pod.job_script
    return [JobFile(name, text.encode(), 0o700 if name.endswith((".sh", ".rc")) else 0o600)
            for name, text in texts.items()]


def write_local(plan: JobPlan, job_dir: Path) -> None:
    """The local writer: the job dir made private (make_job_dir), the helpers present in the data root
    (core/podrunner/helpers.py), then the plan's files written through core/safefs (no symlink followed)."""
    make_job_dir(job_dir)
    if plan.helpers is not None:
        helpers_mod.ensure_local(Path(plan.helper_root), plan.helpers)
    _write_files(plan, job_dir)


def write_stage(plan: JobPlan, stage: Path) -> None:
    """The SFTP stage writer: the plan's files into `stage` (an empty private dir of the plugin's that
    is uploaded as the job dir); the helpers are staged on the remote once per hash (RemoteJobFiles)."""
    _write_files(plan, stage)


def _write_files(plan: JobPlan, job_dir: Path) -> None:
    write_planned(job_dir, plan.volumes, plan.files)
    if plan.job_script_links:
        _link_job_script_state(plan.job_script_links, job_dir)


def write_planned(job_dir: Path, volumes: VolumePlan, files: Sequence[JobFile], *, dir_mode: int = 0o700) -> None:
    """The writer of a planned job dir (which must exist): the volumes (write_volumes: O_NOFOLLOW dir fds),
    then the files through core/safefs in one walk from the job dir (atomic, no symlink followed; missing
    dirs made with ``dir_mode``, less the umask)."""
    write_volumes(volumes, job_dir)
    with safefs.open_dir(safefs.job_location(job_dir)) as top:
        for item in files:
            *parents, name = item.path.split("/")
            if not parents:
                top.write(name, item.data, item.mode)
                continue
            with top.walk(tuple(parents), create=True, mode=dir_mode) as directory:
                directory.write(name, item.data, item.mode)


def write_job_files(pod: Pod, job_dir: Path, plan: RunPlan, config: Config, *, write: bool) -> dict[str, str]:
    """The job dir's top-level files of `plan` (written into `job_dir` when write): kept for callers that
    built the RunPlan alone; returns their text (for `render`)."""
    del config
    files = {f.path: f.data for f in _top_files(pod, plan, inline_helpers=not plan.helper_dir)}
    if write:
        location = safefs.job_location(job_dir)
        for name, data in files.items():
            safefs.write_bytes(location / name, data, 0o700 if name.endswith((".sh", ".rc")) else 0o600)
        if pod.job_script is not None:
            _link_job_script_state(tuple((c.name, c.kind) for c in pod.all_containers), job_dir)
    texts = {name: data.decode() for name, data in files.items()}
    if plan.helper_dir:
        texts.update(helpers_mod.helper_set().texts())
    return texts


def _link_job_script_state(containers: tuple[tuple[str, str], ...], job_dir: Path) -> None:
    """Every spec container shows the job script's state and log (c/<name> -> jobscript); the init
    containers, which the job script replaces, are done (exit 0) so that the pod can run."""
    state = safefs.job_location(job_dir) / "c"
    safefs.make_dirs(state)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    for name, kind in containers:
        target = state / name
        if name == JOB_SCRIPT_CONTAINER or safefs.lstat(target) is not None:
            continue
        if kind == "init":
            for file_name, text in (("started", now), ("finished", now),
                                    ("reason", "Completed replaced by interLink's jobScript"), ("exit", "0")):
                safefs.write_bytes(target / file_name, (text + "\n").encode(), 0o600)
        else:
            safefs.symlink(target, JOB_SCRIPT_CONTAINER)


async def remove_job_dir(record: PodRecord, data_root: Path) -> None:
    """Remove a pod's job dir (a direct child of the data root only) as its owner, never following a
    symlink the job left in it (core/safefs.remove_tree); what cannot be removed is logged."""
    job_dir = Path(record.job_dir)
    if job_dir.parent != data_root:
        return
    left = await safefs.run(safefs.remove_tree, safefs.job_location(job_dir))
    if left:
        log.warning("job dir %s of pod %s/%s not entirely removed: %s", job_dir, record.namespace, record.name,
                    "; ".join(left[:5]))
