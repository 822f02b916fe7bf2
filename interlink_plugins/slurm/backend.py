"""SLURM backend: a pod becomes one sbatch job whose script is the shared pod runner."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from interlink_plugins.config import Config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import AdoptedJob, JobInfo, Resources
from interlink_plugins.core.batch import BatchBackend, JobOwner, primary_gid
from interlink_plugins.core.commands.local import CommandRunner
from interlink_plugins.core.errors import BackendUnavailable, PodSpecError, SubmitRejected
from interlink_plugins.core.model.pod import GPU_RESOURCES, Pod
from interlink_plugins.core.model.resources import pod_totals
from interlink_plugins.core.podrunner.jobdir import JobPlan
from interlink_plugins.core.podrunner.statefiles import LOCAL, RunnerStateSource
from interlink_plugins.core.policy import annotations as ann
from interlink_plugins.core.policy.engine import AdminPolicy, ParsedOption, PolicyViolation, parse_options
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.slurm import commands, migrate, parse
from interlink_plugins.slurm.memory import memory_kill_detail, output_tail
from interlink_plugins.slurm.policy import (
    FLAGS,
    FLAVOR,
    NAMESPACE_CHOICES,
    SBATCH_OPTIONS,
    render_sbatch_option,
    sbatch_flags,
)
from interlink_plugins.slurm.settings import Flavor, SlurmSettings
from interlink_plugins.slurm.states import OOM_KILLED, may_be_memory_kill

log = logging.getLogger(__name__)

FLAGS_ANNOTATIONS = FLAGS
_GRES_GPU = re.compile(r"^gpu(?::[^:,]+)?:(\d+)$")


def _dir_owner(path: str) -> int | None:
    """The uid owning a job dir (not followed: a symlink is not a job dir); None when missing or not a dir."""
    info = safefs.lstat(safefs.job_location(path))
    return info.st_uid if info is not None and stat.S_ISDIR(info.st_mode) else None


def _is_pod_job_dir(work_dir: str, uid: str, data_root: Path) -> bool:
    """``work_dir`` names pod ``uid``'s job dir directly in the data root (``<namespace>-<uid>`` or
    ``<namespace>_<uid>``: never ``..`` or another pod's dir, whatever a job's --chdir said)."""
    path = Path(work_dir.rstrip("/") or "/")
    name = path.name
    return path.parent == data_root and len(name) > len(uid) + 1 and name[-len(uid) - 1:] in (f"-{uid}", f"_{uid}")


def _job_number(job_id: str) -> tuple[int, str]:
    """Submission order of SLURM job ids (an array task after its array's job)."""
    head = job_id.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 62, job_id)


class SlurmBackend(BatchBackend[list[ParsedOption]]):
    """A pod as one sbatch job; its draft is the job's sbatch options."""

    name = "slurm"
    display_name = "SLURM"

    def __init__(self, config: Config, runner: CommandRunner, policy: AdminPolicy) -> None:
        super().__init__(config, runner, policy)
        self._completion_accounting: bool | None = None  # None: not probed yet
        self._go_files = migrate.GoLayoutFiles(config.state_dir)
        self._memory_kills: dict[str, str] = {}  # job id -> slurmstepd's memory-kill line ("" none)

    @property
    def settings(self) -> SlurmSettings:
        """The SLURM section of the current config (SIGHUP swaps the config)."""
        return self.config.section(SlurmSettings)

    def mpi_launcher(self) -> tuple[str, ...]:
        return self.settings.mpi_launcher

    # --- identity ----------------------------------------------------------------------

    def comment(self, uid: str) -> str:
        return commands.comment(uid, self.config.instance_id)

    # --- prepare (BatchBackend: the job dir; here the sbatch options and argv) ------------

    def draft(self, pod: Pod, job_dir: Path) -> list[ParsedOption]:
        return self._sbatch_options(pod)

    def submission(
        self, pod: Pod, draft: list[ParsedOption], job_dir: Path, job_plan: JobPlan, files: dict[str, str], *,
        write: bool,
    ) -> dict[str, list[str]]:
        argv = commands.sbatch(
            self.settings.sbatch, comment=self.comment(pod.uid), job_dir=job_dir, requeue=self.settings.requeue,
            options=[word for option in draft for word in render_sbatch_option(option)],
            script=job_dir / "pod-runner.sh",
        )  # fmt: skip
        return {"argv": argv}

    def job_owner(self, draft: list[ParsedOption]) -> JobOwner | None:
        """--uid: the job's user owns its job dir; the plugin's group keeps read access (DESIGN: 0750 +
        group) for logs and status."""
        uid = next((int(o.value) for o in draft if o.name == "uid" and o.value and o.value.isdigit()), None)
        return None if uid is None else JobOwner(uid, os.getegid(), 0o750)

    def _sbatch_options(self, pod: Pod) -> list[ParsedOption]:
        """Precedence: pod resources > annotation flags > flavor > namespace default > config default."""
        merged: dict[str, ParsedOption] = {}
        merged["job-name"] = ParsedOption("job-name", f"{pod.namespace}-{pod.name}"[:128])
        totals = pod_totals(pod)
        gpus = sum(totals.extended.get(kind, 0) for kind in GPU_RESOURCES)
        flavor = self._flavor(pod, gpus)
        merged["cpus-per-task"] = ParsedOption("cpus-per-task", str(self.config.default_cpus))
        merged["mem"] = ParsedOption("mem", str(self.config.default_memory_mib))
        self._namespace_defaults(pod.namespace, merged)
        if flavor is not None:
            layer = []
            if flavor.cpus:
                layer.append(ParsedOption("cpus-per-task", str(flavor.cpus)))
            if flavor.memory_mib:
                layer.append(ParsedOption("mem", str(flavor.memory_mib)))
            for option in _flavor_options(flavor):
                self._check_namespace_choice(option, pod.namespace, f"Flavors.{flavor.name}")
                layer.append(option)
            _apply(merged, layer)
        for key, text in ann.present(pod.annotations, FLAGS_ANNOTATIONS):
            _apply(merged, sbatch_flags(self.policy, text, pod.namespace, field=f"metadata.annotations[{key}]"))
        if totals.cpu_millis:
            merged["cpus-per-task"] = ParsedOption("cpus-per-task", str(math.ceil(totals.cpu_millis / 1000)))
        if totals.memory_bytes:
            _apply(merged, [ParsedOption("mem", str(math.ceil(totals.memory_bytes / 2**20)))])
        gres = self._gres(pod, totals.extended)
        if gres:
            merged["gres"] = ParsedOption("gres", ",".join(gres))
        tmp = totals.extended.get("ephemeral-storage", 0)
        if tmp:
            merged["tmp"] = ParsedOption("tmp", str(math.ceil(tmp / 2**20)))
        if pod.active_deadline_seconds:
            minutes, deadline = deadline_options(_pod_start_time(pod), pod.active_deadline_seconds, datetime.now())
            merged["time"] = ParsedOption("time", str(minutes))
            merged["deadline"] = ParsedOption("deadline", deadline.strftime("%Y-%m-%dT%H:%M:%S"))

        uid = self._job_uid(pod, flavor)
        if uid is not None and uid != os.geteuid():
            merged["uid"] = ParsedOption("uid", str(uid))
            gid = primary_gid(uid)
            if gid is not None:
                merged["gid"] = ParsedOption("gid", str(gid))
        return list(merged.values())

    def _flavor(self, pod: Pod, gpus: int) -> Flavor | None:
        """The pod's flavor annotation, else a GPU flavor when the pod asks for GPUs, else DefaultFlavor."""
        found = ann.first(pod.annotations, FLAVOR)
        if found is not None:
            key, name = found
            flavor = self.settings.flavors.get(name.strip())
            if flavor is None:
                known = ", ".join(sorted(self.settings.flavors)) or "none configured"
                raise PodSpecError(f"metadata.annotations[{key}]", f"no flavor named {name!r} (flavors: {known})")
            return flavor
        if gpus:
            picked = gpu_flavor(self.settings.flavors, gpus)
            if picked is not None:
                return picked
        if self.settings.default_flavor:
            return self.settings.flavors[self.settings.default_flavor]
        return None

    def _namespace_defaults(self, namespace: str, merged: dict[str, ParsedOption]) -> None:
        """A namespace that may use accounts/QoS/partitions gets the first of each by default (-A ...)."""
        ns = self.policy.namespace_policy(namespace)
        if ns is None:
            return
        for name, attr in NAMESPACE_CHOICES.items():
            choices = ns.choice(attr)
            if choices:
                merged[name] = ParsedOption(name, choices[0])

    def _check_namespace_choice(self, option: ParsedOption, namespace: str, field: str) -> None:
        """A flavor's account/QoS/partition must be one the namespace may use, where its policy lists any."""
        attr = NAMESPACE_CHOICES.get(option.name)
        ns = self.policy.namespace_policy(namespace)
        if attr is None or ns is None:
            return
        allowed = ns.choice(attr)
        if not allowed:
            return
        for item in (option.value or "").split(","):
            if item not in allowed:
                raise PolicyViolation(
                    "metadata.annotations[slurm-job.vk.io/flavor]",
                    f"{field} sets {option.name} {item!r}, which namespace {namespace!r} may not use",
                )

    def _job_uid(self, pod: Pod, flavor: Flavor | None) -> int | None:
        """The uid the job runs as; None: the plugin's own (no --uid).

        runAsUser, checked against the namespace's Users whoever it names (the plugin's own uid too),
        else the flavor's UID, else DefaultUID. A flavor with a UID is only for the namespaces whose
        policy lists it, and its UID must be one of their Users, unless it is Public. A job never runs
        as root unless AllowRootJobs; a root plugin with no uid for the pod refuses it (a plugin that is
        not root can only run it as itself).
        """
        if flavor is not None and flavor.uid is not None and not flavor.public:
            self.policy.check_flavor(pod.namespace, self._flavor_key(flavor), field=_FLAVOR_FIELD)
        uid, field = _pod_uid(pod)
        if uid is None and flavor is not None and flavor.uid is not None:
            uid, field = flavor.uid, _FLAVOR_FIELD
            self._check_not_root(uid, field)
            if not flavor.public:
                self._check_user(pod.namespace, uid, field, f"flavor {flavor.name!r} runs as uid {uid}: ")
            return uid
        if uid is not None:
            self._check_not_root(uid, field)
            self.policy.check_user(pod.namespace, uid, field=field)
            return uid
        if self.settings.default_uid is not None:
            self._check_not_root(self.settings.default_uid, "DefaultUID")
            return self.settings.default_uid
        if os.geteuid() == 0 and not self.settings.allow_root_jobs:
            raise PodSpecError(
                "spec.securityContext.runAsUser",
                "required: the pod sets no runAsUser and the plugin has no DefaultUID, and a root plugin does not "
                "run jobs as root (AllowRootJobs: false)",
            )
        return None

    def _flavor_key(self, flavor: Flavor) -> str:
        """The flavor's key in Flavors (what NamespacePolicy Flavors names)."""
        return next((key for key, each in self.settings.flavors.items() if each is flavor), flavor.name)

    def _check_not_root(self, uid: int, field: str) -> None:
        if uid == 0 and not self.settings.allow_root_jobs:
            raise PolicyViolation(field, "uid 0: jobs never run as root (AllowRootJobs: false)")

    def _check_user(self, namespace: str, uid: int, field: str, why: str) -> None:
        if not self.policy.user_allowed(namespace, uid):
            raise PolicyViolation(field, f"{why}namespace {namespace!r} may not run as user {str(uid)!r}")

    def _gres(self, pod: Pod, extended: Mapping[str, int]) -> list[str]:
        """--gres items; a gres named twice (GPUs plus MIG slices mapped to gpu) is summed."""
        counts: dict[str, int] = {}
        gpus = sum(extended.get(kind, 0) for kind in GPU_RESOURCES)
        if gpus:
            counts["gpu"] = gpus
        for resource, count in sorted(extended.items()):
            if resource in GPU_RESOURCES or resource in ("ephemeral-storage", "storage", "pods") or not count:
                continue
            if resource.startswith("hugepages-"):
                continue
            mapped = self.settings.gres_map.get(resource)
            if mapped is None:
                raise PodSpecError(
                    f"spec.containers[*].resources[{resource}]",
                    f"resource {resource!r} has no SLURM gres mapping (GresMap in the plugin config)",
                )
            counts[mapped] = counts.get(mapped, 0) + count
        return [f"{name}:{count}" for name, count in counts.items()]

    # --- commands ----------------------------------------------------------------------

    def unreachable(self, error_text: str) -> bool:
        return parse.unreachable(error_text)

    async def submit(self, record: PodRecord) -> str:
        argv = list(record.submit["argv"])
        result = await self.run_command(argv, "submit")
        if not result.ok:
            detail, throttled = parse.sbatch_refusal(result.error_text, result.returncode)
            raise SubmitRejected(detail, retryable=throttled)
        job_id = parse.parse_sbatch(result.text)
        if job_id is None:
            raise SubmitRejected(f"sbatch printed no job id: {result.text.strip()!r}")
        return job_id

    async def _squeue_own(self) -> list[parse.SqueueRow]:
        """Every job still known to slurmctld that runs as a uid this plugin submits as, with our comment.
        A root plugin lists every user's jobs (--uid jobs are not its own): a job of another uid that carries
        our comment was planted, and is ignored with a warning."""
        argv = commands.squeue_mine(self.settings.squeue, every_user=os.geteuid() == 0)
        result = await self.run_command(argv, "list")
        if not result.ok:
            raise BackendUnavailable("slurm", "squeue", result.error_text)
        uids = self.submit_uids()
        own = []
        for row in parse.parse_squeue_mine(result.text):
            if self._uid_from_comment(row.comment) is None:
                continue
            if row.user_id.strip().isdigit() and int(row.user_id) in uids:
                own.append(row)
            else:
                log.warning("ignoring job %s: it carries this plugin's comment %r but runs as uid %s, which this "
                            "plugin never submits as (planted by another user?)", row.job_id, row.comment,
                            row.user_id)
        return own
    def submit_uids(self) -> frozenset[int]:
        """The uids this plugin's jobs run as: its own when it is not root; else the uids the config names
        (DefaultUID, flavors' UIDs, namespaces' Users) and root only with AllowRootJobs."""
        me = os.geteuid()
        if me != 0:
            return frozenset({me})
        uids = set(self.policy.submit_uids())
        uids |= {flavor.uid for flavor in self.settings.flavors.values() if flavor.uid is not None}
        if self.settings.default_uid is not None:
            uids.add(self.settings.default_uid)
        if self.settings.allow_root_jobs:
            uids.add(0)
        else:
            uids.discard(0)
        return frozenset(uids)

    def _uid_from_comment(self, comment: str) -> str | None:
        return commands.uid_from_comment(comment, self.config.instance_id)

    async def find_job(self, record: PodRecord) -> str | None:
        for row in await self._squeue_own():
            if self._uid_from_comment(row.comment) == record.uid:
                return row.job_id
        # purged from slurmctld: accounting knows the job by its working directory
        rows = await self._sacct(None, since=commands.SACCT_FIND_SINCE)
        for found in rows:
            if found.work_dir.rstrip("/") == record.job_dir.rstrip("/") and found.job_id.isdigit():
                return found.job_id
        return None

    async def adopt(self) -> list[AdoptedJob]:
        """Our jobs after a state loss: our comment, a uid we submit as, and a job dir in the data root that
        this uid owns. Any uid in a namespace's Users can submit a job with our comment naming another
        namespace's pod and its job dir; that dir belongs to the pod's own uid (the hand-over), so such a
        job is not taken for the pod's. Of two claims to one pod the older job wins."""
        claims: list[tuple[str, parse.SqueueRow]] = []
        for row in sorted(await self._squeue_own(), key=lambda row: _job_number(row.job_id)):
            uid = self._uid_from_comment(row.comment)
            if not uid:
                continue
            if not _is_pod_job_dir(row.work_dir, uid, self.config.data_root):
                log.warning("ignoring job %s of pod %s: its working directory %r is not that pod's job dir in "
                            "DataRootFolder", row.job_id, uid, row.work_dir)
                continue
            claims.append((uid, row))
        owners = await asyncio.to_thread(self.job_dir_owners, [row.work_dir for _, row in claims])
        adopted: dict[str, AdoptedJob] = {}
        for uid, row in claims:
            owner = owners[row.work_dir] if owners is not None else int(row.user_id)
            if owner is None or str(owner) != row.user_id.strip():
                log.warning("ignoring job %s of pod %s: it runs as uid %s but its job dir %r %s (planted by "
                            "another user?)", row.job_id, uid, row.user_id,
                            row.work_dir, "is missing" if owner is None else f"belongs to uid {owner}")
                continue
            if uid in adopted:
                log.warning("ignoring job %s of pod %s: job %s, older, is the pod's", row.job_id, uid,
                            adopted[uid].job_id)
                continue
            adopted[uid] = AdoptedJob(uid=uid, job_id=row.job_id, job_dir=row.work_dir)
        found = list(adopted.values())
        return found + await asyncio.to_thread(self._adopt_go_job_dirs, set(adopted))

    def job_dir_owners(self, job_dirs: Sequence[str]) -> dict[str, int | None] | None:
        """The uid owning each job dir (None: missing, or not a directory). None for all when this host does
        not see the job dirs: see RemoteSlurmBackend."""
        return {job_dir: _dir_owner(job_dir) for job_dir in job_dirs}

    def _adopt_go_job_dirs(self, known: set[str]) -> list[AdoptedJob]:
        """Job dirs the Go SLURM plugin left in the data root: tracked like ours from now on, their layout
        recorded (the only place the Go layout is ever found; nothing is written into them)."""
        adopted = []
        for job in migrate.scan(self.config.data_root):
            if job.uid in known:
                continue
            log.info("adopting job %s of pod %s/%s from the Go plugin's job dir %s", job.job_id, job.namespace,
                     job.uid, job.path)
            adopted.append(
                AdoptedJob(uid=job.uid, job_id=job.job_id, job_dir=str(job.path), namespace=job.namespace,
                           name=job.name, layout="go", summary=migrate.summary(job))
            )
        return adopted

    # --- per-container view: our runner's files, or the Go plugin's for adopted job dirs ---------

    def state_source(self, record: PodRecord) -> RunnerStateSource:
        """The layout recorded for this pod (never re-derived from the job dir, which the job controls)."""
        return self._go_files if record.layout == "go" else LOCAL

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        result = await self.run_command(commands.squeue_jobs(self.settings.squeue, job_ids), "status")
        if not result.ok:
            if parse.invalid_job_id(result.error_text):
                return {}
            raise BackendUnavailable("slurm", "squeue (status)", result.error_text)
        jobs: dict[str, JobInfo] = {}
        ended: dict[str, str] = {}  # job id -> job dir, for the jobs that may have been killed for memory
        for row in parse.parse_squeue(result.text):
            if may_be_memory_kill(row.state, row.reason, None):
                ended[row.job_id] = row.work_dir
            jobs[row.job_id] = parse.squeue_job(row)
        return await self._with_memory_kills(jobs, ended)

    async def _with_memory_kills(self, jobs: dict[str, JobInfo], ended: Mapping[str, str]) -> dict[str, JobInfo]:
        """Jobs SLURM ended for their memory: OOMKilled, with slurmstepd's line as the detail.

        jobacct_gather's OverMemoryKill ends the job FAILED (the line names the kill); task/cgroup ends it
        OUT_OF_MEMORY (the line counts the OOM kills). Each job's output is read once.
        """
        for job_id, job_dir in ended.items():
            if job_id not in self._memory_kills:
                if len(self._memory_kills) > 4096:
                    self._memory_kills.clear()
                tail = await asyncio.to_thread(self.output_tail, job_dir)
                self._memory_kills[job_id] = memory_kill_detail(tail)
            detail = self._memory_kills[job_id]
            if detail:
                jobs[job_id] = dataclasses.replace(jobs[job_id], abnormal_reason=OOM_KILLED, detail=detail)
        return jobs

    def output_tail(self, job_dir: str) -> bytes:
        """The end of the job's output file (blocking; the job dir is on this host's filesystem)."""
        return output_tail(job_dir)

    async def _sacct(self, job_ids: Sequence[str] | None, *, since: str = "") -> list[parse.SacctRow]:
        """Accounting (slurmdbd) when the cluster has it, else jobcomp (sacct -c); learnt at the first call."""
        if self._completion_accounting is not True:
            argv = commands.sacct(self.settings.sacct, job_ids, completion=False, since=since)
            result = await self.run_command(argv, "accounting")
            if result.ok and not parse.accounting_disabled(result.text):
                self._completion_accounting = False
                return parse.parse_sacct(result.text)
            if not result.ok and not parse.accounting_disabled(result.error_text):
                raise BackendUnavailable("slurm", "sacct", result.error_text)
            self._completion_accounting = True
        argv = commands.sacct(self.settings.sacct, job_ids, completion=True, since=since)
        result = await self.run_command(argv, "accounting")
        if not result.ok:
            raise BackendUnavailable("slurm", "sacct -c", result.error_text)
        return parse.parse_sacct(result.text)

    async def query_finished(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        rows = await self._sacct(job_ids)
        jobs: dict[str, JobInfo] = {}
        ended: dict[str, str] = {}
        wanted = set(job_ids)
        for row in rows:
            if row.job_id not in wanted:
                continue
            job = parse.sacct_job(row)
            if may_be_memory_kill(row.state, "", job.signal):
                ended[row.job_id] = row.work_dir
            jobs[row.job_id] = job
        return await self._with_memory_kills(jobs, ended)

    async def cancel(self, job_id: str, *, graceful: bool) -> None:
        if graceful:
            # a job that has not started has nothing to stop gracefully: cancelled as it is, and the signal
            # form never meets a pending job (SLURM 22.05 retries it silently until the command times out);
            # a cancelled or unknown job answers the signal form at once ("Invalid job id")
            pending = await self.run_command(commands.scancel_pending(self.settings.scancel, job_id), "delete")
            if not pending.ok and parse.cancel_settled(pending.error_text):
                return
        result = await self.run_command(commands.scancel(self.settings.scancel, job_id, graceful=graceful), "delete")
        if result.ok or parse.cancel_settled(result.error_text):
            return
        if graceful and parse.cancel_needs_plain(result.error_text):
            await self.cancel(job_id, graceful=False)
            return
        log.warning("scancel %s: %s", job_id, result.error_text)

    async def forget(self, record: PodRecord) -> None:
        if record.layout == "go":
            await safefs.run(self._go_files.forget, record)

    async def resources(self) -> Resources:
        result = await self.run_command(commands.sinfo(self.settings.sinfo), "resources")
        if not result.ok:
            raise BackendUnavailable("slurm", "sinfo", result.error_text)
        return parse.capacity(parse.parse_sinfo(result.text), self.settings.partitions)


_MEMORY_GROUP = ("mem", "mem-per-cpu", "mem-per-gpu")


def _apply(merged: dict[str, ParsedOption], layer: Sequence[ParsedOption]) -> None:
    """A higher-precedence layer of options; one that sets memory replaces every memory option."""
    if any(option.name in _MEMORY_GROUP for option in layer):
        for name in _MEMORY_GROUP:
            merged.pop(name, None)
    for option in layer:
        merged[option.name] = option


def _flavor_options(flavor: Flavor) -> list[ParsedOption]:
    return parse_options(" ".join(flavor.sbatch_flags), SBATCH_OPTIONS, field=f"Flavors.{flavor.name}.SlurmFlags")


def _flavor_gpus(flavor: Flavor) -> int | None:
    """GPUs a flavor's flags ask for (--gres=gpu[:type]:N, --gpus=N), None when they name no GPUs."""
    try:
        options = _flavor_options(flavor)
    except PodSpecError:
        return None
    for option in options:
        if option.name == "gres":
            for item in (option.value or "").split(","):
                match = _GRES_GPU.match(item)
                if match:
                    return int(match.group(1))
        if option.name in ("gpus", "gpus-per-node") and (option.value or "").rsplit(":", 1)[-1].isdigit():
            return int((option.value or "").rsplit(":", 1)[-1])
    return None


def gpu_flavor(flavors: Mapping[str, Flavor], gpus: int) -> Flavor | None:
    """The Go plugin's GPU auto-selection, deterministic: a GPU flavor asking for exactly ``gpus``, else
    any flavor whose flags mention GPUs, else none; ties go to the first name in sorted order."""
    exact: Flavor | None = None
    any_gpu: Flavor | None = None
    for name in sorted(flavors):
        flavor = flavors[name]
        in_flags = any("gpu" in flag.lower() for flag in flavor.sbatch_flags)
        if not in_flags and "gpu" not in name.lower():
            continue
        if exact is None and _flavor_gpus(flavor) == gpus:
            exact = flavor
        if any_gpu is None and in_flags:
            any_gpu = flavor
    return exact or any_gpu


_FLAVOR_FIELD = "metadata.annotations[slurm-job.vk.io/flavor]"


def _pod_uid(pod: Pod) -> tuple[int | None, str]:
    """runAsUser of the pod, else of its containers (which must agree: one job, one user), with its field."""
    if pod.run_as_user is not None:
        return pod.run_as_user, "spec.securityContext.runAsUser"
    users = [
        (c.run_as_user, f"{c.field_path}[{i if c.kind == 'init' else i - len(pod.init_containers)}]")
        for i, c in enumerate(pod.all_containers)
        if c.run_as_user is not None
    ]
    if len({u for u, _ in users}) > 1:
        raise PodSpecError(
            f"{users[1][1]}.securityContext.runAsUser",
            "the containers ask for different users; one SLURM job runs as one user",
        )
    if users:
        uid, where = users[0]
        return uid, f"{where}.securityContext.runAsUser"
    return None, "spec.securityContext.runAsUser"


def deadline_options(start: datetime, seconds: int, now: datetime) -> tuple[int, datetime]:
    """--time (whole minutes) and --deadline for a pod that must end `seconds` after `start`.

    SLURM ends a running job at its time limit (checked every ~30 s) and removes a pending one once
    it could no longer run its whole time limit before --deadline; it refuses a deadline in the past.
    So the limit is the time left, rounded up to a minute, and the deadline that time limit past the
    pod's own: the job is removed exactly when it is still pending at the pod's deadline. A pod whose
    deadline has already passed gets a deadline shorter than its one-minute limit: SLURM ends it at
    once (state DEADLINE). All times are naive local times, as sbatch reads them.
    """
    end = start + timedelta(seconds=seconds)
    left = (end - now).total_seconds()
    if left <= 0:
        return 1, now.replace(microsecond=0) + timedelta(seconds=30)
    minutes = max(1, math.ceil(left / 60))
    deadline = end + timedelta(minutes=minutes)
    if deadline.microsecond:  # sbatch reads whole seconds: never round towards an earlier removal
        deadline = deadline.replace(microsecond=0) + timedelta(seconds=1)
    return minutes, deadline


def _pod_start_time(pod: Pod) -> datetime:
    status = pod.raw.get("status") or {}
    start = status.get("startTime") if isinstance(status, dict) else None
    if isinstance(start, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone().replace(tzinfo=None)
    return datetime.now()

