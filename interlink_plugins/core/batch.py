"""BatchBackend: what every batch scheduler's backend shares (SLURM, HTCondor).

A batch backend turns a pod into a job dir below DataRootFolder, whose pod runner the scheduler starts.
The base owns:

* the job dir: its name (``job_dir``), its planning and writing (``prepare``, through core/podrunner/jobdir.py),
  the hand-over to the job's user (``JobOwner``) and its removal (``cleanup``);
* the per-container view (``BySource``): each record's RunnerStateSource, chosen once per record in
  ``state_source`` from what the plugin recorded;
* the command wrapper (``run_command``): a command that cannot run, or says the scheduler is
  unreachable, is BackendUnavailable.

A backend supplies ``draft`` (validate the pod, before any file is written), ``submission`` (what to
submit, once the files are written), the Scheduler calls (submit, find_job, query, query_finished,
cancel, adopt, resources) and, where it has one, ``run_dir``, ``job_owner``, ``forget``, ``unreachable``.
"""

from __future__ import annotations

import pwd
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from interlink_plugins.core import safefs
from interlink_plugins.core.backend import BackendDefaults, PreparedJob
from interlink_plugins.core.commands.local import CommandFailed, CommandResult, CommandRunner
from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.model.names import job_dir_name
from interlink_plugins.core.podrunner.jobdir import build_run_plan, remove_job_dir, write_job_files
from interlink_plugins.core.podrunner.plan import RunPlan
from interlink_plugins.core.podrunner.statefiles import BySource

if TYPE_CHECKING:
    from interlink_plugins.config import Config
    from interlink_plugins.core.model.pod import Pod
    from interlink_plugins.core.policy.engine import AdminPolicy
    from interlink_plugins.core.records.state import PodRecord

DraftT = TypeVar("DraftT")


@dataclass(frozen=True)
class JobOwner:
    """The user a job runs as when that is not the plugin's: its job dir is handed over to it."""

    uid: int
    gid: int
    mode: int | None = None  # the job dir's mode after the hand-over (None: as written, 0700)


def primary_gid(uid: int) -> int | None:
    """The primary group of a local user; None when the uid has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def hand_over(job_dir: Path, owner: JobOwner) -> None:
    """The job's user owns its job dir (every file in it, no symlink followed; through safefs)."""
    location = safefs.job_location(job_dir)
    safefs.chown_tree(location, owner.uid, owner.gid)
    if owner.mode is not None:
        safefs.chmod(location, owner.mode)


class BatchBackend(BySource, BackendDefaults, ABC, Generic[DraftT]):
    """A pod as one batch job running the shared pod runner in a job dir below DataRootFolder.

    ``DraftT`` is what ``draft`` makes of a pod before any file is written (SLURM: its sbatch options;
    HTCondor: where its job dir is on both sides), handed to ``job_owner`` and ``submission``.
    """

    name: str  # set by each backend class

    def __init__(self, config: Config, runner: CommandRunner, policy: AdminPolicy) -> None:
        self.config = config
        self.runner = runner
        self.policy = policy

    # --- the job dir -------------------------------------------------------------------

    def job_dir(self, namespace: str, uid: str) -> Path:
        """The pod's job dir on the plugin's host (core/model/names.py: never from a name the pod chose alone)."""
        return self.config.data_root / job_dir_name(namespace, uid)

    def prepare(self, pod: Pod, *, write: bool = True) -> PreparedJob:
        """Validate (``draft``), plan and write the job dir, hand it over, describe the submission."""
        job_dir = self.job_dir(pod.namespace, pod.uid)
        draft = self.draft(pod, job_dir)
        plan, files = self.write_job_dir(pod, job_dir, self.run_dir(draft, job_dir), write=write)
        submit = self.submission(pod, draft, job_dir, plan, files, write=write)
        owner = self.job_owner(draft)
        if write and owner is not None:
            hand_over(job_dir, owner)
        return PreparedJob(job_dir=job_dir, submit=submit, files=files)

    def write_job_dir(
        self, pod: Pod, job_dir: Path, run_dir: Path, *, write: bool
    ) -> tuple[RunPlan, dict[str, str]]:
        """The job dir planned and written (volumes, pod runner, helpers, per-container files) at
        ``job_dir``; its scripts name ``run_dir``, where the job sees it. Returns the plan and the
        rendered files (secrets masked)."""
        plan = build_run_plan(pod, job_dir, self.config, self.policy, write=write)
        if run_dir != job_dir:
            plan = build_run_plan(pod, run_dir, self.config, self.policy, write=False)
        return plan, dict(write_job_files(pod, job_dir, plan, self.config, write=write))

    @abstractmethod
    def draft(self, pod: Pod, job_dir: Path) -> DraftT:
        """Validate the pod for this scheduler (PodSpecError, PolicyViolation) before any file is written."""

    @abstractmethod
    def submission(
        self, pod: Pod, draft: DraftT, job_dir: Path, plan: RunPlan, files: dict[str, str], *, write: bool
    ) -> Mapping[str, Any]:
        """The submit payload (JSON-able, stored with the record); may add files of its own to ``files``."""

    def run_dir(self, draft: DraftT, job_dir: Path) -> Path:
        """Where the job sees its job dir (default: the same path, a shared file system)."""
        del draft
        return job_dir

    def job_owner(self, draft: DraftT) -> JobOwner | None:
        """The user the job dir is handed over to (default: none, the job runs as the plugin's user)."""
        del draft
        return None

    async def cleanup(self, record: PodRecord) -> None:
        """The job dir removed (through safefs, below DataRootFolder only), then ``forget``."""
        await remove_job_dir(record, self.config.data_root)
        await self.forget(record)

    async def forget(self, record: PodRecord) -> None:
        """What the backend keeps about a pod whose job dir is gone (default: nothing)."""
        del record

    # --- commands ----------------------------------------------------------------------

    async def run_command(
        self, argv: Sequence[str], what: str, *, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        """Run a scheduler command (a timeout always: CommandTimeout by default). A command that cannot
        run, times out, or says the scheduler is unreachable is BackendUnavailable; any other failure
        is the caller's to read (``result.ok``)."""
        label = f"{argv[0]} ({what})" if argv else f"({what})"
        seconds = self.config.command_timeout if timeout is None else timeout
        try:
            if env is None:
                result = await self.runner.run(argv, timeout=seconds)
            else:
                result = await self.runner.run(argv, timeout=seconds, env=env)
        except CommandFailed as exc:
            raise BackendUnavailable(self.name, label, exc.detail) from exc
        if not result.ok and self.unreachable(result.error_text):
            raise BackendUnavailable(self.name, label, result.error_text)
        return result

    def unreachable(self, error_text: str) -> bool:
        """The command's error says the scheduler cannot be reached (default: no error does)."""
        del error_text
        return False

