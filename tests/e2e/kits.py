"""Per-backend test kits: the shared fault and injection suites are written once against this.

A kit knows how to start a plugin for its backend, how to stop and restart the REAL backend
daemon, how to count the backend jobs of a pod, and how to keep a pod pending.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
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


class PodmanKit:
    """Podman backend. The "backend daemon" the outage tests stop is a REAL podman REST service
    (`podman system service`, started by this kit on its own socket) that the plugin reaches through
    `podman --remote` (PodmanPath). Stopping it leaves the pods running, as stopping slurmctld leaves
    jobs running. With ``remote=False`` the plugin runs the podman CLI directly (no service)."""

    name = "podman"

    def __init__(self, workdir: Path, *, remote: bool = True) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.remote = remote
        self.socket = workdir / "podman.sock"
        self._service: subprocess.Popen[bytes] | None = None
        self._plugins: list[PluginProcess] = []
        # unique per kit: a plugin left over from another run must never take this run's jobs for its own
        self._run = uuid.uuid4().hex[:8]
        self._started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
        if remote:
            self.start_backend()

    @property
    def podman_path(self) -> str:
        return f"podman --remote --url unix://{self.socket}" if self.remote else "podman"

    def plugin(self, runtime: str | None = None, **config: Any) -> PluginProcess:
        if runtime == "none":
            import pytest

            pytest.skip("the podman backend always runs containers with podman (runtime 'none' is SLURM's)")
        workdir = self.workdir / f"plugin{len(self._plugins)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir,
            {"Backend": "podman", "InstanceId": f"k{len(self._plugins)}-{self._run}",
             "PodmanPath": self.podman_path, "LogFormat": "text", **config},
        )
        self._plugins.append(process)
        return process.start()

    def stop_backend(self) -> None:
        assert self._service is not None, "the podman service is not running"
        self._service.terminate()
        self._service.wait(timeout=30)
        self._service = None
        self.socket.unlink(missing_ok=True)

    def start_backend(self) -> None:
        log = (self.workdir / "podman-service.log").open("ab")
        self._service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(["podman", "--remote", "--url", f"unix://{self.socket}", "version"],
                                   capture_output=True, timeout=10)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError("the podman service did not answer")

    def jobs_for(self, plugin: PluginProcess, uid: str) -> list[str]:
        """Every podman pod ever created for the pod (podman's event log keeps removed ones too)."""
        name = f"il-{plugin.config['InstanceId']}-{uid}"
        out = subprocess.run(
            ["podman", "events", "--stream=false", "--since", self._started, "--filter", "type=pod",
             "--filter", "event=create", "--format", "json"], capture_output=True, text=True, timeout=30,
        ).stdout
        import json

        return sorted({event["ID"] for event in map(json.loads, out.splitlines()) if event.get("Name") == name})

    def pending_annotations(self) -> dict[str, str]:
        return {}  # podman has no queue: nothing keeps a pod pending (see test_faults.py)

    def job_alive(self, job_id: str) -> bool:
        """The pod exists and one of its containers (not the infra container) runs."""
        out = subprocess.run(["podman", "ps", "--filter", f"pod={job_id}", "--format", "{{.IsInfra}}"],
                             capture_output=True, text=True, timeout=30).stdout
        return "false" in out.split()

    def close(self) -> None:
        for process in self._plugins:
            process.stop()
        for process in self._plugins:
            instance = process.config["InstanceId"]
            pods = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label=interlink.eu/instance={instance}"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
            if pods:
                subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", *pods], capture_output=True, timeout=120)
            # the env secrets of its pods (the plugin removes them on delete; these pods went around it)
            names = subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True,
                                   text=True, timeout=30).stdout.split()
            mine = [n for n in names if n.startswith(f"il-{instance}-")]
            if mine:
                subprocess.run(["podman", "secret", "rm", "--", *mine], capture_output=True, timeout=60)
        if self._service is not None:
            self.stop_backend()


