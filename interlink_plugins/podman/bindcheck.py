"""The Podman backend's start step for bind sources: re-checked (core/bindcheck.py) right before every
``podman run`` / ``podman start``; a refused source keeps the container waiting, as the kubelet does,
with ``CreateContainerConfigError`` and a message naming the volume (retried with the back-off)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import MutableMapping
from pathlib import Path

from interlink_plugins.core import bindcheck
from interlink_plugins.podman.plan import CreateError
from interlink_plugins.podman.spec import ContainerSpec

log = logging.getLogger(__name__)


async def check_binds(
    errors: MutableMapping[str, CreateError], pod_id: str, container: ContainerSpec, run: int, run_dir: Path
) -> bool:
    """True when every bind source of `container` may be bound now; else the refusal is recorded in
    `errors` (the pod's create errors) and in the run's ``error`` file, and the start must not happen."""
    if not container.binds:
        return True
    problem = await asyncio.to_thread(bindcheck.refusal, container.binds)
    if not problem:
        return True
    previous = errors.get(container.name)
    attempts = previous.attempts + 1 if previous is not None and previous.run == run else 1
    now = time.time()
    errors[container.name] = CreateError(run, bindcheck.REASON, problem, now, attempts)
    record = {"create": True, "reason": bindcheck.REASON, "message": problem, "at": now, "attempts": attempts}
    await asyncio.to_thread(_write_record, run_dir / "error", json.dumps(record))
    log.warning("podman pod %s: container %s run %s not started: %s", pod_id, container.name, run, problem)
    return False


def _write_record(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
