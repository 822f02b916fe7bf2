"""Where a pod's per-container state comes from: one RunnerStateSource per record.

Batch backends (SLURM, HTCondor) pick the source of each record: the pod runner's files in a local job
dir (``RunnerFiles``), the Go SLURM plugin's layout of an adopted dir (slurm/migrate.py), the local
mirror of a job dir that lives on a login node (slurm/remote.py), the state an HTCondor job chirps
while its files are spooled (htcondor/runnerstate.py). The choice is made once per record, in the
backend's ``state_source``, from what the plugin recorded (``PodRecord.layout``, the backend's mode,
files the plugin itself brought back), never from files the job could plant; the backends do not
override the per-container methods of ``BySource``. Every read goes
through core/safefs (directory fds, no symlink followed, regular files only, bounded). All of it
blocks: the service calls it from worker threads.
"""

from __future__ import annotations

import stat
import time
from typing import Protocol

from interlink_plugins.core import safefs
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import STATE_FILES, ContainerFiles, parse_container_files

# A directory changed more recently than this is not trusted to have a distinct mtime for its next
# change (file systems with coarse timestamps: NFS, some GPFS setups), so its files are re-read.
SETTLE_NS = 1_000_000_000
# c/<name> may be a symlink to this sibling, made by the plugin for interLink's jobScript (core/podrunner/jobdir.py)
ALIASES = ("jobscript",)
_MISSING = (FileNotFoundError, NotADirectoryError)


class RunnerStateSource(Protocol):
    """A pod's per-container state and logs, as one kind of job dir holds them (the per-record side of
    core.backend's ContainerStateSource and LogSource)."""

    def snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        """Every container's state (a container with no files yet may be left out)."""
        ...

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        """A cheap change token of what snapshot reads; None: read it again."""
        ...

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        """The CRI log of the container's current (or previous) run."""
        ...

    def started(self, record: PodRecord, container: str) -> bool: ...

    def finished(self, record: PodRecord) -> bool:
        """The pod ran to its end by its own account (resolves a job the scheduler forgot)."""
        ...


def _linked(files: safefs.Dir, name: str) -> str:
    """c/<name>, or the sibling it links to when the plugin made it a link (jobScript pods)."""
    try:
        info = files.lstat(name)
    except _MISSING:
        return name
    link = files.link(name) if stat.S_ISLNK(info.st_mode) else None
    return link if link in ALIASES and link is not None else name


class RunnerFiles:
    """What pod-runner.sh writes under <job dir>/c/<container>/ (see docs/internals.md)."""

    def job(self, record: PodRecord) -> safefs.Location:
        """The directory holding the runner's files: the job dir (its parent, the data root, trusted)."""
        return safefs.job_location(record.job_dir)

    def state_dir(self, files: safefs.Dir, name: str) -> str:
        """The directory of c/ that holds container ``name``'s files."""
        return _linked(files, name)

    def _read_container(self, files: safefs.Dir, name: str) -> ContainerFiles:
        try:
            with files.child(self.state_dir(files, name)) as directory:
                found = directory.read_many(STATE_FILES)
        except _MISSING:
            return ContainerFiles()
        except safefs.Refused as exc:
            return ContainerFiles(refused=(f"c/{name} ({exc.kind})",))
        return parse_container_files(found.found, found.refused)

    def snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        names = record.init_names + record.main_names
        try:
            with safefs.open_dir(self.job(record) / "c") as files:
                return {name: self._read_container(files, name) for name in names}
        except _MISSING:
            return {}
        except safefs.Refused as exc:
            return {name: ContainerFiles(refused=(f"c ({exc.kind})",)) for name in names}

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        """A cheap change token for the runner's state files, or None when it cannot be trusted.

        The runner writes every state file by rename and removes them with rm (pod-runner.sh `put`),
        so each change moves the mtime of the container dir (or, for pod.exit, of the job dir): a
        few stat calls tell whether the nine files per container need reading again.
        """
        names = record.init_names + record.main_names
        stamps = [-1] * (2 + len(names))
        try:
            # metadata only (no file is opened): the plugin's own identity, no switch per pod and poll
            with safefs.open_dir(self.job(record), as_owner=False) as job:
                stamps[0] = job.stat().st_mtime_ns
                with job.child("c") as files:
                    stamps[1] = files.stat().st_mtime_ns
                    for index, name in enumerate(names, start=2):
                        try:
                            info = files.lstat(name)
                            if stat.S_ISLNK(info.st_mode):
                                info = files.lstat(self.state_dir(files, name))
                        except _MISSING:
                            continue
                        if stat.S_ISDIR(info.st_mode):
                            stamps[index] = info.st_mtime_ns
        except (*_MISSING, safefs.Refused):
            pass
        if time.time_ns() - max(stamps) < SETTLE_NS:
            return None
        return tuple(stamps)

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        files = self.job(record) / "c"
        try:
            with safefs.open_dir(files) as directory:
                container = self.state_dir(directory, container)
        except (*_MISSING, safefs.Refused):
            pass
        return files / container / ("log.prev" if previous else "log")

    def started(self, record: PodRecord, container: str) -> bool:
        try:
            with safefs.open_dir(self.job(record) / "c") as files, files.child(
                self.state_dir(files, container)
            ) as directory:
                return any(_is_file(directory, name) for name in self.started_by)
        except (*_MISSING, safefs.Refused):
            return False

    started_by: tuple[str, ...] = ("started", "log")  # either file says the container has started

    def finished(self, record: PodRecord) -> bool:
        return safefs.is_file(self.job(record) / "pod.exit")


def _is_file(directory: safefs.Dir, name: str) -> bool:
    try:
        return stat.S_ISREG(directory.lstat(name).st_mode)
    except _MISSING:
        return False


LOCAL = RunnerFiles()


class BySource:
    """The per-container view of a batch backend (core.backend's ContainerStateSource and log_file): each
    record's RunnerStateSource answers. A backend overrides ``state_source`` only."""

    def state_source(self, record: PodRecord) -> RunnerStateSource:
        """The pod runner's files in the job dir, unless the backend knows better for this record."""
        del record
        return LOCAL

    def container_snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        return self.state_source(record).snapshot(record)

    def files_version(self, record: PodRecord) -> tuple[int, ...] | None:
        return self.state_source(record).version(record)

    def log_file(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return self.state_source(record).log(record, container, previous=previous)

    def container_started(self, record: PodRecord, container: str) -> bool:
        return self.state_source(record).started(record, container)

    def runner_finished(self, record: PodRecord) -> bool:
        return self.state_source(record).finished(record)

