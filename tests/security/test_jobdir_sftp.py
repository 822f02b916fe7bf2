"""DataTransfer sftp: the runner-state dump of the login node never follows a symlink and never lets one pod
forge another pod's state (REAL login node: slurm/loginnode, sshd, SLURM; run under
`flock /tmp/il-loginnode.lock`)."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import pytest

from tests.e2e.test_loginnode import in_node, loginnode, ssh_config, ssh_plugin  # noqa: F401 - fixtures
from tests.harness import PluginProcess, exit_codes, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e


def running(plugin: PluginProcess, body: dict[str, Any]) -> dict[str, Any]:
    return plugin.wait_status(body, lambda s: "running" in states(s)["main"], timeout=120)


def test_the_dump_never_follows_a_symlink_nor_takes_a_forged_name(ssh_plugin: Any) -> None:  # noqa: F811
    """Attack: pod A makes `c/x\\n<B's job dir>/c/main/` with an `exit` in it (a newline in a directory
    name) and links its `reason` to a login-node file its own status should never show; the line-based
    `grep -R` dump gave pod B the exit code A wrote and A's status the file's content."""
    data_root = f"/home/hpcuser/il-sec-jobdir-{os.getpid()}"
    canary_text = f"LOGIN-NODE-CANARY-{secrets.token_hex(6)}"
    canary = f"/home/hpcuser/.il-sec-canary-{os.getpid()}"
    assert in_node("sh", "-c", f"umask 077; echo {canary_text} > {canary}", user="hpcuser").returncode == 0
    plugin = ssh_plugin(**ssh_config(), DataTransfer="sftp", DataRootFolder=data_root, ContainerRuntime="none")
    victim = pod_body("victim", [container("main", ["sh", "-c", "sleep 45"])])
    plugin.create(victim)
    running(plugin, victim)
    victim_dir = f"{data_root}/default-{victim['pod']['metadata']['uid']}"
    attacker = pod_body("attacker", [container("main", ["sh", "-c", "x"])])
    job = f"{data_root}/default-{attacker['pod']['metadata']['uid']}"
    plant = (
        f"J='{job}'; forged=\"$J/c/$(printf 'x\\n%s' '{victim_dir}')/c/main\"; mkdir -p \"$forged\" && "
        f"echo 42 > \"$forged/exit\"; ln -s '{canary}' \"$J/c/main/reason\"; echo 1 > \"$J/c/main/exit.n\"; "
        "mv \"$J/c/main/exit.n\" \"$J/c/main/exit\"; sleep 40"
    )
    attacker["pod"]["spec"]["containers"][0]["command"][2] = plant
    plugin.create(attacker)
    shown = plugin.wait_status(attacker, lambda s: "terminated" in states(s)["main"], timeout=120)
    deadline = time.monotonic() + 8  # several polls, each with a dump
    while time.monotonic() < deadline:
        status = plugin.status(victim)
        assert status is not None and "running" in states(status)["main"], status
        time.sleep(1)
    assert exit_codes(shown) == {"main": 1}
    assert canary_text not in str(shown)
    in_node("rm", "-f", canary)
