"""Lifecycle hooks and kills of the Podman backend, the kubelet's way.

* postStart runs right after ``podman run`` started the container; until it finished the container
  is reported waiting (ContainerCreating), not running. A failing postStart kills the container
  (reason PostStartHookError, the hook's output in the message); the restart policy decides.
* A kill (probe failure, failed postStart) and a delete run preStop first, within the grace period,
  then ``podman stop`` gives SIGTERM and SIGKILL after what is left of the grace period (at least
  2 s more when the hook used it all up, as the kubelet).

Why the plugin killed a run is kept in its run directory (``killed``), so the status after a plugin
restart says it too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from interlink_plugins.core import safefs
from interlink_plugins.podman.handlers import Outcome

POST_START_TIMEOUT = 300.0  # seconds a postStart hook may take (Kubernetes has no bound; the plugin needs one)
KILLED_FILE = "killed"
EXTRA_AFTER_HOOK = 2.0  # the kubelet's minimum grace for the container after a preStop hook used it all
_KILLED_MAX = 4096

Handler = tuple[str, ...]  # (action, *words) of core.runtimes.probes.parse_handler
RunHook = Callable[[Handler, float], Awaitable[Outcome]]


def _killed_location(job_dir: Path, container: str, run: int | str) -> safefs.Location:
    return safefs.job_location(job_dir) / "c" / container / str(run) / KILLED_FILE


def write_killed(job_dir: Path, container: str, run: int, reason: str, message: str) -> None:
    """Blocking: record why the plugin kills this run (before it does), through safefs like every job-dir file."""
    data = json.dumps({"reason": reason, "message": message, "at": time.time()}).encode()
    safefs.write_bytes(_killed_location(job_dir, container, run), data)


def read_killed(job_dir: Path, container: str, run: int | str) -> tuple[str, str] | None:
    """Blocking: the recorded kill of a run, if any (read bounded, never through a symlink)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        raw = safefs.read_bytes(_killed_location(job_dir, container, run), _KILLED_MAX)
        if raw is None:
            return None
        data = json.loads(raw)
        return str(data["reason"]), str(data["message"])
    return None


async def pre_stop_then_stop(
    run_hook: RunHook, pre_stop: Sequence[str], grace: float, stop: Callable[[float], Awaitable[None]],
    log_hook: Callable[[Outcome], None],
) -> None:
    """preStop (bounded by ``grace``), then ``stop(seconds left)`` (SIGTERM now, SIGKILL after)."""
    started = time.monotonic()
    left = grace
    if pre_stop and grace > 0:
        outcome = await run_hook(tuple(pre_stop), grace)
        log_hook(outcome)
        left = max(grace - (time.monotonic() - started), EXTRA_AFTER_HOOK)
    await stop(left)
