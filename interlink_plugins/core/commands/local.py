"""The one way to run a command: argv list, timeout, kill on timeout, structured result.

Async so the event loop never blocks; ``LocalRunner`` runs on this host. Other runners (SSH)
implement the same ``CommandRunner`` protocol.

A command is done when it exits. Its output goes to unlinked temporary files, not pipes: a daemon it
leaves behind (podman's conmon for a pod's infra container, a backgrounded helper) may keep its stdout
open for as long as it lives, and waiting for the pipes' end would turn every such success into a
timeout (and the kill of the command's process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

log = logging.getLogger(__name__)

# The plugin itself runs with umask 077 (what it creates is its own). The commands it runs get the usual
# 022 back: sbatch hands the submitter's umask to the job, and pods keep Kubernetes' file modes.
CHILD_UMASK = 0o022


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode(errors="replace").strip() or self.text.strip()


class CommandFailed(RuntimeError):
    """The command could not be run at all, or ran out of time."""

    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"{argv[0] if argv else '?'}: {detail}")
        self.argv = tuple(argv)
        self.detail = detail


class CommandRunner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...


class LocalRunner:
    """Runs commands on this host in their own process group (killed whole on timeout).

    Started with ``subprocess.Popen`` (CPython's vfork path: no copy of the plugin's page tables, nothing
    run in the child before exec) from the event loop, and waited for through a pidfd the loop watches:
    no pipe, no thread per command. A create spent most of its event-loop time in the fork that
    ``create_subprocess_exec`` with a ``preexec_fn`` needs (uvloop has no ``umask=``)."""

    def __init__(self, base_env: Mapping[str, str] | None = None) -> None:
        self._base_env = dict(os.environ if base_env is None else base_env)

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        started = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, _input(stdin) as given:
            try:
                proc = subprocess.Popen(  # timeout: asyncio.timeout below; on expiry its group is SIGKILLed
                    list(argv), stdin=given, stdout=out, stderr=err, env={**self._base_env, **(env or {})},
                    start_new_session=True, umask=CHILD_UMASK,
                )
            except OSError as exc:
                raise CommandFailed(argv, exc.strerror or str(exc)) from exc
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that arrives as the command exits
                async with asyncio.timeout(timeout):
                    await exited(proc)
            except TimeoutError:
                _kill_group(proc.pid)
                try:
                    async with asyncio.timeout(5):
                        await exited(proc)
                except TimeoutError:  # stuck in the kernel (D state): reaped whenever it goes
                    _reap_later(proc)
                raise CommandFailed(argv, f"timed out after {timeout:g}s and was killed") from None
            except asyncio.CancelledError:
                _kill_group(proc.pid)
                _reap_later(proc)
                raise
            stdout, stderr = _read_back(out), _read_back(err)
        result = CommandResult(tuple(argv), proc.returncode, stdout, stderr, time.monotonic() - started)
        log.debug("ran %s rc=%s in %.3fs", argv[0], result.returncode, result.seconds)
        return result


@contextlib.contextmanager
def _input(data: bytes | None) -> Iterator[int | IO[bytes]]:
    """The command's stdin: /dev/null, or ``data`` in an unlinked temp file (no pipe to feed)."""
    if data is None:
        yield subprocess.DEVNULL
        return
    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.seek(0)
        yield file


async def exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without blocking the loop, and reap it: a pidfd the loop watches, or
    (a kernel before 5.3) a thread of its own."""
    if proc.poll() is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here: one waiting thread per command
        threading.Thread(target=lambda: (proc.wait(), loop.call_soon_threadsafe(wake)), daemon=True).start()
        await done
        return proc.returncode
    try:
        loop.add_reader(pidfd, wake)
        try:
            await done
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return proc.wait()  # it has exited: reaps at once


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """A killed command whose waiter was cancelled: reaped by a thread, never left a zombie."""
    threading.Thread(target=proc.wait, daemon=True).start()


def _read_back(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_blocking(argv: Sequence[str], *, timeout: float) -> CommandResult:
    """The blocking twin of LocalRunner.run, for worker threads and the CLI (same kill-on-timeout)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(  # bounded: wait(timeout=...) below, killed when it expires
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                umask=CHILD_UMASK,
            )
        except OSError as exc:
            raise CommandFailed(argv, exc.strerror or str(exc)) from exc
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            raise CommandFailed(argv, f"timed out after {timeout:g}s and was killed") from None
        return CommandResult(tuple(argv), proc.returncode, _read_back(out), _read_back(err), time.monotonic() - started)
