"""BatchBackend: what every batch scheduler's backend shares (SLURM, HTCondor).

A batch backend turns a pod into a job dir below DataRootFolder, whose pod runner the scheduler starts.
The base owns:

* the job dir: its name (``job_dir``), its plan, made once per prepare (``plan``, through
  core/podrunner/jobdir.py), its writing (``write``: the local writer), the hand-over to the job's
  user (``JobOwner``) and its removal (``cleanup``);
* the per-container view (``BySource``): each record's RunnerStateSource, chosen once per record in
  ``state_source`` from what the plugin recorded;
* the command wrapper (``run_command``): a command that cannot run, or says the scheduler is
  unreachable, is BackendUnavailable.

A backend supplies ``draft`` (validate the pod, before any file is written), ``submission`` (what to
submit, from the plan, before any file is written), the Scheduler calls (submit, find_job, query,
query_finished, cancel, adopt, resources) and, where it has one, ``run_dir``, ``helper_dir``, ``write``
(e.g. an SFTP stage), ``job_owner``, ``forget``, ``unreachable``.
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
from interlink_plugins.core.podrunner.jobdir import JobPlan, plan_job, remove_job_dir, write_local
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
        """Validate (``draft``), plan the job dir once (``plan``), describe the submission from the plan
        (a refused pod writes nothing), write the plan (``write``), hand the job dir over."""
        job_dir = self.job_dir(pod.namespace, pod.uid)
        draft = self.draft(pod, job_dir)
        job_plan = self.plan(pod, draft, job_dir)
        files = job_plan.texts()
        submit = self.submission(pod, draft, job_dir, job_plan, files, write=write)
        if write:
            submit = self.write(job_plan, job_dir, submit)
            owner = self.job_owner(draft)
            if owner is not None:
                hand_over(job_dir, owner)
        return PreparedJob(job_dir=job_dir, submit=submit, files=files)

    def plan(self, pod: Pod, draft: DraftT, job_dir: Path) -> JobPlan:
        """The job dir planned once, for the path the job sees it at (``run_dir``); pure."""
        return plan_job(pod, self.run_dir(draft, job_dir), self.config, self.policy,
                        helper_dir=self.helper_dir(draft), mpi_launcher=self.mpi_launcher())

    def mpi_launcher(self) -> tuple[str, ...]:
        """The launcher of pods that ask for MPI (a backend whose policy section declares the MPI keys)."""
        return ()

    def write(self, job_plan: JobPlan, job_dir: Path, submit: Mapping[str, Any]) -> Mapping[str, Any]:
        """The local writer (core/podrunner/jobdir.py: write_local) into ``job_dir``; returns the submit
        payload (a writer that stages the job dir elsewhere says where)."""
        write_local(job_plan, job_dir)
        return submit

    @abstractmethod
    def draft(self, pod: Pod, job_dir: Path) -> DraftT:
        """Validate the pod for this scheduler (PodSpecError, PolicyViolation) before any file is written."""

    @abstractmethod
    def submission(
        self, pod: Pod, draft: DraftT, job_dir: Path, job_plan: JobPlan, files: dict[str, str], *, write: bool
    ) -> Mapping[str, Any]:
        """The submit payload from the plan (JSON-able, stored with the record), before anything is
        written; may add files it shows to ``files`` (what it writes belongs in the plan)."""

    def helper_dir(self, draft: DraftT) -> str | None:
        """Where the job finds the static helpers: "" (default) the data root's content-hashed copy,
        None inline in the job dir (a job that sees none of the data root)."""
        del draft
        return ""

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

