"""Per-container Kubernetes statuses from the runner's files and the scheduler's view of the job.

The wire shape is k8s ``v1.ContainerStatus`` (camelCase), RFC 3339 ``Z`` times, one entry per
spec container and init container with the exact names (interLink counts them to decide the phase).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from interlink_plugins.core import safefs
from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.records.state import PodRecord

KILLED = 137
TERMINATED = 143


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ContainerFiles:
    started: str = ""
    finished: str = ""
    exit_code: int | None = None
    restarts: int = 0
    last: tuple[int, str, str] | None = None
    waiting: tuple[str, str] | None = None
    reason: tuple[str, str] | None = None
    ready: bool | None = None  # from the probes (`ready` file); None: ready while running
    startup: bool | None = None  # startup probe passed (`startup` file); None: started while running
    refused: tuple[str, ...] = ()  # runner files the plugin would not read ("reason (a symlink)")
    last_reason: tuple[str, str] | None = None  # why the previous run ended, when the backend knows (Unhealthy)


STATE_FILES = ("started", "finished", "exit", "restarts", "last", "waiting", "reason", "ready", "startup")
REASON_WORD_MAX = 128  # a Kubernetes reason is one CamelCase word; the rest goes to the message
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(data: bytes | None) -> str:
    """A state file's text: decoded, control characters dropped, stripped (files are read bounded)."""
    if not data:
        return ""
    return _CONTROL.sub("", data.decode(errors="replace")).strip()


def _split_reason(text: str) -> tuple[str, str] | None:
    if not text:
        return None
    word, _, rest = text.partition(" ")
    if len(word) > REASON_WORD_MAX:
        word, rest = word[:REASON_WORD_MAX], (word[REASON_WORD_MAX:] + " " + rest).strip()
    return word, rest


def parse_container_files(found: Mapping[str, bytes], refused: Mapping[str, str] | None = None) -> ContainerFiles:
    """A container's state from its runner files' first bytes (name -> content)."""

    def text(name: str) -> str:
        return _text(found.get(name))

    exit_text = text("exit")
    last_text = text("last").split()
    last = None
    last_reason: tuple[str, str] | None = None
    if len(last_text) in (3, 4):  # "EXIT STARTED FINISHED [REASON]"
        with contextlib.suppress(ValueError):
            last = (int(last_text[0]), last_text[1], last_text[2])
            last_reason = (last_text[3][:REASON_WORD_MAX], "") if len(last_text) == 4 else None
    restarts_text = text("restarts")
    ready_text = text("ready")
    startup_text = text("startup")
    exit_code = None
    if exit_text:
        with contextlib.suppress(ValueError):
            exit_code = int(exit_text)
    return ContainerFiles(
        started=text("started"),
        finished=text("finished"),
        exit_code=exit_code,
        restarts=int(restarts_text) if restarts_text.isdigit() else 0,
        last=last,
        last_reason=last_reason,
        waiting=_split_reason(text("waiting")),
        reason=_split_reason(text("reason")),
        ready=None if not ready_text else ready_text == "1",
        startup=None if not startup_text else startup_text == "1",
        refused=tuple(f"{name} ({kind})" for name, kind in sorted((refused or {}).items())),
    )


def read_container_files(container_dir: Path | safefs.Location) -> ContainerFiles:
    """Snapshot of one container's runner files (blocking I/O: call from a worker thread).

    Read through core/safefs: no symlink is followed, only regular files are read and at most
    safefs.STATE_BYTES of each; what is refused is named in ``refused``.
    """
    loc = container_dir if isinstance(container_dir, safefs.Location) else safefs.Location(
        container_dir.parent, (container_dir.name,)
    )
    try:
        with safefs.open_dir(loc) as directory:
            files = directory.read_many(STATE_FILES)
    except (FileNotFoundError, NotADirectoryError):
        return ContainerFiles()
    except safefs.Refused as exc:
        return ContainerFiles(refused=(f"{loc.name} ({exc.kind})",))
    return parse_container_files(files.found, files.refused)


