"""Shared fixtures: the REAL local backends, started by the project's own scripts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLURM_STATE = Path(os.environ.get("IL_SLURM_STATE", "/tmp/il-slurm"))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A real single-node slurmctld + slurmd (slurm/slurm-up.sh); SLURM_CONF exported for the plugin."""
    # MinJobAge=10: finished jobs leave slurmctld within ~30 s, so the accounting fallback
    # (sacct -c over jobcomp/filetxt) is exercised by the suite, not only in theory
    result = subprocess.run(
        ["bash", str(ROOT / "slurm" / "slurm-up.sh"), str(SLURM_STATE)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SLURM_MIN_JOB_AGE": os.environ.get("SLURM_MIN_JOB_AGE", "10")},
    )
    assert result.returncode == 0, result.stderr
    conf = str(SLURM_STATE / "slurm.conf")
    os.environ["SLURM_CONF"] = conf
    yield {"SLURM_CONF": conf, "state": str(SLURM_STATE)}


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """Real podman configured for this machine, with the locally built images."""
    result = subprocess.run(
        ["bash", str(ROOT / "podman" / "podman-setup.sh")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
