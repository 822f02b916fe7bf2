"""Retention: job dirs and logs of finished pods that Kubernetes never deleted expire.

A pod whose status is frozen (every container terminated and the job gone, or SubmitFailed) and
whose last container finished more than ``RetentionDays`` ago is forgotten like a deleted pod:
its job dir (logs included) is removed and its record dropped. Running and pending pods never
expire. The service sweeps at start and then once an hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from interlink_plugins.core.records.state import PodRecord

SWEEP_INTERVAL_SECONDS = 3600.0


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def finished_at(record: PodRecord) -> float | None:
    """When the pod ended: the latest finishedAt of its frozen status (None while it is not final)."""
    status = record.final_status
    if status is None:
        return None
    latest: float | None = None
    for entry in list(status.get("containers", [])) + list(status.get("initContainers", [])):
        terminated = (entry.get("state") or {}).get("terminated") or {}
        stamp = _epoch(terminated.get("finishedAt"))
        if stamp is not None and (latest is None or stamp > latest):
            latest = stamp
    return latest if latest is not None else record.created_at


def expired(records: Iterable[PodRecord], now: float, retention_days: float) -> list[PodRecord]:
    """Finished pods older than the retention (none when retention_days is 0: keep forever)."""
    if retention_days <= 0:
        return []
    horizon = now - retention_days * 86400.0
    out = []
    for record in records:
        if record.phase == "deleting":
            continue
        ended = finished_at(record)
        if ended is not None and ended < horizon:
            out.append(record)
    return out