@dataclass(frozen=True)
class StatusContext:
    """What the builder needs besides the files: the job, the pod's phase and the outage."""

    record: PodRecord
    job: JobInfo | None
    backend: str
    backend_down_since: str = ""
    deleting: bool = False


def _where(ctx: StatusContext) -> str:
    job = ctx.job
    jid = ctx.record.job_id or "not submitted"
    text = f"{ctx.backend} job {jid}"
    if job and job.node:
        text += f" on node {job.node}"
    return text


def _message(reason: str, detail: str, ctx: StatusContext) -> str:
    parts = [f"{reason}:" if reason else "", detail, _where(ctx)]
    text = " ".join(p for p in parts if p).replace(": ,", ":")
    if ctx.backend_down_since:
        text += f"; backend unreachable since {ctx.backend_down_since}"
    return text


def _terminated(code: int, reason: str, message: str, started: str, finished: str) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason, "message": message}
    if started:
        state["startedAt"] = started
    if finished:
        state["finishedAt"] = finished
    if code > 128:
        state["signal"] = code - 128
    return {"terminated": state}


def _abnormal_code(job: JobInfo) -> int:
    if job.abnormal_reason in ("Cancelled", "Terminated", "Preempted"):
        return TERMINATED
    return KILLED


def _job_detail(ctx: StatusContext, job: JobInfo) -> str:
    """The scheduler's word for an ended job and, when it gave one, its reason (e.g. slurmstepd's line)."""
    return f"{ctx.backend} {job.state}" + (f" ({job.detail})" if job.detail else "")


def _killed_from_outside(files: ContainerFiles) -> bool:
    """SIGKILLed by something other than the runner (the kernel's OOM killer in the job's cgroup, ...):
    the runner names every kill of its own in `reason`."""
    return files.exit_code == KILLED and files.reason is None


def container_status(
    name: str, image: str, files: ContainerFiles, ctx: StatusContext, *, init_pending: bool
) -> dict[str, Any]:
    job = ctx.job
    state: dict[str, Any]
    if job is not None and job.active and files.started and (not job.running or _restarted(job, files)):
        # the scheduler requeued the job: a run is over and the next one waits (restartCount+1), also
        # while the job runs again but the runner has not yet taken the old run's files aside
        return _requeued(name, image, files, ctx)
    if files.exit_code is not None:
        reason, detail = files.reason or ("Completed" if files.exit_code == 0 else "Error", "")
        if job and job.active and reason in ("Terminated", "Killed") and not ctx.deleting and files.started:
            # the scheduler is stopping the job (timeout, preemption, node failure, requeue): its
            # verdict comes when the job leaves the queue; a terminated state now would be final
            # for interLink, with the wrong reason
            return _still_stopping(name, image, files, ctx, detail)
        state = _exited(files.exit_code, reason, detail, files, ctx)
    else:
        state = _no_exit_code(files, ctx, init_pending)
    if files.refused:
        state = _with_refused(state, files.refused, ctx)
    running = "running" in state
    return _entry(name, image, state, ready=running and files.ready is not False and files.startup is not False,
                  started=running and files.startup is not False, restarts=files.restarts,
                  last=_last_state(files) if files.last else None)


def _entry(name: str, image: str, state: dict[str, Any], *, ready: bool, started: bool, restarts: int,
           last: dict[str, Any] | None = None) -> dict[str, Any]:
    """One container's status as interLink reads it (imageID empty: no runtime reports a digest here)."""
    status: dict[str, Any] = {"name": name, "state": state, "ready": ready, "started": started,
                              "restartCount": restarts, "image": image, "imageID": ""}
    if last is not None:
        status["lastState"] = last
    return status


def _exited(code: int, reason: str, detail: str, files: ContainerFiles, ctx: StatusContext) -> dict[str, Any]:
    """The runner wrote the exit code: terminated; the scheduler's reason wins when it stopped the job or
    the kernel OOM-killed the container."""
    job = ctx.job
    job_over = job is not None and not job.active
    stopped = reason in ("Terminated", "Killed")
    oom = job_over and job is not None and job.abnormal_reason == "OOMKilled" and _killed_from_outside(files)
    if job and job.abnormal_reason and (stopped or oom) and not ctx.deleting:
        reason, detail = job.abnormal_reason, _job_detail(ctx, job)
    return _terminated(code, reason, _message(reason, detail, ctx), files.started, files.finished)


