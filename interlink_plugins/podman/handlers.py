"""Run one probe or lifecycle handler against a podman container, from outside it, as the kubelet does.

* ``exec``: ``podman exec`` into the container. A run that outlives its timeout is killed: the podman
  client with its process group, and the exec'd processes inside the container (podman leaves them
  running when its client dies), found by a per-run marker in their environment and the container's
  pid namespace.
* ``http`` / ``tcp``: from the host into the pod's network namespace (the infra container's):
  ``nsenter --target PID --net`` around templates/probe.sh (curl, else bash ``/dev/tcp``), the same
  helper the SLURM pod runner uses, so every backend answers alike (200-399 is success). The pod's
  own namespace, never a published host port.
* ``sleep`` (hooks only): waits in the plugin.

Every value is an argv word; nothing is given to a shell parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from interlink_plugins.core.commands.local import CommandFailed, CommandRunner

EXEC_MARKER = "INTERLINK_EXEC_ID"
DETAIL_MAX = 200  # characters of a failed handler's output kept for the status message
_ENVIRON_MAX = 256 * 1024


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str = ""  # why it failed: "timed out after 1s", "exit 1: ...", "status 503"
    timed_out: bool = False


def probe_helper() -> str:
    """templates/probe.sh as installed with the package (run by bash, never executed directly)."""
    return str(Path(str(resources.files("interlink_plugins").joinpath("templates", "probe.sh"))))


def _detail(code: int, text: str) -> str:
    line = " ".join(text.split())[:DETAIL_MAX]
    return f"exit {code}" + (f": {line}" if line else "")


def netns_argv(pid: int) -> list[str]:
    """Enter the network namespace of ``pid`` (the pod's infra process). A rootless plugin enters the
    owning user namespace first (it has no capability in the host's)."""
    argv = ["nsenter", f"--target={pid}", "--net"]
    if os.geteuid() != 0:
        argv[2:2] = ["--user", "--preserve-credentials"]
    return argv


async def run_handler(
    runner: CommandRunner,
    podman: Sequence[str],
    action: str,
    words: Sequence[str],
    *,
    container: str,
    netns_pid: int | None,
    container_pid: int | None,
    timeout: float,
) -> Outcome:
    """One run of a handler; ``container`` is the podman container's name or id."""
    if action == "sleep":
        await asyncio.sleep(min(float(words[0]), timeout))
        return Outcome(True)
    if action == "exec":
        marker = secrets.token_hex(8)
        argv = [*podman, "exec", f"--env={EXEC_MARKER}={marker}", "--", container, *words]
    elif action in ("http", "tcp"):
        if not netns_pid:
            return Outcome(False, "the pod's network namespace is not known yet")
        argv = [*netns_argv(netns_pid), "bash", probe_helper(), action, *words]
    else:
        return Outcome(False, f"{action} handlers are not supported")
    try:
        result = await runner.run(argv, timeout=timeout)
    except CommandFailed as exc:
        if action == "exec" and container_pid:
            killed = await asyncio.to_thread(kill_exec_leftovers, container_pid, marker)
            if killed:
                return Outcome(False, f"timed out after {timeout:g}s (killed {killed} process(es) in the container)",
                               timed_out=True)
        timed_out = "timed out" in exc.detail
        return Outcome(False, f"timed out after {timeout:g}s" if timed_out else exc.detail, timed_out=timed_out)
    if result.ok:
        return Outcome(True)
    text = (result.stderr or result.stdout).decode(errors="replace")
    return Outcome(False, _detail(result.returncode, text))


def kill_exec_leftovers(container_pid: int, marker: str) -> int:
    """SIGKILL every process in the container's pid namespace whose environment carries ``marker``
    (the exec'd command and what it started); the count killed. Blocking: call from a thread."""
    try:
        namespace = os.readlink(f"/proc/{container_pid}/ns/pid")
    except OSError:
        return 0
    needle = f"{EXEC_MARKER}={marker}".encode() + b"\0"
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry.name}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read(_ENVIRON_MAX)
            if environ.startswith(needle) or b"\0" + needle in environ:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed
