"""CI-sized pod lifecycle load on Podman and HTCondor (SLURM: test_poll_load.py).

Every pod goes create -> run -> complete -> logs -> delete while each is polled at interLink's rate,
some followed by a Follow stream (bench/lifecycle.py). Full size: bench/bench_podman.py --load-pods 200,
bench/bench_htcondor.py --load-pods 1000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.lifecycle import load_pods, run_lifecycle
from tests.e2e.kits import BackendKit, open_kit

pytestmark = pytest.mark.e2e

SIZES = {"podman": 24, "htcondor": 30}


@pytest.fixture(params=sorted(SIZES))
def kit(request: Any, tmp_path: Path) -> Iterator[BackendKit]:
    # a fixture, so that the kit's plugins are stopped (and its jobs removed) when the test fails too
    yield from open_kit(request, tmp_path, request.param)


def test_pods_live_and_leave_cleanly_under_load(kit: BackendKit) -> None:
    size = SIZES[kit.name]
    plugin = kit.plugin(PollInterval=2)
    bodies = load_pods(size, max_sleep=8, prefix=f"life-{kit.name}")
    result = asyncio.run(run_lifecycle(
        str(plugin.client.base_url).rstrip("/"), bodies, data_root=plugin.workdir / "jobs", duration=240,
        status_period=2.0, follow_every=4,
        submissions=lambda: sum(len(kit.jobs_for(plugin, b["pod"]["metadata"]["uid"])) for b in bodies)))
    summary = result.summary()
    print(summary)
    assert not result.problems(), "\n".join([str(summary), *result.problems()])
    assert result.follows == len(range(0, size, 4)) and result.submissions == size, summary
    assert max(result.report_delays) <= 2 * 2.0 + 5, summary