def _no_exit_code(files: ContainerFiles, ctx: StatusContext, init_pending: bool) -> dict[str, Any]:
    """No exit code: the job ended around the container (started or never), it runs, or it waits."""
    job = ctx.job
    job_over = job is not None and not job.active
    if files.started and job_over and job is not None:
        reason = job.abnormal_reason or ("Terminated" if ctx.deleting else "ContainerStatusUnknown")
        detail = _job_detail(ctx, job)
        return _terminated(
            _abnormal_code(job), reason, _message(reason, detail, ctx), files.started, job.finished_at or now_rfc3339()
        )
    if files.started:
        return {"running": {"startedAt": files.started}}
    if job_over and job is not None:
        reason = job.abnormal_reason or ("Terminated" if ctx.deleting else "ContainerCannotRun")
        code = _abnormal_code(job) if job.abnormal_reason or ctx.deleting else 1
        finished = job.finished_at or now_rfc3339()
        return _terminated(
            code,
            reason,
            _message(reason, f"{_job_detail(ctx, job)}, never started", ctx),
            job.started_at or finished,
            finished,
        )
    if files.waiting:
        reason, detail = files.waiting
    else:
        reason, detail = _waiting_reason(ctx, init_pending)
    return {"waiting": {"reason": reason, "message": _message(reason, detail, ctx)}}


def _last_state(files: ContainerFiles) -> dict[str, Any]:
    assert files.last is not None
    code, started, finished = files.last
    reason, message = files.last_reason or ("Completed" if code == 0 else "Error", "")
    return _terminated(code, reason, message, started, finished)


def _with_refused(state: dict[str, Any], refused: tuple[str, ...], ctx: StatusContext) -> dict[str, Any]:
    """Runner files the plugin would not read (planted symlinks, FIFOs, ...) are named in the message; a
    container that would show running waits instead (running has no message, and its state is unknown)."""
    note = "runner files refused: " + ", ".join(refused)
    if "running" in state:
        return {"waiting": {"reason": "RunnerFilesRefused", "message": _message("RunnerFilesRefused", note, ctx)}}
    kind, detail = next(iter(state.items()))
    return {kind: {**detail, "message": f"{detail.get('message', '')}; {note}".lstrip("; ")}}


def _still_stopping(name: str, image: str, files: ContainerFiles, ctx: StatusContext, detail: str) -> dict[str, Any]:
    state: dict[str, Any]
    if detail.startswith(("killed", "SIGKILL")):
        state = {"running": {"startedAt": files.started}}
    else:
        state = {"waiting": {"reason": "Terminating", "message": _message("Terminating", detail, ctx)}}
    return _entry(name, image, state, ready=False, started="running" in state, restarts=files.restarts,
                  last=_last_state(files) if files.last else None)


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _restarted(job: JobInfo, files: ContainerFiles) -> bool:
    """The job (re)started after this run of the container had finished: a requeued job running again."""
    if not job.started_at or not files.finished:
        return False
    start, finished = _epoch(job.started_at), _epoch(files.finished)
    return start is not None and finished is not None and start > finished


def _requeued(name: str, image: str, files: ContainerFiles, ctx: StatusContext) -> dict[str, Any]:
    job = ctx.job
    assert job is not None
    detail = f"{ctx.backend} {job.state} {job.detail}".strip() + ", requeued"
    code = files.exit_code if files.exit_code is not None else (KILLED if not files.finished else TERMINATED)
    finished = files.finished or now_rfc3339()
    state = {"waiting": {"reason": "Requeued", "message": _message("Requeued", detail, ctx)}}
    return _entry(name, image, state, ready=False, started=False, restarts=files.restarts + 1,
                  last=_terminated(code, "Completed" if code == 0 else "Error", "", files.started, finished))


