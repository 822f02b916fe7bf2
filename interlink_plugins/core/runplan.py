"""What the pod runner script executes: backend-neutral, built by the backend, rendered by runscript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RestartPolicy = Literal["Never", "OnFailure", "Always"]


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


@dataclass(frozen=True)
class RunPlan:
    job_dir: str
    containers: tuple[ContainerRun, ...]
    grace_seconds: int = 30
    backoff_initial_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    runner_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # admin-enabled raw shell run inside the job before the containers (pre-exec, mesh, wstunnel)
    prologue: tuple[str, ...] = field(default_factory=tuple)
    # exported into the runner's environment (e.g. POD_IP) - never into containers implicitly
    runner_env: tuple[tuple[str, str], ...] = ()

    @property
    def init_containers(self) -> tuple[ContainerRun, ...]:
        return tuple(c for c in self.containers if c.kind == "init")

    @property
    def main_containers(self) -> tuple[ContainerRun, ...]:
        return tuple(c for c in self.containers if c.kind == "main")
