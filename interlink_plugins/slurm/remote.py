"""SLURM on a login node reached over SSH, with a data root the plugin host cannot see (DataTransfer: sftp).

Everything the SLURM backend does stays (sbatch argv, squeue/sacct parsing, states); what touches
the job directory goes through ``RemoteJobFiles`` instead of the local filesystem:

* prepare (at /create) plans the job dir once and writes it into a local stage, naming the cluster path; no network;
* submit uploads the stage over SFTP, then runs sbatch: an unreachable node defers the pod
  (BackendUnavailable) and the stage waits on local disk for the next try;
* each poll mirrors every tracked pod's runner state with one remote command (``prefetch_files``), a
  NUL-safe archive of regular files only (core/commands/remotefiles.py); the mirror is the records' state source;
* logs are fetched into local copies (``fetch_log``), a Follow streams ``tail -F`` (``open_log_feed``);
* cleanup removes the remote job dir with one ``rm -rf``.

With DataTransfer: shared (the default) the plain SlurmBackend is used with the SSH runner: the
data root is the same path on both hosts, so files are written and read directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.batch import JobOwner
from interlink_plugins.core.commands.local import CommandFailed, CommandRunner
from interlink_plugins.core.commands.remotefiles import LogFeed, RemoteJobFiles
from interlink_plugins.core.commands.ssh import SshRunner
from interlink_plugins.core.errors import BackendUnavailable, LogRequestError
from interlink_plugins.core.podrunner import helpers
from interlink_plugins.core.podrunner.jobdir import JOB_SCRIPT_CONTAINER, JobPlan, write_stage
from interlink_plugins.core.podrunner.statefiles import RunnerFiles, RunnerStateSource
from interlink_plugins.core.policy.engine import AdminPolicy, ParsedOption
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.slurm.backend import SlurmBackend

log = logging.getLogger(__name__)


class RemoteSlurmBackend(SlurmBackend):
    remote_logs = True  # logs fetched (fetch_log) and followed (open_log_feed) from the login node

    def __init__(self, config: Config, runner: CommandRunner, policy: AdminPolicy, ssh: SshRunner) -> None:
        super().__init__(config, runner, policy)
        self.ssh = ssh
        self.files = RemoteJobFiles(
            ssh, str(config.data_root), config.state_dir / f"remote-{config.instance_id}",
            timeout=config.command_timeout,
        )  # fmt: skip
        self._mirror = MirrorFiles(self.files)

    def _unavailable(self, what: str, exc: CommandFailed) -> BackendUnavailable:
        return BackendUnavailable("slurm", f"{what} on {self.ssh.label}", exc.detail)

    # --- writing -----------------------------------------------------------------------

    def write(self, job_plan: JobPlan, job_dir: Path, submit: Mapping[str, Any]) -> Mapping[str, Any]:
        """The SFTP stage writer: the planned job dir built in a local stage, uploaded at submit (the
        job dir on the login node belongs to the SSH user: no hand-over)."""
        stage = self.files.new_stage(str(job_dir))
        write_stage(job_plan, stage)
        return {**submit, "stage": str(stage)}

    def job_owner(self, draft: list[ParsedOption]) -> JobOwner | None:
        del draft
        return None

    def job_dir_owners(self, job_dirs: Sequence[str]) -> dict[str, int | None] | None:
        """Not seen from here; every job runs as the SSH user, so no other uid can claim a pod's job."""
        del job_dirs
        return None

    async def submit(self, record: PodRecord) -> str:
        stage = Path(str(record.submit.get("stage", "")))
        if record.submit.get("stage") and stage.is_dir():
            try:
                await self.files.ensure_helpers(helpers.helper_set())
            except CommandFailed as exc:
                raise self._unavailable("sftp staging of the runtime helpers", exc) from exc
            except OSError as exc:
                raise BackendUnavailable("slurm", f"sftp staging of the runtime helpers on {self.ssh.label}",
                                         exc.strerror or str(exc)) from exc
            try:
                await self.files.upload(stage, record.job_dir)
            except CommandFailed as exc:
                raise self._unavailable(f"sftp upload of {record.job_dir}", exc) from exc
            except OSError as exc:
                raise BackendUnavailable("slurm", f"sftp upload of {record.job_dir} on {self.ssh.label}",
                                         exc.strerror or str(exc)) from exc
        job_id = await super().submit(record)
        if record.submit.get("stage"):
            await asyncio.to_thread(self.files.discard_stage, stage)
        return job_id

    async def cleanup(self, record: PodRecord) -> None:
        try:
            await self.files.remove(record.job_dir)
        except CommandFailed as exc:
            raise self._unavailable(f"rm -rf {record.job_dir}", exc) from exc

    def output_tail(self, job_dir: str) -> bytes:
        return b""  # the job's output stays on the cluster (not mirrored): memory kills by cgroup only

    # --- runner state: mirrored once per poll ----------------------------------------------

    async def prefetch_files(self, records: list[PodRecord]) -> None:
        """Service hook, once per poll before the statuses are built."""
        try:
            await self.files.refresh([r.job_dir for r in records if r.job_id])
        except CommandFailed as exc:
            raise self._unavailable("runner state (grep)", exc) from exc

    def state_source(self, record: PodRecord) -> RunnerStateSource:
        return self._mirror

    # --- logs ----------------------------------------------------------------------------

    async def fetch_log(self, record: PodRecord, container: str, *, previous: bool) -> None:
        """Service hook before a log read: the local copy brought up to date (503 when unreachable)."""
        try:
            await self.files.fetch_log(record.job_dir, container, previous=previous)
        except safefs.Refused as exc:
            raise _refused(container, exc) from None
        except CommandFailed as exc:
            raise self._unavailable(f"sftp get of {container}'s log", exc) from exc
        except OSError as exc:
            raise BackendUnavailable("slurm", f"sftp get of {container}'s log on {self.ssh.label}",
                                     exc.strerror or str(exc)) from exc

    async def open_log_feed(self, record: PodRecord, container: str) -> LogFeed:
        """Service hook for a Follow: ``tail -F`` of the remote log into a private local file."""
        try:
            return await self.files.open_feed(record.job_dir, container)
        except safefs.Refused as exc:
            raise _refused(container, exc) from None
        except CommandFailed as exc:
            raise self._unavailable(f"tail -F of {container}'s log", exc) from exc


def _refused(container: str, exc: safefs.Refused) -> LogRequestError:
    return LogRequestError(f"the log of container {container} is {exc.kind} in the job dir, not a regular file: "
                           "refused")


class MirrorFiles(RunnerFiles):
    """The RunnerStateSource of a job dir on the login node: the runner's files as the last dump
    mirrored them (rewritten by every poll: always read), logs from their local copies."""

    started_by = ("started",)  # the dump brings state files, not logs

    def __init__(self, files: RemoteJobFiles) -> None:
        self.files = files

    def job(self, record: PodRecord) -> safefs.Location:
        return self.files.mirror_dir(record.job_dir)

    def state_dir(self, files: safefs.Dir, name: str) -> str:
        # the dump follows no link: a jobScript pod's containers (links to c/jobscript) show jobscript's state
        names = files.names()
        return JOB_SCRIPT_CONTAINER if name not in names and JOB_SCRIPT_CONTAINER in names else name

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        return None

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return self.files.log_copy(record.job_dir, container, previous=previous)