def _waiting_reason(ctx: StatusContext, init_pending: bool) -> tuple[str, str]:
    record, job = ctx.record, ctx.job
    if record.phase == "waiting-backend":
        return record.lifecycle.waiting_reason or "BackendUnavailable", record.last_error
    if record.phase == "submitting":
        return "ContainerCreating", "submitting"
    if job is None:
        return "ContainerCreating", "waiting for the scheduler"
    if not job.running:
        return job.waiting_reason or "Pending", f"{ctx.backend} {job.state} {job.detail}".strip()
    if init_pending:
        return "PodInitializing", "init containers running"
    return "ContainerCreating", "starting"


def build_pod_status(ctx: StatusContext, files: dict[str, ContainerFiles], images: dict[str, str]) -> dict[str, Any]:
    record = ctx.record
    init_statuses = []
    init_done = True
    for name in record.init_names:
        item = container_status(name, images.get(name, ""), files.get(name, ContainerFiles()), ctx, init_pending=False)
        init_statuses.append(item)
        if "terminated" not in item["state"] and name not in record.lifecycle.sidecars:
            init_done = False
    main_statuses = [
        container_status(name, images.get(name, ""), files.get(name, ContainerFiles()), ctx, init_pending=not init_done)
        for name in record.main_names
    ]
    job = ctx.job
    entries = init_statuses + main_statuses
    if job is not None and job.active and not ctx.deleting and all("terminated" in e["state"] for e in entries):
        # every container ended but the job has not: a container SIGKILLed from outside (the OOM killer
        # of the job's memory cgroup) learns why only from the job's end (OUT_OF_MEMORY), and interLink
        # stops asking once all are terminated, so it stays running until the scheduler's verdict
        for statuses in (init_statuses, main_statuses):
            for index, entry in enumerate(statuses):
                current = files.get(entry["name"], ContainerFiles())
                if _killed_from_outside(current):
                    statuses[index] = _still_stopping(entry["name"], entry["image"], current, ctx,
                                                      "killed by SIGKILL, waiting for the job's end")
    return {
        "name": record.name,
        "UID": record.uid,
        "namespace": record.namespace,
        "JID": record.pod_jid,
        "containers": main_statuses,
        "initContainers": init_statuses,
    }


def is_final(status: dict[str, Any], job: JobInfo | None) -> bool:
    """Every container terminated and the job left the scheduler: the status is frozen."""
    if job is not None and job.active:
        return False
    entries = status["containers"] + status["initContainers"]
    return all("terminated" in entry["state"] for entry in entries)


def submit_failed_status(record: PodRecord, images: dict[str, str], backend: str) -> dict[str, Any]:
    """Every container terminated, exit 1, reason SubmitFailed with the last error."""
    now = now_rfc3339()
    message = f"SubmitFailed: {record.last_error} ({backend}, gave up after the submit deadline)"

    def entry(name: str) -> dict[str, Any]:
        state = _terminated(1, "SubmitFailed", message, now, now)
        return _entry(name, images.get(name, ""), state, ready=False, started=False, restarts=0)

    return {
        "name": record.name,
        "UID": record.uid,
        "namespace": record.namespace,
        "JID": record.pod_jid,
        "containers": [entry(n) for n in record.main_names],
        "initContainers": [entry(n) for n in record.init_names],
    }


def with_field_notes(status: dict[str, Any], record: PodRecord, backend: str) -> dict[str, Any]:
    """The pod fields the backend does not honour (core/model/podfields.py), named in each affected container's
    waiting or terminated message (Kubernetes' running state has none). Added as the status is answered, so
    the log lines made from built statuses do not repeat them."""
    notes: Mapping[str, list[str]] = record.lifecycle.field_notes
    if not notes:
        return status

    def noted(entry: dict[str, Any]) -> dict[str, Any]:
        mine, state = notes.get(entry["name"]), entry["state"]
        if not mine or "running" in state:
            return entry
        kind, detail = next(iter(state.items()))
        line = f"fields not honoured by the {backend} backend: " + "; ".join(mine)
        return {**entry, "state": {kind: {**detail, "message": f"{detail.get('message', '')}; {line}".lstrip("; ")}}}

    return {**status, "containers": [noted(e) for e in status["containers"]],
            "initContainers": [noted(e) for e in status["initContainers"]]}
