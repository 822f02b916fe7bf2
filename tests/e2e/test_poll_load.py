"""CI-sized proof of the polling contract and of the pod lifecycle under load (full size: bench/bench_slurm.py --load-pods 1000 --load-seconds 300).

Counting wrappers around the REAL SLURM commands count scheduler calls while pods are polled at
interLink's rate (one /status request per pod every 5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.slurm_load import counting_wrappers, run_load
from tests.harness import PluginProcess

pytestmark = pytest.mark.e2e


def test_one_squeue_per_interval_and_prompt_completion(plugin_factory: Callable[..., PluginProcess], tmp_path: Path) -> None:
    wrappers = tmp_path / "wrappers"
    interval = 2.0
    plugin = plugin_factory(PollInterval=interval, **counting_wrappers(wrappers))
    result = asyncio.run(run_load(plugin.client.base_url.__str__().rstrip("/"), wrappers, plugin.workdir / "jobs",
                                  pods=120, duration=150, interval=interval, max_sleep=20))
    summary = result.summary()
    print(summary)
    assert result.lifecycle.problems() == [], summary
    assert result.squeue_calls <= result.squeue_budget, summary
    assert max(result.lifecycle.report_delays) <= 2 * interval + 5, summary
    assert result.other_calls["sbatch"] == 120 and result.lifecycle.follows == 12, summary
