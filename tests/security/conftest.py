"""Shared fixtures of the security suite: every test here is an attack run for real.

Each test states the attack in its docstring and asserts the defence. Tests are marked `security`
(and `e2e` where they need real daemons) so `pytest -m security` runs the whole suite.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.security)


def ensure_user(name: str, uid: int) -> int:
    """An unprivileged local account for jobs or attackers (created once, kept between runs)."""
    if subprocess.run(["id", "-u", name], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["useradd", "-M", "-u", str(uid), "-s", "/bin/sh", name], check=True, timeout=30)
    return int(subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True, timeout=30).stdout)


def open_path_to(path: Path) -> None:
    """Let other uids traverse from /tmp down to `path` (pytest's tmp dirs are 0700)."""
    while str(path).startswith("/tmp/") and path != Path("/tmp"):
        path.chmod((path.stat().st_mode & 0o7777) | 0o711)
        path = path.parent


@pytest.fixture(scope="session")
def job_user() -> Callable[[str, int], int]:
    """Make (or find) an unprivileged user: `uid = job_user("ilsec-a", 4301)`."""
    if os.geteuid() != 0:
        pytest.skip("the security suite creates users: run as root")
    return ensure_user
