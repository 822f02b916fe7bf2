"""Where an HTCondor pod's per-container state comes from: one RunnerStateSource per record.

The backend picks it once per record (``HTCondorBackend.state_source``) from its data mode and what the
plugin itself brought back (a spooled job's files are here once Schedd.retrieve ran; the wrapper always
leaves pod.exit):

* shared mode: the pod runner's files in the job dir (``CondorFiles``);
* spool mode, files retrieved: the same files, never trusted for a change token (``CondorFiles``, spooled);
* spool mode, still running: what the job chirps into its job ad (``ChirpedState``) and live copies of
  its logs (condor_tail, htcondor/livelogs.py).

Every source shows a held job's last run as ended (the job is not running), and settles a job from the
runner's own account only once the schedd's queue forgot it a while ago (the history is the authority).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from interlink_plugins.core import safefs
from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.podrunner.statefiles import LOCAL
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import ContainerFiles
from interlink_plugins.htcondor import livelogs

FORGOTTEN_AFTER = 60.0  # seconds a job has left the queue before the runner's pod.exit settles it


class CondorFiles:
    """The pod runner's files in the local job dir (shared mode, or a spooled job's once retrieved)."""

    def __init__(self, jobs: Mapping[str, JobInfo], last_seen: Mapping[str, float], *, spooled: bool) -> None:
        self._jobs = jobs  # the backend's last answer of query()/query_finished(), by job id
        self._last_seen = last_seen  # job id -> when query() last saw it in the queue (monotonic)
        self._spooled = spooled

    def snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        return held_view_of(LOCAL.snapshot(record), self._jobs.get(record.job_id))

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        # a spooled job's files come back all at once (retrieve): read them at every poll
        return None if self._spooled else LOCAL.version(record)

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return spooled_log(record, container, previous) if self._spooled else LOCAL.log(
            record, container, previous=previous
        )

    def started(self, record: PodRecord, container: str) -> bool:
        return LOCAL.started(record, container)

    def finished(self, record: PodRecord) -> bool:
        # the schedd's history is the authority: the runner's own account only settles a job that left
        # the queue a while ago and that the history does not know (history off or rotated)
        seen = self._last_seen.get(record.job_id)
        return LOCAL.finished(record) and (seen is None or time.monotonic() - seen > FORGOTTEN_AFTER)


class ChirpedState:
    """A spooled job whose files are not retrieved yet: what it chirps into its job ad
    (InterLinkContainers), and live copies of its logs (condor_tail)."""

    def __init__(self, chirped: Mapping[str, Mapping[str, list[str]]], jobs: Mapping[str, JobInfo]) -> None:
        self._chirped = chirped
        self._jobs = jobs

    def snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        chirped = self._chirped.get(record.job_id, {})
        files = {name: from_chirp(chirped[name]) for name in record.init_names + record.main_names
                 if name in chirped}
        return held_view_of(files, self._jobs.get(record.job_id))

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        return None

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        return spooled_log(record, container, previous)

    def started(self, record: PodRecord, container: str) -> bool:
        fields = self._chirped.get(record.job_id, {}).get(container)
        return bool(fields and fields[0])

    def finished(self, record: PodRecord) -> bool:
        return False  # its pod.exit comes back with the retrieve


def spooled_log(record: PodRecord, container: str, previous: bool) -> safefs.Location:
    """A spooled job's log: the retrieved one when it is here, else the live copy."""
    local = LOCAL.log(record, container, previous=previous)
    return local if safefs.lstat(local) is not None else live_copy(record, container, previous)


def live_copy(record: PodRecord, container: str, previous: bool) -> safefs.Location:
    return safefs.job_location(record.job_dir) / ".live" / container / ("log.prev" if previous else "log")


def sync_live_copies(job_dir: safefs.Location) -> None:
    """After retrieve: live copies get the lines written after the last tail (followers see them)."""
    for container in safefs.names(job_dir / ".live"):
        copy = job_dir / ".live" / container / "log"
        if safefs.is_file(copy):
            livelogs.catch_up(copy, job_dir / "c" / container / "log")


def held_view_of(files: dict[str, ContainerFiles], job: JobInfo | None) -> dict[str, ContainerFiles]:
    """A held job is not running: its last run becomes lastState, the containers wait."""
    if job is not None and job.active and job.waiting_reason == "Held":
        return {name: held_view(f) for name, f in files.items()}
    return files


def held_view(files: ContainerFiles) -> ContainerFiles:
    if not files.started:
        return ContainerFiles(restarts=files.restarts, last=files.last)
    last = (files.exit_code if files.exit_code is not None else 137, files.started, files.finished or files.started)
    return ContainerFiles(restarts=files.restarts + 1, last=last)


def from_chirp(fields: list[str]) -> ContainerFiles:
    """One container's state as the job chirped it (the job sets this attribute itself: each field is
    bounded like a runner state file)."""
    started, finished, exit_text, restarts, last_text, waiting, reason = (
        f.strip()[: safefs.STATE_BYTES] for f in fields
    )
    last = None
    parts = last_text.split()
    if len(parts) in (3, 4) and parts[0].lstrip("-").isdigit():
        last = (int(parts[0]), parts[1], parts[2])

    def split(text: str) -> tuple[str, str] | None:
        word, _, rest = text.partition(" ")
        return (word, rest) if word else None

    return ContainerFiles(
        started=started,
        finished=finished,
        exit_code=int(exit_text) if exit_text.lstrip("-").isdigit() else None,
        restarts=int(restarts) if restarts.isdigit() else 0,
        last=last,
        last_reason=(parts[3], "") if last is not None and len(parts) == 4 else None,
        waiting=split(waiting),
        reason=split(reason),
    )
