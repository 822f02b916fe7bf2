"""Load at interLink's real pattern against a real plugin and the real SLURM cluster.

Shared by the CI-sized test (tests/e2e/test_poll_load.py) and the full-size benchmark
(bench/bench_slurm.py). Scheduler calls are counted by wrappers around the REAL commands
(stand-ins in name only: each one logs the call and execs the real binary).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.podfactory import container, pod_body, status_pod

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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def histogram_quantile(metrics_text: str, name: str, q: float) -> float:
    """Upper bound of the bucket holding quantile q of a Prometheus histogram (all label sets summed)."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            labels, value = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            edge = float("inf") if bound == "+Inf" else float(bound)
            buckets[edge] = buckets.get(edge, 0.0) + float(value)
    if not buckets or not buckets[float("inf")]:
        return float("nan")
    total = buckets[float("inf")]
    return next(edge for edge in sorted(buckets) if buckets[edge] >= q * total)


@dataclass
class LoadResult:
    pods: int
    window_seconds: float
    interval: float
    squeue_calls: int
    other_calls: dict[str, int]
    create_latencies: list[float] = field(default_factory=list)
    status_latencies: list[float] = field(default_factory=list)
    report_delays: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    status_requests: int = 0
    server_status_mean_ms: float = float("nan")
    event_loop_lag_p99_s: float = float("nan")

    @property
    def squeue_budget(self) -> int:
        return int(self.window_seconds / self.interval) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "window_s": round(self.window_seconds, 1),
            "poll_interval_s": self.interval,
            "squeue_calls": self.squeue_calls,
            "squeue_budget": self.squeue_budget,
            "other_scheduler_calls": self.other_calls,
            "status_requests": self.status_requests,
            "status_rps": round(self.status_requests / self.window_seconds, 1),
            "status_p50_ms": round(percentile(self.status_latencies, 0.5) * 1000, 2),
            "status_p99_ms": round(percentile(self.status_latencies, 0.99) * 1000, 2),
            "server_status_mean_ms": round(self.server_status_mean_ms, 2),
            "event_loop_lag_p99_le_s": self.event_loop_lag_p99_s,
            "create_p50_ms": round(percentile(self.create_latencies, 0.5) * 1000, 1),
            "create_p99_ms": round(percentile(self.create_latencies, 0.99) * 1000, 1),
            "report_delay_max_s": round(max(self.report_delays, default=0.0), 2),
            "report_delay_median_s": round(statistics.median(self.report_delays), 2) if self.report_delays else None,
            "lost": len(self.lost),
        }


def _finished_at(status: dict[str, Any]) -> float:
    stamps = [c["state"]["terminated"]["finishedAt"] for c in status["containers"]]
    return max(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)


async def run_load(
    base_url: str,
    wrappers: Path,
    *,
    pods: int,
    duration: float,
    interval: float,
    status_period: float = 5.0,
    max_sleep: float = 20.0,
    create_concurrency: int = 16,
    poll_until_end: bool = False,
) -> LoadResult:
    """Create `pods` pods at once, poll each every `status_period` s (interLink's rate) until all end."""
    rng = random.Random(42)
    bodies = [
        pod_body(f"load-{i}", [container("c", ["sh", "-c", f"sleep {rng.uniform(1, max_sleep):.1f}; echo done-{i}"],
                                         resources={"requests": {"cpu": "100m", "memory": "16Mi"}})])
        for i in range(pods)
    ]
    result = LoadResult(pods=pods, window_seconds=0.0, interval=interval, squeue_calls=0, other_calls={})
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        start = time.time()
        semaphore = asyncio.Semaphore(create_concurrency)

        async def create(body: dict[str, Any]) -> None:
            async with semaphore:
                began = time.perf_counter()
                response = await client.post("/create", json=body)
                result.create_latencies.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(create(b) for b in bodies))
        seen_done: dict[str, float] = {}

        async def watch(index: int, body: dict[str, Any]) -> None:
            uid = body["pod"]["metadata"]["uid"]
            await asyncio.sleep(status_period * index / max(pods, 1))
            payload = [status_pod(body)]
            # like interLink, keep polling every pod (finished ones too) until the run ends
            while time.time() - start < duration and (poll_until_end or len(seen_done) < pods):
                began = time.perf_counter()
                response = await client.request("GET", "/status", json=payload)
                result.status_latencies.append(time.perf_counter() - began)
                result.status_requests += 1
                assert response.status_code == 200
                items = response.json()
                done = items and all("terminated" in c["state"] for c in items[0]["containers"])
                if done and uid not in seen_done:
                    seen_done[uid] = time.time()
                    result.report_delays.append(seen_done[uid] - _finished_at(items[0]))
                await asyncio.sleep(status_period)

        await asyncio.gather(*(watch(i, b) for i, b in enumerate(bodies)))
        end = time.time()
        result.window_seconds = end - start
        result.lost = [b["pod"]["metadata"]["uid"] for b in bodies if b["pod"]["metadata"]["uid"] not in seen_done]
        result.squeue_calls = calls(wrappers, "squeue", start, end)
        result.other_calls = {n: calls(wrappers, n, start, end) for n in COMMANDS if n != "squeue"}
        # the plugin's own view of /status latency (its histogram), to tell server time from client lag
        metrics = (await client.get("/metrics")).text
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("interlink_plugin_http_request_seconds_") and 'route="/status"' in line}
        total = sum(v for k, v in samples.items() if k.startswith("interlink_plugin_http_request_seconds_sum"))
        count = sum(v for k, v in samples.items() if k.startswith("interlink_plugin_http_request_seconds_count"))
        result.server_status_mean_ms = 1000 * total / count if count else float("nan")
        result.event_loop_lag_p99_s = histogram_quantile(metrics, "interlink_plugin_event_loop_lag_seconds", 0.99)
        await asyncio.gather(*(client.post("/delete", json=status_pod(b)) for b in bodies))
    return result
