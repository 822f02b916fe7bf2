"""The one way to run a command (core/commands/local.py), on real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from interlink_plugins.core.commands.local import CommandFailed, LocalRunner, run_blocking

# prints, then leaves a child behind that keeps the command's stdout and stderr open for 60 s (like
# podman's conmon of a pod's infra container); the child's pid goes to stderr
LEAVES_A_DAEMON = ["sh", "-c", "echo started; sleep 60 & echo $! >&2"]


def _reap(stderr: bytes) -> None:
    os.kill(int(stderr.split()[-1]), signal.SIGKILL)


def test_a_command_is_done_when_it_exits_not_when_its_daemon_closes_the_output() -> None:
    result = asyncio.run(LocalRunner().run(LEAVES_A_DAEMON, timeout=10))
    _reap(result.stderr)
    assert result.ok and result.stdout == b"started\n"


def test_the_blocking_twin_too() -> None:
    result = run_blocking(LEAVES_A_DAEMON, timeout=10)
    _reap(result.stderr)
    assert result.returncode == 0 and result.stdout == b"started\n"


def test_stdin_exit_code_and_both_streams() -> None:
    result = asyncio.run(LocalRunner().run(["sh", "-c", "cat; echo oops >&2; exit 3"], timeout=10, stdin=b"in\n"))
    assert (result.returncode, result.stdout, result.stderr) == (3, b"in\n", b"oops\n")


@pytest.mark.parametrize("blocking", [False, True])
def test_a_command_that_does_not_exit_is_killed_with_its_group(blocking: bool, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # 5 s: the shell must have written the child's pid before the kill, on a loaded machine too
    argv = ["sh", "-c", "sleep 60 & echo $! > child; wait"]
    with pytest.raises(CommandFailed, match="timed out after 5s"):
        if blocking:
            run_blocking(argv, timeout=5)
        else:
            asyncio.run(LocalRunner().run(argv, timeout=5))
    child = int((tmp_path / "child").read_text())
    # the whole group was killed: the child is gone (or a zombie about to be reaped by init); a SIGKILLed
    # process still needs a turn on a CPU to die, which a loaded machine gives it late
    stat = Path(f"/proc/{child}/stat")
    deadline = time.monotonic() + 10
    while stat.exists() and stat.read_text().split()[2] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def _is_gone_or_zombie_reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_a_cancelled_command_is_killed_with_its_group_and_reaped(tmp_path: Path) -> None:
    """A request that goes away (its task cancelled) kills the command's group; the command itself is
    reaped, not left a zombie of the plugin."""
    async def cancel_mid_run() -> int:
        task = asyncio.create_task(LocalRunner().run(["sh", "-c", f"echo $$ > {tmp_path}/pid; sleep 60"], timeout=30))
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return int((tmp_path / "pid").read_text())

    pid = asyncio.run(cancel_mid_run())
    deadline = time.monotonic() + 10
    while not _is_gone_or_zombie_reaped(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _is_gone_or_zombie_reaped(pid)  # killed AND waited for: no /proc entry, not even a zombie


def test_without_pidfd_a_thread_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel before 5.3 (no pidfd_open): the same results, each command waited for by a thread."""
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    result = asyncio.run(LocalRunner().run(["sh", "-c", "cat; exit 4"], timeout=10, stdin=b"x"))
    assert (result.returncode, result.stdout) == (4, b"x")
    with pytest.raises(CommandFailed, match="timed out"):
        asyncio.run(LocalRunner().run(["sleep", "30"], timeout=1))


def test_many_commands_at_once_each_gets_its_own_result() -> None:
    async def many() -> list[bytes]:
        runner = LocalRunner()
        results = await asyncio.gather(*(runner.run(["sh", "-c", f"sleep 0.{i % 3}; echo {i}"], timeout=30)
                                         for i in range(40)))
        return [r.stdout for r in results]

    assert asyncio.run(many()) == [f"{i}\n".encode() for i in range(40)]
