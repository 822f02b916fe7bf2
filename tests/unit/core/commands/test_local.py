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
