"""HTCondor backend: a pod becomes one job (submit description + the shared pod runner).

Identity: ``+InterLinkPodUID`` and ``+InterLinkInstance`` on the job; PodJID is ``cluster.proc``.
Status: ONE schedd query per poll for every job of this instance (constraint on the instance
attribute, a projection of the attributes states.py reads), history for jobs that left the queue.
Two data modes (HTCondorDataMode): ``shared`` (the execute nodes see DataRootFolder) and ``spool``
(inputs spooled, outputs brought back with Schedd.retrieve once the job completed; while it runs,
per-container state comes from the job ad (chirped by the wrapper) and live logs through the tail
command).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, JobInfo, Resources
from interlink_plugins.core.batch import BatchBackend, JobOwner, primary_gid
from interlink_plugins.core.commands.local import CommandRunner
from interlink_plugins.core.errors import BackendUnavailable, ConfigError, LogRequestError
from interlink_plugins.core.model.pod import Pod
from interlink_plugins.core.podrunner.jobdir import JobFile, JobPlan
from interlink_plugins.core.podrunner.statefiles import LOCAL, RunnerStateSource
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.htcondor import livelogs, states, submit
from interlink_plugins.htcondor.client import CondorClient
from interlink_plugins.htcondor.runnerstate import ChirpedState, CondorFiles, live_copy, sync_live_copies
from interlink_plugins.htcondor.settings import HTCondorSettings

log = logging.getLogger(__name__)

STARTD_PROJECTION = [
    "Name", "SlotType", "Cpus", "Memory", "GPUs", "TotalSlotCpus", "TotalSlotMemory", "TotalSlotGPUs", "State",
    "Offline", "Draining",
]  # fmt: skip
FORCE_REMOVE_SLACK = 20  # seconds after job_max_vacate_time before RemoveX forgets a job stuck in removal
_LOCAL_ONLY = ("pod.json", "emptydir", submit.WRAPPER)


class HTCondorBackend(BatchBackend[submit.JobLayout]):
    """A pod as one HTCondor job; its draft is where its job dir is, here and as the job sees it."""

    name = "htcondor"
    display_name = "htcondor"

    def __init__(self, config: Config, runner: CommandRunner, policy: AdminPolicy) -> None:
        super().__init__(config, runner, policy)
        self.client = CondorClient(config)
        self.spool = self.settings.htcondor_data_mode == "spool"
        self._job_uid = _resolve_user(self.settings.htcondor_job_user) if self.settings.htcondor_job_user else None
        self._jobs: dict[str, JobInfo] = {}  # the last answer of query()/query_finished(), by job id
        self._chirped: dict[str, Mapping[str, list[str]]] = {}  # spool: per-container state from the job ad
        self._last_seen: dict[str, float] = {}  # job id -> when query() last saw it in the queue
        self._force_at: dict[str, float] = {}  # removing job id -> when RemoveX may forget it (wall clock)
        self._files = CondorFiles(self._jobs, self._last_seen, spooled=False)
        self._retrieved = CondorFiles(self._jobs, self._last_seen, spooled=True)
        self._chirp_source = ChirpedState(self._chirped, self._jobs)

    @property
    def settings(self) -> HTCondorSettings:
        """The HTCondor section of the current config (SIGHUP swaps the config)."""
        return self.config.section(HTCondorSettings)

    # --- identity ----------------------------------------------------------------------

    def _mine(self) -> str:
        return f"InterLinkInstance == {submit.classad_string(self.config.instance_id)}"

    def _of_pod(self, uid: str) -> str:
        return f"{self._mine()} && InterLinkPodUID == {submit.classad_string(uid)}"

    # --- prepare (BatchBackend: the job dir; here the submit description) -----------------

    def draft(self, pod: Pod, job_dir: Path) -> submit.JobLayout:
        return submit.layout(self.config, pod.namespace, pod.uid)

    def run_dir(self, draft: submit.JobLayout, job_dir: Path) -> Path:
        # spool mode: the files are written here; the runner is rendered for the path the job sees
        return Path(draft.run_dir)

    def job_owner(self, draft: submit.JobLayout) -> JobOwner | None:
        """Shared mode with a root plugin: the job (running as HTCondorJobUser) owns its job dir, privately."""
        if draft.spool or self._job_uid is None or os.geteuid() != 0:
            return None
        gid = primary_gid(self._job_uid)
        return JobOwner(self._job_uid, self._job_uid if gid is None else gid)

    def helper_dir(self, draft: submit.JobLayout) -> str | None:
        # spool mode: the job sees none of the data root, the helpers travel with it (inline)
        return None if draft.spool else ""

    def plan(self, pod: Pod, draft: submit.JobLayout, job_dir: Path) -> JobPlan:
        """The core's plan; in spool mode with the wrapper that makes the job's emptyDirs and state dirs."""
        job_plan = super().plan(pod, draft, job_dir)
        if not draft.spool:
            return job_plan
        emptydirs = [v.name for v in pod.volumes if v.kind == "emptyDir"]
        wrapper = submit.wrapper_script(draft, [c.name for c in pod.all_containers], emptydirs)
        return dataclasses.replace(job_plan, files=(*job_plan.files, JobFile(submit.WRAPPER, wrapper.encode(), 0o700)))

    def submission(
        self, pod: Pod, draft: submit.JobLayout, job_dir: Path, job_plan: JobPlan, files: dict[str, str], *,
        write: bool,
    ) -> dict[str, Any]:
        # spool mode sends what the plan writes: runner, helpers, volumes, per-container files (env files);
        # pod.json stays (recovery reads it here), emptyDirs are made by the wrapper
        inputs = [name for name in job_plan.top_names() if name not in _LOCAL_ONLY]
        description = submit.description(
            pod, self.config, self.policy, draft, grace_seconds=job_plan.run.grace_seconds, spool_inputs=inputs
        )  # a refused pod writes nothing
        if draft.spool:
            description["+InterLinkSpool"] = "true"
        files["submit-description"] = "".join(f"{key} = {value}\n" for key, value in description.items())
        return {"description": description, "spool": draft.spool}

    # --- submit, find, adopt -----------------------------------------------------------

    async def submit(self, record: PodRecord) -> str:
        return await self.client.submit(record.submit["description"], spool=bool(record.submit.get("spool")))

    async def find_job(self, record: PodRecord) -> str | None:
        constraint = self._of_pod(record.uid)
        for ad in await self.client.query(constraint, states.PROJECTION):
            if states.number(ad, "HoldReasonCode") == states.HOLD_SPOOLING_INPUT:
                # submitted, but the plugin died before spooling: this job can never start
                await self.client.act("Remove", [states.job_id(ad)], "inputs never spooled (plugin restart)")
                continue
            return states.job_id(ad)
        for ad in await self.client.history(constraint, states.PROJECTION, match=1):
            if states.number(ad, "LastHoldReasonCode") != states.HOLD_SPOOLING_INPUT:
                return states.job_id(ad)
        return None

    async def adopt(self) -> list[AdoptedJob]:
        """This instance's jobs, only those the schedd says we own (Owner = the identity we submit as): a job
        another identity submitted with our instance id and a pod uid is ignored and logged."""
        owner = await self.client.identity()
        projection = ["ClusterId", "ProcId", "InterLinkPodUID", "InterLinkJobDir", "Owner"]
        adopted = []
        for ad in await self.client.query(self._mine(), projection):
            if not (states.text(ad, "InterLinkPodUID") and states.text(ad, "InterLinkJobDir")):
                continue
            if not owner or states.text(ad, "Owner") != owner:
                log.warning("ignoring job %s: it carries this instance's pod uid %s but belongs to %r, not to %r "
                            "(the identity this plugin submits as)", states.job_id(ad),
                            states.text(ad, "InterLinkPodUID"), states.text(ad, "Owner"), owner)
                continue
            adopted.append(AdoptedJob(uid=states.text(ad, "InterLinkPodUID"), job_id=states.job_id(ad),
                                      job_dir=states.text(ad, "InterLinkJobDir")))
        return adopted

    # --- status ------------------------------------------------------------------------

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        wanted = set(job_ids)
        ads = {states.job_id(ad): ad for ad in await self.client.query(self._mine(), states.PROJECTION)}
        ads = {job: ad for job, ad in ads.items() if job in wanted}
        not_back = await self._retrieve_completed(ads) if self.spool else set()
        jobs: dict[str, JobInfo] = {}
        await self._force_stuck_removals(ads)
        for job, ad in ads.items():
            info = states.job_info(ad, in_queue=True)
            if job in not_back:
                info = JobInfo(job, "Completed (outputs not retrieved yet)", active=True, running=True,
                               node=info.node, started_at=info.started_at)
            jobs[job] = info
            self._last_seen[job] = time.monotonic()
            chirped = states.text(ad, submit.CHIRP_ATTR)
            if chirped:
                self._chirped[job] = submit.parse_chirped(chirped)
        self._jobs.update(jobs)
        return jobs

    async def _retrieve_completed(self, ads: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Bring back the outputs of completed spooled jobs; returns the ids whose outputs are not back."""
        pending = [
            job for job, ad in ads.items()
            if states.number(ad, "JobStatus") == 4
            and (states.number(ad, "StageOutFinish") or 0) < (states.number(ad, "EnteredCurrentStatus") or 0)
        ]  # fmt: skip
        if not pending:
            return set()
        try:
            await self.client.retrieve(pending)
        except BackendUnavailable as exc:
            log.warning("retrieve of %s failed: %s", ", ".join(pending), exc)
            return set(pending)
        for job in pending:
            uid = states.text(ads[job], "InterLinkPodUID")
            job_dir = states.text(ads[job], "InterLinkJobDir")
            if uid and job_dir:
                await safefs.run(sync_live_copies, safefs.job_location(job_dir))
        return set()

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        clusters = sorted({int(j.split(".")[0]) for j in job_ids if j.split(".")[0].isdigit()})
        if not clusters:
            return {}
        constraint = f"{self._mine()} && member(ClusterId, {{{', '.join(str(c) for c in clusters)}}})"
        ads = await self.client.history(constraint, states.PROJECTION, match=len(clusters))
        wanted = set(job_ids)
        jobs = {states.job_id(ad): states.job_info(ad) for ad in ads if states.job_id(ad) in wanted}
        self._jobs.update(jobs)
        return jobs

    # --- per-container view ------------------------------------------------------------

    def _local_state(self, record: PodRecord) -> bool:
        # spool mode: the runner's files are here once retrieved (the wrapper always leaves pod.exit)
        return not self.spool or LOCAL.finished(record)

    def state_source(self, record: PodRecord) -> RunnerStateSource:
        """Shared mode: the runner's files; spool mode: the state the job chirps until its files are
        retrieved, then those files (htcondor/runnerstate.py)."""
        if not self.spool:
            return self._files
        return self._retrieved if LOCAL.finished(record) else self._chirp_source

    # --- live logs of spooled jobs (LogSource hooks; no-ops in shared mode) ----------------

    async def fetch_log(self, record: PodRecord, container: str, *, previous: bool) -> None:
        if not self.spool or self._local_state(record) or not self.container_started(record, container):
            return
        job = self._jobs.get(record.job_id)
        if job is None or not job.running:
            return
        if not self.settings.htcondor_tail:
            raise _no_tail(record, container)
        if previous:
            raise LogRequestError(
                f"the previous log of container {container} is available once spooled job {record.job_id} completes"
            )
        await self._tail(record, container)

    def keep_log_fresh(self, record: PodRecord, container: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if not self.spool or self._local_state(record):
            return stream
        if not self.settings.htcondor_tail:
            job = self._jobs.get(record.job_id)
            if job is not None and job.running and self.container_started(record, container):
                raise _no_tail(record, container)
            return stream

        async def refresh() -> None:
            job = self._jobs.get(record.job_id)
            if job is not None and job.running and not self._local_state(record):
                await self._tail(record, container)

        return livelogs.refreshed(stream, refresh)

    async def _tail(self, record: PodRecord, container: str) -> None:
        argv = [*self.settings.htcondor_tail, "-no-stdout", "-maxbytes", str(livelogs.MAX_BYTES)]
        if self.settings.htcondor_collector:
            argv += ["-pool", self.settings.htcondor_collector]
        if self.settings.htcondor_schedd:
            argv += ["-name", self.settings.htcondor_schedd]
        argv += [record.job_id, f"c/{container}/log"]
        result = await self.run_command(argv, f"live log of job {record.job_id}",
                                        timeout=min(self.config.command_timeout, 10.0), env=self.client.tool_env())
        if not result.ok:
            if "No such job" in result.error_text or "not running" in result.error_text.lower():
                return
            raise BackendUnavailable("htcondor", f"{argv[0]} (live log of job {record.job_id})", result.error_text)
        await safefs.run(livelogs.merge, live_copy(record, container, False), result.stdout)

    # --- delete, cleanup ---------------------------------------------------------------

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        # Remove: the starter sends the job SIGTERM (kill_sig), the runner runs the preStop hooks and stops
        # every container in its grace period, SIGKILL follows after job_max_vacate_time (grace + 10 s).
        # While that runs the job is "Removing" (still active). RemoveX forgets a job stuck in removal:
        # only once HTCondor's own SIGKILL should have ended it, so the runner's last steps (the
        # containers' cleanup) are never cut short.
        if not graceful:
            job = self._jobs.get(job_id)
            if job is not None and job.state == states.REMOVING.word and time.time() < self._force_at.get(job_id, 0):
                log.info("job %s is stopping in its grace period; RemoveX only if it is still there at %s",
                         job_id, time.strftime("%H:%M:%S", time.gmtime(self._force_at[job_id])))
                return
        answer = await self.client.act("Remove" if graceful else "RemoveX", [job_id], "pod deleted by interLink")
        if not graceful and answer.get("TotalBadStatus"):
            await self.client.act("Remove", [job_id], "pod deleted by interLink")

    async def _force_stuck_removals(self, ads: Mapping[str, Mapping[str, Any]]) -> None:
        """Removing jobs: note when HTCondor should have killed them; RemoveX those still there after that."""
        stuck = []
        for job, ad in ads.items():
            if not states.removing(ad):
                self._force_at.pop(job, None)
                continue
            since = states.number(ad, "EnteredCurrentStatus") or int(time.time())
            vacate = states.number(ad, "JobMaxVacateTime") or 0
            force_at = self._force_at.setdefault(job, since + vacate + FORCE_REMOVE_SLACK)
            if time.time() >= force_at:
                stuck.append(job)
        if stuck:
            log.warning("job(s) %s still in removal after job_max_vacate_time: RemoveX", ", ".join(stuck))
            try:
                await self.client.act("RemoveX", stuck, "pod deleted by interLink: stuck in removal")
            except BackendUnavailable as exc:
                log.warning("RemoveX of %s failed: %s", ", ".join(stuck), exc)
            for job in stuck:
                self._force_at[job] = time.time() + FORCE_REMOVE_SLACK

    async def forget(self, record: PodRecord) -> None:
        self._jobs.pop(record.job_id, None)
        self._chirped.pop(record.job_id, None)
        self._last_seen.pop(record.job_id, None)
        self._force_at.pop(record.job_id, None)

    # --- ping --------------------------------------------------------------------------

    async def resources(self) -> Resources:
        cpus = memory_mib = gpus = 0
        unusable = 0
        ads = await self.client.startd_ads(STARTD_PROJECTION)
        for ad in ads:
            slot_type = states.text(ad, "SlotType")
            if slot_type == "Dynamic":
                continue  # carved out of a partitionable slot, already counted there
            if states.value(ad, "Offline") is True or states.value(ad, "Draining") is True or (
                states.text(ad, "State") in ("Owner", "Drained", "Preempting")
            ):
                unusable += 1
                continue
            prefix = "TotalSlot" if slot_type == "Partitionable" else ""
            cpus += states.number(ad, f"{prefix}Cpus") or 0
            memory_mib += states.number(ad, f"{prefix}Memory") or 0
            gpus += states.number(ad, f"{prefix}GPUs") or 0
        reason = ""
        if ads and unusable == len([a for a in ads if states.text(a, "SlotType") != "Dynamic"]):
            reason = "every slot of the pool is offline, draining or owner-claimed"
        return Resources(
            cpus=cpus,
            memory_bytes=memory_mib * 2**20,
            gpus={"nvidia.com/gpu": gpus} if gpus else {},
            unavailable_reason=reason,
        )


def _no_tail(record: PodRecord, container: str) -> LogRequestError:
    return LogRequestError(
        f"container {container} runs in spooled job {record.job_id}: live logs need HTCondorTailCommand "
        "(e.g. condor_tail) in the plugin config; the full log is available once the job completes"
    )


def _resolve_user(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigError(f"HTCondorJobUser: no local user {user!r}") from None
