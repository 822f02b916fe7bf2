"""Load at interLink's real pattern against a real plugin and the real SLURM cluster.

Shared by the CI-sized test (tests/e2e/test_poll_load.py) and the full-size benchmark
(bench/bench_slurm.py). Scheduler calls are counted by wrappers around the REAL commands
(stand-ins in name only: each one logs the call and execs the real binary).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lifecycle import LifecycleResult, load_pods, run_lifecycle

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "sinfo")
CONFIG_KEYS = {"sbatch": "SbatchPath", "squeue": "SqueuePath", "sacct": "SacctPath", "scancel": "ScancelPath",
               "sinfo": "SinfoPath"}


def counting_wrappers(directory: Path) -> dict[str, str]:
    """Counting wrappers around the real SLURM commands; returns the plugin config keys."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, str] = {}
    for name in COMMANDS:
        real = shutil.which(name)
        assert real, f"{name} not installed"
        wrapper = directory / name
        wrapper.write_text(
            "#!/bin/bash\n"
            f'printf "%s\\n" "$EPOCHREALTIME" >> {directory}/{name}.calls\n'
            f'exec {real} "$@"\n'
        )
        wrapper.chmod(0o755)
        config[CONFIG_KEYS[name]] = str(wrapper)
    return config


def calls(directory: Path, name: str, start: float = 0.0, end: float = float("inf")) -> int:
    path = directory / f"{name}.calls"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().split() if start <= float(line) <= end)


@dataclass
class LoadResult:
    """A lifecycle run on SLURM plus the scheduler calls the plugin made during it."""

    lifecycle: LifecycleResult
    interval: float
    squeue_calls: int
    other_calls: dict[str, int]

    @property
    def squeue_budget(self) -> int:
        return int(self.lifecycle.window_seconds / self.interval) + 1

    def summary(self) -> dict[str, Any]:
        return {**self.lifecycle.summary(), "poll_interval_s": self.interval, "squeue_calls": self.squeue_calls,
                "squeue_budget": self.squeue_budget, "other_scheduler_calls": self.other_calls}


async def run_load(
    base_url: str,
    wrappers: Path,
    data_root: Path,
    *,
    pods: int,
    duration: float,
    interval: float,
    max_sleep: float = 20.0,
    follow_every: int = 10,
) -> LoadResult:
    """`pods` pods through their whole life (bench/lifecycle.py), counting the SLURM calls meanwhile."""
    start = time.time()
    lifecycle = await run_lifecycle(base_url, load_pods(pods, max_sleep), data_root=data_root, duration=duration,
                                    follow_every=follow_every, submissions=lambda: calls(wrappers, "sbatch"))
    end = start + lifecycle.window_seconds
    return LoadResult(lifecycle, interval, calls(wrappers, "squeue", start, end),
                      {n: calls(wrappers, n, start, end) for n in COMMANDS if n != "squeue"})
