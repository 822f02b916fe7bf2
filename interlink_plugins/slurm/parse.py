"""SLURM's command output read as data, pure: text in, rows and JobInfo out (no I/O, no clock).

The formats are the ones slurm/commands.py asks for. A line that does not have the format's field
count (truncated, or a field that held a newline) is skipped, never guessed. tests/unit/slurm/test_parse.py
reads the output of a real cluster, recorded by tests/fixtures/slurm/recapture.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from interlink_plugins.core.backend import JobInfo, Resources
from interlink_plugins.slurm.commands import SACCT_FIELDS, SINFO_FIELDS, SQUEUE_FIELDS, SQUEUE_MINE_FIELDS
from interlink_plugins.slurm.states import lookup

_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|Zero Bytes were transmitted"
    r"|Communication connection failure|Unable to establish|Transport endpoint|slurm_load_jobs error: Unable",
    re.IGNORECASE,
)
_THROTTLED = re.compile(r"QOSMax|AssocMax|MaxSubmit|Job violates accounting/QOS policy|job limit", re.IGNORECASE)
_ACCOUNTING_OFF = "accounting storage is disabled"
_NODE_UNUSABLE = ("down", "drain", "fail", "maint", "inval", "unk")


# --- errors ------------------------------------------------------------------------------------


def unreachable(error_text: str) -> bool:
    """A failed command's words say slurmctld could not be reached (not that it refused)."""
    return bool(_UNREACHABLE.search(error_text))


def invalid_job_id(error_text: str) -> bool:
    """squeue/scancel: the job is unknown to slurmctld (purged, or never there)."""
    return "Invalid job id" in error_text


def accounting_disabled(text: str) -> bool:
    """sacct without slurmdbd: the plugin reads jobcomp instead (sacct -c)."""
    return _ACCOUNTING_OFF in text.lower()


def cancel_settled(error_text: str) -> bool:
    """A failed scancel whose job is gone or ending anyway: nothing left to do."""
    return invalid_job_id(error_text) or "already completing" in error_text


def cancel_needs_plain(error_text: str) -> bool:
    """scancel --signal refused for a pending job (nothing runs to signal): a plain cancel follows."""
    return "pending" in error_text.lower()


# --- sbatch ------------------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str | None:
    """The job id of ``sbatch --parsable`` ("123" or "123;cluster"), None when it printed none."""
    job_id = stdout.strip().split(";")[0]
    return job_id if job_id.isascii() and job_id.isdigit() else None


def sbatch_refusal(error_text: str, returncode: int) -> tuple[str, bool]:
    """SLURM's own words for a refused submission on one line, and whether it is a limit worth waiting
    out (QOS/association MaxSubmit...): e.g. "sbatch: error: QOSMaxSubmitJobPerUserLimit; sbatch: error:
    Batch job submission failed: Job violates accounting/QOS policy (job submit limit, ...)"."""
    lines = [line.strip() for line in error_text.splitlines() if line.strip()]
    detail = "; ".join(lines) or f"sbatch exited {returncode}"
    return detail, bool(_THROTTLED.search(detail))


# --- squeue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqueueRow:
    """One line of squeue -o SQUEUE_FORMAT (or SQUEUE_MINE_FORMAT), as printed."""

    job_id: str
    state: str
    reason: str
    node: str
    start: str
    end: str
    comment: str
    work_dir: str
    user_id: str = ""  # the uid the job runs as: in the adoption query only


def parse_squeue(text: str) -> list[SqueueRow]:
    """The status query's lines (SQUEUE_FORMAT)."""
    return _squeue_rows(text, len(SQUEUE_FIELDS))


def parse_squeue_mine(text: str) -> list[SqueueRow]:
    """The adoption query's lines (SQUEUE_MINE_FORMAT: with the job's uid)."""
    return _squeue_rows(text, len(SQUEUE_MINE_FIELDS))


def _squeue_rows(text: str, count: int) -> list[SqueueRow]:
    rows = []
    for line in text.splitlines():
        fields = line.split("\x1f")
        if len(fields) == count:
            rows.append(SqueueRow(*fields))
    return rows


