"""podman's answers read into plain values: its JSON lists, times, labels and container states.

Pure functions over what ``podman ps`` / ``podman pod ps`` / ``podman inspect`` print; nothing here
runs podman or touches a file.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from interlink_plugins.core.records.status import epoch_rfc3339
from interlink_plugins.podman.spec import L_CONTAINER, L_RUN
from interlink_plugins.podman.states import phase_of

_ZERO_TIME = "0001-01-01"
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Inspected:
    """The part of a container's ``podman inspect`` the status needs."""

    state: str
    started: str
    finished: str
    exit_code: int | None
    oom_killed: bool


def parse_time(text: str) -> float | None:
    """RFC 3339 with up to nanoseconds (podman inspect) -> epoch seconds; None for podman's zero time."""
    match = _TIME.match(text.strip())
    if not match or text.startswith(_ZERO_TIME):
        return None
    base, fraction, zone = match.groups()
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def utc_text(text: str) -> str:
    """podman's times as the wire wants them: RFC 3339 UTC with Z (nanoseconds kept)."""
    if not text or text.startswith(_ZERO_TIME):
        return ""
    if text.endswith("Z"):
        return text
    seconds = parse_time(text)
    return epoch_rfc3339(seconds) if seconds is not None else ""


def json_list(raw: bytes) -> list[dict[str, Any]]:
    """A podman JSON answer as a list of objects (one object: a list of one; anything else: empty)."""
    text = raw.decode(errors="replace").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if isinstance(data, dict):
        data = [data]
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def int_or_none(value: Any) -> int | None:
    """A positive int (a pid), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def inspected(item: Mapping[str, Any]) -> Inspected:
    """One container of ``podman inspect --format json``."""
    state = item.get("State") or {}
    code = state.get("ExitCode")
    return Inspected(
        state=str(state.get("Status", "")),
        started=utc_text(str(state.get("StartedAt") or "")),
        finished=utc_text(str(state.get("FinishedAt") or "")),
        exit_code=code if isinstance(code, int) else None,
        oom_killed=bool(state.get("OOMKilled")),
    )


def run_times(entry: Mapping[str, Any], phase: str, seen: Inspected | None) -> tuple[str, str]:
    """(started, finished) of a container run: from its inspect when it is current, else from the
    epoch seconds ``podman ps`` gives; finished only for a run that ended."""
    started = seen.started if seen else ""
    finished = seen.finished if seen and phase == "ended" else ""
    if not started and isinstance(entry.get("StartedAt"), int) and entry["StartedAt"] > 0:
        started = epoch_rfc3339(entry["StartedAt"])
    if phase == "ended" and not finished and isinstance(entry.get("ExitedAt"), int) and entry["ExitedAt"] > 0:
        finished = epoch_rfc3339(entry["ExitedAt"])
    return started, finished


def running_runs(entries: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, str, int | None, float]]:
    """container name -> (run, podman id, pid, start time) of its running run, from one ``podman ps``."""
    running: dict[str, tuple[int, str, int | None, float]] = {}
    for entry in entries:
        labels = entry.get("Labels") or {}
        if phase_of(str(entry.get("State", ""))) != "running":
            continue
        with contextlib.suppress(ValueError):
            started = entry.get("StartedAt")
            running[str(labels.get(L_CONTAINER, ""))] = (
                int(labels.get(L_RUN, "")), str(entry.get("Id", "")), int_or_none(entry.get("Pid")),
                float(started) if isinstance(started, int | float) and started > 0 else time.time(),
            )
    return running


def devices_label(text: str) -> dict[str, list[str]]:
    """The GPU label of a pod (kind -> CDI devices); empty when absent or not what the plugin wrote."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(d) for d in v] for k, v in data.items() if isinstance(v, list)}
