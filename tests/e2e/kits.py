"""Per-backend test kits: the shared fault and injection suites are written once against this.

A kit knows how to start a plugin for its backend, how to stop and restart the REAL backend
daemon, how to count the backend jobs of a pod, and how to keep a pod pending.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tests.harness import PluginProcess


class BackendKit(Protocol):
    name: str

    def plugin(self, **config: Any) -> PluginProcess: ...
    def stop_backend(self) -> None: ...
    def start_backend(self) -> None: ...
    def jobs_for(self, plugin: PluginProcess, uid: str) -> list[str]: ...
    def pending_annotations(self) -> dict[str, str]: ...
    def job_alive(self, job_id: str) -> bool: ...


class SlurmKit:
    name = "slurm"

    def __init__(self, factory: Callable[..., PluginProcess], state_dir: str) -> None:
        self._factory = factory
        self._state = Path(state_dir)

    def plugin(self, **config: Any) -> PluginProcess:
        return self._factory(**config)

    def _ctld_pid(self) -> int | None:
        pid_file = self._state / "run" / "slurmctld.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_backend(self) -> None:
        pid = self._ctld_pid()
        assert pid, "slurmctld is not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError("slurmctld did not stop")

    def start_backend(self) -> None:
        subprocess.run(["slurmctld"], check=True, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
            if result.returncode == 0 and result.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.3)
        raise AssertionError("slurmctld did not come back")

    def jobs_for(self, plugin: PluginProcess, uid: str) -> list[str]:
        """Every job ever submitted for the pod: in slurmctld (by comment) or in jobcomp (by WorkDir)."""
        comment = f"il:{uid}@{plugin.config['InstanceId']}"
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k"], capture_output=True, text=True, timeout=10).stdout
        jobs = {line.split("|")[0] for line in out.splitlines() if line.split("|", 1)[1] == comment}
        job_dir = str(Path(plugin.config["DataRootFolder"]) / f"default-{uid}")
        done = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "JobID,WorkDir"], capture_output=True, text=True,
                              timeout=10).stdout
        jobs |= {line.split("|")[0] for line in done.splitlines() if line.split("|")[-1].rstrip("/") == job_dir}
        return sorted(jobs)

    def pending_annotations(self) -> dict[str, str]:
        return {"slurm-job.vk.io/flags": "--begin=now+3600"}

    def job_alive(self, job_id: str) -> bool:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
        return out.strip() in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