def squeue_job(row: SqueueRow) -> JobInfo:
    state = lookup(row.state)
    return JobInfo(
        job_id=row.job_id,
        state=row.state,
        active=state.active,
        running=state.running,
        abnormal_reason=state.abnormal_reason,
        detail="" if row.reason in ("None", "(null)") else row.reason,
        node="" if row.node in ("(null)", "") else row.node,
        started_at=slurm_time(row.start),
        finished_at=slurm_time(row.end) if not state.active else "",
        waiting_reason=state.waiting_reason,
    )


# --- sacct -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SacctRow:
    """One line of sacct -n -P -o SACCT_FIELDS, as printed."""

    job_id: str
    state: str  # e.g. "CANCELLED by 0": the first word is the state
    exit_code: str  # "<code>:<signal>"
    start: str
    end: str
    node: str
    work_dir: str


def parse_sacct(text: str) -> list[SacctRow]:
    """Rows of sacct -P; WorkDir, the last field, keeps any '|' of the path."""
    count = len(SACCT_FIELDS)
    rows = []
    for line in text.splitlines():
        fields = line.split("|", count - 1)
        if len(fields) == count:
            rows.append(SacctRow(*fields))
    return rows


def exit_status(row: SacctRow) -> tuple[int | None, int | None]:
    """(exit code, signal) of sacct's ExitCode "<code>:<signal>"; signal 0 is no signal."""
    code, _, sig = row.exit_code.partition(":")
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() and int(sig) else None)


def sacct_job(row: SacctRow) -> JobInfo:
    state = lookup(row.state)
    exit_code, signal = exit_status(row)
    return JobInfo(
        job_id=row.job_id,
        state=row.state.split()[0] if row.state.strip() else "UNKNOWN",
        active=state.active,
        running=state.running,
        abnormal_reason=state.abnormal_reason,
        node="" if row.node in ("None assigned", "(null)") else row.node,
        exit_code=exit_code,
        signal=signal,
        started_at=slurm_time(row.start),
        finished_at=slurm_time(row.end),
        waiting_reason=state.waiting_reason,
    )


# --- sinfo -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinfoRow:
    """One node in one partition (sinfo -N -o SINFO_FORMAT)."""

    node: str
    cpus: int
    memory_bytes: int
    gpus: int
    state: str
    partition: str  # without the default partition's "*"

    @property
    def usable(self) -> bool:
        return not any(word in self.state.lower() for word in _NODE_UNUSABLE)


def parse_sinfo(text: str) -> list[SinfoRow]:
    rows = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != len(SINFO_FIELDS):
            continue
        node, cpus, memory, gres, state, partition = fields
        rows.append(SinfoRow(node, _int(cpus), _int(memory) * 2**20, gres_gpus(gres), state, partition.rstrip("*")))
    return rows


def capacity(rows: Iterable[SinfoRow], partitions: Iterable[str]) -> Resources:
    """The usable nodes of the wanted partitions (all when none named), each node counted once; a
    partition none of whose nodes is usable is named as down or drained."""
    wanted = set(partitions)
    nodes: dict[str, SinfoRow] = {}
    partitions_up: dict[str, bool] = {}
    for row in rows:
        if wanted and row.partition not in wanted:
            continue
        partitions_up[row.partition] = partitions_up.get(row.partition, False) or row.usable
        if row.usable:
            nodes[row.node] = row
    down = sorted(p for p, up in partitions_up.items() if not up)
    gpus = sum(n.gpus for n in nodes.values())
    return Resources(
        cpus=sum(n.cpus for n in nodes.values()),
        memory_bytes=sum(n.memory_bytes for n in nodes.values()),
        gpus={"nvidia.com/gpu": gpus} if gpus else {},
        unavailable_reason=f"partition(s) {', '.join(down)} down or drained" if down else "",
    )


def gres_gpus(gres: str) -> int:
    """GPUs in a node's gres ("gpu:2", "gpu:a100:4(S:0-1),shard:8"; "(null)" none)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _int(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


# --- time --------------------------------------------------------------------------------------


def slurm_time(text: str) -> str:
    """SLURM prints local times without a zone: convert to RFC 3339 UTC ("" when unknown)."""
    text = text.strip()
    if not text or text in ("N/A", "Unknown", "None"):
        return ""
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        return ""
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
