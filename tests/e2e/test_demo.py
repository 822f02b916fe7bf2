"""slurm/demo.sh, the README's first command: it runs (on a SLURM cluster of its own, started and stopped by
the demo) and prints what it claims: the pod is a SLURM job naming it, the container's output, the ping."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port

pytestmark = pytest.mark.e2e


def sections(output: str) -> dict[str, list[str]]:
    """`== title` -> the lines printed under it."""
    found: dict[str, list[str]] = {}
    title = ""
    for line in output.splitlines():
        if line.startswith("== "):
            title = line[3:]
            found[title] = []
        elif title:
            found[title].append(line)
    return found


def test_the_demo_prints_what_it_claims(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_EXIT": "1", "DEMO_PORT": str(free_port()), "DEMO_DIR": str(tmp_path / "demo"),
           "IL_SLURM_STATE": str(tmp_path / "slurm"), "SLURMCTLD_PORT": str(free_port()),
           "SLURMD_PORT": str(free_port())}
    env.pop("SLURM_CONF", None)  # the demo's own cluster, not the suite's
    demo = subprocess.run(["bash", "slurm/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    printed = sections(demo.stdout)
    created = json.loads(printed["POST /create"][0])
    job_id = created["PodJID"]
    assert job_id.isdigit(), created
    (squeue_title,) = [title for title in printed if title.startswith("squeue -j ")]
    assert squeue_title.startswith(f"squeue -j {job_id}:")
    job, state, comment = printed[squeue_title][0].split()
    assert job == job_id and state in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")
    assert comment == f"il:{created['PodUID']}@default"
    status = json.loads(printed["GET /status"][0])
    assert status[0]["JID"] == job_id and status[0]["containers"][0]["state"]["terminated"]["exitCode"] == 0
    assert printed["GET /getLogs"][:3] == [
        f"hello from a SLURM job on node {socket.gethostname()}",
        "a configMap file",
        "env arrives byte for byte: $(not run) 'q'",
    ]
    assert json.loads(printed["GET /status [] (ping)"][0])["status"] == "ok"
    # the demo stopped its cluster and its plugin
    assert not list((tmp_path / "slurm" / "run").glob("*.pid"))
    assert not re.search(r"Traceback", demo.stderr)
