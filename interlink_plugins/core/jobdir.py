"""A pod turned into a job directory and a RunPlan: shared by every batch backend (SLURM, HTCondor)."""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from interlink_plugins.config import Config
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.pod import GPU_RESOURCES, Container, Pod
from interlink_plugins.core.policy import AdminPolicy
from interlink_plugins.core.runner import CommandFailed, run_blocking
from interlink_plugins.core.runplan import ContainerRun, RestartPolicy, RunPlan
from interlink_plugins.core.runscript import render_runner
from interlink_plugins.core.runtimes import NS_EXEC_NAME, Runtime, RuntimeContext, helper_files, runtime_for
from interlink_plugins.core.templating import quote_words
from interlink_plugins.core.volumes import materialise_volumes

IMAGE_ROOT_ANNOTATIONS = ("slurm-job.vk.io/image-root", "htcondor-job.knoc.io/image-root")
PRE_EXEC_ANNOTATIONS = ("slurm-job.vk.io/pre-exec", "job.vk.io/pre-exec")
SINGULARITY_OPTIONS_ANNOTATIONS = (
    "slurm-job.vk.io/singularity-options",
    "htcondor-job.vk.io/singularity-options",
    "job.vk.io/singularity-options",
)


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
    configured = {"apptainer": config.apptainer, "singularity": config.apptainer, "podman": config.podman,
                  "enroot": config.enroot}.get(runtime_name)
    if not configured or configured == (runtime_name,):
        return None
    return configured[0]


def _runtime_options(pod: Pod, policy: AdminPolicy, runtime_name: str) -> tuple[str, ...]:
    if runtime_name not in ("apptainer", "singularity"):
        return ()
    words: list[str] = []
    for key in SINGULARITY_OPTIONS_ANNOTATIONS:
        text = pod.annotations.get(key, "")
        if text.strip():
            for option in policy.singularity_options(text, field=f"metadata.annotations[{key}]"):
                words.append(f"--{option.name}" if option.value is None else f"--{option.name}={option.value}")
    return tuple(words)


def _hook_argv(runtime: Runtime, ctx: RuntimeContext, hook: object, field: str) -> tuple[str, ...]:
    if not isinstance(hook, dict):
        return ()
    exec_spec = hook.get("exec")
    if isinstance(exec_spec, dict) and isinstance(exec_spec.get("command"), list):
        return runtime.exec_argv(ctx, [str(word) for word in exec_spec["command"]])
    if hook:
        raise PodSpecError(field, "only exec lifecycle hooks are supported by this plugin")
    return ()


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


def build_run_plan(pod: Pod, job_dir: Path, config: Config, policy: AdminPolicy, *, write: bool) -> RunPlan:
    """Volumes materialised (when write) and every container turned into argv for the runtime."""
    if write:
        job_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(job_dir, 0o700)
    volume_plan = materialise_volumes(pod, job_dir, allowed_host_paths=policy.allowed_host_paths, write=write)
    runtime_name = config.container_runtime
    if runtime_name == "none":
        _refuse_mounts_without_namespaces(pod)
    runtime = runtime_for(runtime_name)
    image_root = next((pod.annotations[k] for k in IMAGE_ROOT_ANNOTATIONS if pod.annotations.get(k)), "")
    options = _runtime_options(pod, policy, runtime_name)
    runs: list[ContainerRun] = []
    prepare_steps: list[tuple[str, ...]] = []
    for index, container in enumerate(pod.all_containers):
        position = index if container.kind == "init" else index - len(pod.init_containers)
        gpus = sum(container.resources.extended.get(kind, 0) for kind in GPU_RESOURCES)
        ctx = RuntimeContext(
            container=container,
            mounts=tuple(volume_plan.mounts.get(container.name, ())),
            env=container.env,
            job_dir=str(job_dir),
            pod_uid=pod.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            instance=config.instance_id,
            image_prefix=image_root or config.image_prefix,
            pull_policy_override=config.pull_policy or None,
            gpus=gpus,
            extra_options=options,
            binary=_runtime_binary(config, runtime_name),
            container_index=position,
        )
        argv = runtime.argv(ctx)
        prepare_steps.extend(argv.prepare_argvs)
        lifecycle = container.lifecycle
        path = f"{container.field_path}[{position}]"
        runs.append(
            ContainerRun(
                name=container.name,
                kind=container.kind,
                argv=argv.argv,
                restart_policy=_restart_policy(pod, container),
                sidecar=container.is_sidecar,
                cleanup_argv=argv.cleanup_argv,
                post_start_argv=_hook_argv(runtime, ctx, lifecycle.get("postStart"), f"{path}.lifecycle.postStart"),
                pre_stop_argv=_hook_argv(runtime, ctx, lifecycle.get("preStop"), f"{path}.lifecycle.preStop"),
            )
        )
    prologue: list[str] = []
    for key in PRE_EXEC_ANNOTATIONS:
        text = pod.annotations.get(key, "")
        if text.strip():
            policy.check_raw_shell(f"metadata.annotations[{key}]")
            prologue.append(text)
    prologue.extend(quote_words(step) for step in prepare_steps)
    runner_env = dict(config.job_environment)
    pod_ip = pod.annotations.get("interlink.eu/pod-ip", "")
    if pod_ip:
        runner_env["POD_IP"] = pod_ip
    return RunPlan(
        job_dir=str(job_dir),
        containers=tuple(runs),
        grace_seconds=int(min(pod.termination_grace_seconds, config.grace_period_cap)),
        backoff_initial_seconds=config.restart_backoff_initial,
        backoff_max_seconds=config.restart_backoff_max,
        runner_path=config.job_path,
        prologue=tuple(prologue),
        runner_env=tuple(sorted(runner_env.items())),
    )


def pod_metadata(pod: Pod) -> dict[str, object]:
    """pod.json: what recovery from the scheduler alone needs to report the pod again."""
    return {
        "uid": pod.uid,
        "namespace": pod.namespace,
        "name": pod.name,
        "init_names": [c.name for c in pod.init_containers],
        "main_names": [c.name for c in pod.containers],
        "images": {c.name: c.image for c in pod.all_containers},
        "sidecars": [c.name for c in pod.init_containers if c.is_sidecar],
        "grace_seconds": pod.termination_grace_seconds,
    }


def write_job_files(pod: Pod, job_dir: Path, plan: RunPlan, config: Config, *, write: bool) -> dict[str, str]:
    """pod-runner.sh, ns-exec.sh and pod.json; returns their text (for `render`)."""
    del config
    files = {
        "pod-runner.sh": render_runner(plan),
        **helper_files(),
        "pod.json": json.dumps(pod_metadata(pod), indent=1) + "\n",
    }
    if write:
        for name, text in files.items():
            target = job_dir / name
            tmp = target.with_name(f".{name}.tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o700 if name.endswith((".sh", ".rc")) else 0o600)
            os.replace(tmp, target)
    return files
