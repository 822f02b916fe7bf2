"""`interlink-plugin pods`: the pods an instance tracks, read from its state file (never written).

The phase is what the state knows: a final status (Succeeded, Failed), a pod not submitted yet (Pending,
with the reason it waits), a job that has run on a node (Running, until the poller records its end), a
delete in progress (Terminating). The scheduler's live view is `squeue`/`condor_q`/`podman pod ps`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interlink_plugins.core.records.state import PodRecord, read_records


@dataclass(frozen=True)
class PodRow:
    namespace: str
    name: str
    uid: str
    job_id: str
    phase: str
    reason: str
    node: str
    age_seconds: int


def pod_rows(state_db: Path, now: float | None = None) -> list[PodRow]:
    """One row per tracked pod, oldest first; no state file yet: no pods."""
    if not state_db.exists():
        return []
    now = time.time() if now is None else now
    records = sorted(read_records(state_db), key=lambda r: (r.created_at, r.namespace, r.name))
    return [_row(record, now) for record in records]


def _row(record: PodRecord, now: float) -> PodRow:
    phase, reason = phase_of(record)
    return PodRow(
        namespace=record.namespace, name=record.name, uid=record.uid, job_id=record.job_id, phase=phase,
        reason=reason, node=record.lifecycle.node, age_seconds=max(0, int(now - record.created_at)),
    )


def phase_of(record: PodRecord) -> tuple[str, str]:
    """(phase, reason) from what the state holds."""
    if record.phase == "deleting":
        return "Terminating", ""
    if record.final_status is not None:
        states = [entry.get("state", {}) for entry in record.final_status.get("containers", [])]
        ended = [state["terminated"] for state in states if "terminated" in state]
        failed = [term for term in ended if term.get("exitCode")]
        reason = next((str(term.get("reason", "")) for term in failed), "")
        return ("Failed", reason) if failed else ("Succeeded", "")
    if record.phase in ("submitting", "waiting-backend"):
        return "Pending", record.lifecycle.waiting_reason
    return ("Running", "") if record.lifecycle.node else ("Pending", "")


def age_text(seconds: int) -> str:
    """kubectl's short ages: 45s, 12m, 5h, 3d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def pods_table(rows: list[PodRow]) -> str:
    header = ("NAMESPACE/NAME", "UID", "JOB", "PHASE", "NODE", "AGE")
    lines = [header] + [
        (f"{row.namespace}/{row.name}", row.uid, row.job_id or "-",
         f"{row.phase} ({row.reason})" if row.reason else row.phase, row.node or "-", age_text(row.age_seconds))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in lines)


def pods_json(rows: list[PodRow]) -> str:
    items: list[dict[str, Any]] = [asdict(row) for row in rows]
    return json.dumps(items, indent=2) + "\n"