class HTCondorKit:
    """HTCondor backend on the personal pool (htcondor_pool). The daemon the outage tests stop is the
    schedd (condor_off): jobs keep running on the startd and reconnect when it is back, as on a site.
    Jobs run as uid 2001 (CLAIMTOBE condortest), so the test's tmp dirs are made traversable."""

    name = "htcondor"

    def __init__(self, workdir: Path, pool: dict[str, str], *, data_mode: str = "shared") -> None:
        self.workdir = workdir
        self.pool = pool
        self.data_mode = data_mode
        self.container = pool["name"]
        self._plugins: list[PluginProcess] = []
        # unique per kit: a plugin left over from another run must never take this run's jobs for its own
        self._run = uuid.uuid4().hex[:8]
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir
        while str(path).startswith("/tmp/") and path != Path("/tmp"):
            path.chmod((path.stat().st_mode & 0o7777) | 0o711)  # traverse only: the jobs' uid reaches its job dirs
            path = path.parent

    def base_config(self) -> dict[str, Any]:
        return {
            "Backend": "htcondor", "HTCondorCollector": self.pool["collector"], "HTCondorAuth": ["CLAIMTOBE"],
            "HTCondorParams": {"SEC_CLAIMTOBE_USER": "condortest", "FILESYSTEM_DOMAIN": "il-pool",
                               "UID_DOMAIN": "il-pool"},
            "HTCondorJobUser": "2001", "HTCondorDataMode": self.data_mode, "HeldTimeout": 8, "LogFormat": "text",
            "HTCondorTailCommand": f"podman exec -u condortest {self.container} condor_tail",
        }

    def plugin(self, runtime: str | None = None, **config: Any) -> PluginProcess:
        if runtime == "podman":
            import pytest

            pytest.skip("runtime podman on the HTCondor pool needs the images loaded into its jobs' store "
                        "(htcondor/htcondor-images.sh, as tests/e2e/test_kubelet_parity.py does); this kit does not")
        workdir = self.workdir / f"plugin{len(self._plugins)}"
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o711)
        settings = {**self.base_config(), "ContainerRuntime": runtime or "none",
                    "InstanceId": f"h{len(self._plugins)}-{self._run}", **config}
        if self.data_mode == "spool" and "DataRootFolder" not in config:
            # a data root the pool cannot see: /var/tmp is not shared with the pool container
            settings["DataRootFolder"] = f"/var/tmp/il-htcondor-spool/{self.workdir.name}-{len(self._plugins)}"
        process = PluginProcess(workdir, settings, env={"CONDOR_CONFIG": "/dev/null"})
        self._plugins.append(process)
        return process.start()

    def condor(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """An HTCondor tool inside the pool container (as root: sees every user's jobs)."""
        return subprocess.run(["podman", "exec", self.container, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def stop_backend(self) -> None:
        self.condor("condor_off", "-fast", "-daemon", "schedd")  # -fast: jobs keep running, reconnect later
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.condor("condor_q", "-all", "-af", "ClusterId", timeout=20).returncode != 0:
                return
            time.sleep(0.3)
        raise AssertionError("the schedd did not stop")

    def start_backend(self) -> None:
        self.condor("condor_on", "-daemon", "schedd")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.condor("condor_q", "-all", "-af", "ClusterId", timeout=20).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError("the schedd did not come back")

    def jobs_for(self, plugin: PluginProcess, uid: str) -> list[str]:
        """Every job ever submitted for the pod, in the queue or in the history."""
        constraint = f'InterLinkPodUID == "{uid}" && InterLinkInstance == "{plugin.config["InstanceId"]}"'
        jobs: set[str] = set()
        for tool in (["condor_q", "-all"], ["condor_history"]):
            out = self.condor(*tool, "-constraint", constraint, "-af", "ClusterId", "ProcId").stdout
            jobs |= {".".join(line.split()) for line in out.splitlines() if line.strip()}
        return sorted(jobs)

    def pending_annotations(self) -> dict[str, str]:
        return {"htcondor-job.vk.io/submit-commands": "requirements = false"}

    def job_alive(self, job_id: str) -> bool:
        out = self.condor("condor_q", "-all", job_id, "-af", "JobStatus").stdout.split()
        return bool(out) and out[0] in ("1", "2", "5", "6", "7")

    def close(self) -> None:
        for process in self._plugins:
            process.stop()
        for process in self._plugins:
            instance = process.config["InstanceId"]
            self.condor("condor_rm", "-constraint", f'InterLinkInstance == "{instance}"')


KIT_NAMES = ("slurm", "podman", "htcondor")


def open_kit(request: Any, tmp_path: Path, name: str, *, podman_remote: bool = True) -> Iterator[BackendKit]:
    """The kit of one backend for the shared suites (fault, injection), with its real daemon started."""
    if name == "slurm":
        factory: Callable[..., PluginProcess] = request.getfixturevalue("plugin_factory")
        yield SlurmKit(factory, request.getfixturevalue("slurm_cluster")["state"])
    elif name == "podman":
        request.getfixturevalue("podman_ready")
        podman_kit = PodmanKit(tmp_path / "podman-kit", remote=podman_remote)
        yield podman_kit
        podman_kit.close()
    elif name == "htcondor":
        htcondor_kit = HTCondorKit(tmp_path / "htcondor-kit", request.getfixturevalue("htcondor_pool"))
        yield htcondor_kit
        htcondor_kit.close()
