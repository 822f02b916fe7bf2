"""What the pod runner script executes: backend-neutral, built by the backend, rendered by runscript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from interlink_plugins.core.volumes.bindcheck import BindSource

RestartPolicy = Literal["Never", "OnFailure", "Always"]
ProbeKind = Literal["startup", "readiness", "liveness"]


@dataclass(frozen=True)
class ProbeRun:
    """One Kubernetes probe, run by the pod runner beside the container (exit 0 of argv = success).

    Kubernetes semantics: the startup probe gates the others; readiness only sets the container's
    ``ready`` file; a failed liveness or startup probe kills the container (preStop, TERM, KILL
    after the grace period) and the restart policy decides what follows.
    """

    kind: ProbeKind
    argv: tuple[str, ...]
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    grace_seconds: int | None = None  # probe-level terminationGracePeriodSeconds (liveness/startup kills)


@dataclass(frozen=True)
class ContainerRun:
    name: str
    kind: Literal["init", "main"]
    argv: tuple[str, ...]
    restart_policy: RestartPolicy
    sidecar: bool = False
    # run (best effort, with a timeout) after the container was killed, e.g. `podman rm -f NAME`
    cleanup_argv: tuple[str, ...] = ()
    # lifecycle hooks, already wrapped by the runtime (exec inside the container's environment)
    post_start_argv: tuple[str, ...] = ()
    pre_stop_argv: tuple[str, ...] = ()
    probes: tuple[ProbeRun, ...] = ()
    # the kubelet's image step before every start (pull/convert), the image as the pod names it, and
    # the waiting reason when it fails (retried with back-off; the container never runs meanwhile)
    image_argv: tuple[str, ...] = ()
    image: str = ""
    image_failure: str = "ErrImagePull"
    # bind sources the runner re-checks right before every start (no symlink below their root)
    binds: tuple[BindSource, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    job_dir: str
    containers: tuple[ContainerRun, ...]
    grace_seconds: int = 30
    backoff_initial_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    # per container run: the CRI log stops just under this size with a marker line (0: no cap)
    log_max_bytes: int = 0
    runner_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # admin-enabled raw shell run inside the job before the containers (pre-exec, mesh, wstunnel)
    prologue: tuple[str, ...] = field(default_factory=tuple)
    # exported into the runner's environment (e.g. POD_IP) - never into containers implicitly
    runner_env: tuple[tuple[str, str], ...] = ()
    # after the prologue, the containers run inside this program: `WRAPPER... bash pod-runner.sh --wrapped`
    # (the interLink mesh script, which sets up a network namespace and then runs its arguments)
    wrapper: tuple[str, ...] = ()
    # the wrapper's script as the pod gave it (written to the job dir as the wrapper's file)
    wrapper_script: str = ""
    # (path as the job sees it, content): the runtimes' private files (env files), mode 0600
    private_files: tuple[tuple[str, bytes], ...] = ()
    # argv run in order after the prologue and before any container (image conversions with registry
    # credentials); never given to a shell parser
    prepare: tuple[tuple[str, ...], ...] = ()
    # private files only the prepare steps may read: removed by the runner right after them
    credential_files: tuple[str, ...] = ()  # removed when the runner ends
    # where the job finds the static helpers (the pod runner's static part, ns-exec.sh, probe.sh, ...):
    # a content-hashed dir of the data root (core/podrunner/helpers.py); "" = the job dir, the runner self-contained
    helper_dir: str = ""

    @property
    def init_containers(self) -> tuple[ContainerRun, ...]:
        return tuple(c for c in self.containers if c.kind == "init")

    @property
    def main_containers(self) -> tuple[ContainerRun, ...]:
        return tuple(c for c in self.containers if c.kind == "main")
