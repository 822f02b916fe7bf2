"""Pod lifecycle load at interLink's real pattern, against any backend of a real plugin.

Every pod goes create -> run -> complete -> logs read -> delete, while each pod is polled with its
own /status request every `status_period` s (interLink's rate) and a share of the pods is followed by
a Follow log stream from the moment it is created. Afterwards: nothing lost (every pod reported
terminated with exit code 0 and its log line served), nothing duplicated (the backend's submission
count), nothing leaked (the data root is empty once every pod is deleted).

Shared by the CI-sized tests and the full-size benchmarks (bench/bench_slurm.py, bench_htcondor.py,
bench_podman.py); the backend-specific parts (scheduler call counts, submission count) are callbacks.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from interlink_plugins.core.podrunner.helpers import HELPERS_DIR
from tests.podfactory import container, log_request, pod_body, status_pod


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


def load_pods(count: int, max_sleep: float, image: str | None = None, prefix: str = "load") -> list[dict[str, Any]]:
    """`count` one-container pods that sleep 1..max_sleep s and print a line naming the pod."""
    rng = random.Random(42)
    bodies = []
    for i in range(count):
        spec = container("c", ["sh", "-c", f"sleep {rng.uniform(1, max_sleep):.1f}; echo done-{i}"],
                         resources={"requests": {"cpu": "100m", "memory": "16Mi"}})
        if image:
            spec["image"] = image
        bodies.append(pod_body(f"{prefix}-{i}", [spec]))
    return bodies


@dataclass
class LifecycleResult:
    pods: int
    window_seconds: float = 0.0
    create_latencies: list[float] = field(default_factory=list)
    status_latencies: list[float] = field(default_factory=list)
    report_delays: list[float] = field(default_factory=list)
    status_requests: int = 0
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    bad_logs: list[str] = field(default_factory=list)
    follows: int = 0
    bad_follows: list[str] = field(default_factory=list)
    deleted: int = 0
    leaked_dirs: list[str] = field(default_factory=list)
    submissions: int | None = None
    server_status_mean_ms: float = float("nan")
    event_loop_lag_p99_s: float = float("nan")

    @property
    def duplicated(self) -> int | None:
        return None if self.submissions is None else self.submissions - self.pods

    def summary(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "window_s": round(self.window_seconds, 1),
            "status_requests": self.status_requests,
            "status_rps": round(self.status_requests / self.window_seconds, 1) if self.window_seconds else None,
            "status_p50_ms": round(percentile(self.status_latencies, 0.5) * 1000, 2),
            "status_p99_ms": round(percentile(self.status_latencies, 0.99) * 1000, 2),
            "server_status_mean_ms": round(self.server_status_mean_ms, 2),
            "event_loop_lag_p99_le_s": self.event_loop_lag_p99_s,
            "create_p50_ms": round(percentile(self.create_latencies, 0.5) * 1000, 1),
            "create_p99_ms": round(percentile(self.create_latencies, 0.99) * 1000, 1),
            "report_delay_max_s": round(max(self.report_delays, default=0.0), 2),
            "report_delay_median_s": round(statistics.median(self.report_delays), 2) if self.report_delays else None,
            "failed": len(self.failed),
            "lost": len(self.lost),
            "bad_logs": len(self.bad_logs),
            "follow_streams": self.follows,
            "bad_follows": len(self.bad_follows),
            "deleted": self.deleted,
            "duplicated": self.duplicated,
            "leaked_job_dirs": len(self.leaked_dirs),
        }

    def problems(self) -> list[str]:
        """What a correct run must not have (empty list = clean)."""
        found = [f"{name}: {items[:5]}" for name, items in (
            ("failed", self.failed), ("lost", self.lost), ("bad logs", self.bad_logs),
            ("bad follow streams", self.bad_follows), ("leaked job dirs", self.leaked_dirs)) if items]
        if self.duplicated:
            found.append(f"duplicated submissions: {self.duplicated}")
        if self.deleted != self.pods:
            found.append(f"deleted {self.deleted} of {self.pods}")
        return found


def _finished_at(status: dict[str, Any]) -> float:
    stamps = [c["state"]["terminated"]["finishedAt"] for c in status["containers"]]
    return max(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)




def _leftovers(data_root: Path) -> list[str]:
    """Job dirs still in the data root (the shared helpers' dir is the plugin's, not a pod's)."""
    if not data_root.is_dir():
        return []
    return sorted(p.name for p in data_root.iterdir() if p.name != HELPERS_DIR)


async def run_lifecycle(
    base_url: str,
    bodies: list[dict[str, Any]],
    *,
    data_root: Path,
    duration: float,
    status_period: float = 5.0,
    follow_every: int = 10,
    create_concurrency: int = 16,
    submissions: Callable[[], int] | None = None,
    leak_grace: float = 60.0,
) -> LifecycleResult:
    """Run every pod of `bodies` through its whole life; see the module docstring."""
    pods = len(bodies)
    result = LifecycleResult(pods=pods)
    limits = httpx.Limits(max_connections=96, max_keepalive_connections=96)
    # Follow streams hold their connection for a pod's whole life: their own client (as `kubectl logs -f`
    # is not the VK's poller), so they never make /status requests queue for a free connection
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client, \
            httpx.AsyncClient(base_url=base_url, timeout=120, limits=httpx.Limits(max_connections=None)) as streams:
        start = time.time()
        semaphore = asyncio.Semaphore(create_concurrency)
        follow_tasks: list[asyncio.Task[None]] = []

        async def follow(index: int, body: dict[str, Any]) -> None:
            """`kubectl logs -f` from creation: refused while the container waits to start, then streamed."""
            result.follows += 1
            expected = f"done-{index}\n".encode()
            received = b""
            try:
                while time.time() - start < duration:
                    async with streams.stream("GET", "/getLogs", json=log_request(body, Follow=True),
                                             timeout=httpx.Timeout(duration + 60)) as stream:
                        if stream.status_code == 200:
                            async for chunk in stream.aiter_bytes():
                                received += chunk
                            break
                        answer = (await stream.aread()).decode(errors="replace")
                    if stream.status_code != 400 or "waiting to start" not in answer:
                        result.bad_follows.append(f"{index}: {stream.status_code} {answer[:80]!r}")
                        return
                    await asyncio.sleep(1)
            except httpx.HTTPError as error:
                result.bad_follows.append(f"{index}: {error!r}")
                return
            if not received.endswith(expected):
                result.bad_follows.append(f"{index}: {received[-80:]!r}")

        async def create(index: int, body: dict[str, Any]) -> None:
            async with semaphore:
                began = time.perf_counter()
                response = await client.post("/create", json=body)
                result.create_latencies.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
            if follow_every and index % follow_every == 0:
                follow_tasks.append(asyncio.create_task(follow(index, body)))

        reported: set[str] = set()

        async def live(index: int, body: dict[str, Any]) -> None:
            """Like interLink's VK: a pod is polled from its creation on."""
            await create(index, body)
            uid = body["pod"]["metadata"]["uid"]
            payload = [status_pod(body)]
            while time.time() - start < duration:
                began = time.perf_counter()
                response = await client.request("GET", "/status", json=payload)
                result.status_latencies.append(time.perf_counter() - began)
                result.status_requests += 1
                assert response.status_code == 200, response.text
                items = response.json()
                if items and all("terminated" in c["state"] for c in items[0]["containers"]):
                    reported.add(uid)
                    result.report_delays.append(time.time() - _finished_at(items[0]))
                    ended = [c["state"]["terminated"] for c in items[0]["containers"]]
                    if any(t["exitCode"] != 0 for t in ended):
                        result.failed.append(f"{index} {uid}: {ended}")
                    logs = await client.request("GET", "/getLogs", json=log_request(body))
                    if logs.status_code != 200 or not logs.text.endswith(f"done-{index}\n"):
                        result.bad_logs.append(f"{index}: {logs.status_code} {logs.text[-80:]!r}")
                    deleted = await client.post("/delete", json=status_pod(body))
                    if deleted.status_code == 200:
                        result.deleted += 1
                    return
                await asyncio.sleep(status_period)

        await asyncio.gather(*(live(i, b) for i, b in enumerate(bodies)))
        result.window_seconds = time.time() - start
        result.lost = [b["pod"]["metadata"]["uid"] for b in bodies if b["pod"]["metadata"]["uid"] not in reported]
        _, pending = await asyncio.wait(follow_tasks, timeout=60) if follow_tasks else (set(), set())
        for task in pending:
            task.cancel()
            result.bad_follows.append("stream still open 60 s after the run")
        # the plugin's own view of /status latency (its histogram), to tell server time from client lag
        metrics = (await client.get("/metrics")).text
        latency = "interlink_plugin_http_request_duration_seconds"
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(f"{latency}_") and 'route="/status"' in line}
        total = sum(v for k, v in samples.items() if k.startswith(f"{latency}_sum"))
        count = sum(v for k, v in samples.items() if k.startswith(f"{latency}_count"))
        result.server_status_mean_ms = 1000 * total / count if count else float("nan")
        result.event_loop_lag_p99_s = histogram_quantile(metrics, "interlink_plugin_event_loop_lag_seconds", 0.99)
        # lost pods still get deleted, so that nothing of the run is left behind
        for body in bodies:
            if body["pod"]["metadata"]["uid"] not in reported:
                await client.post("/delete", json=status_pod(body))
    deadline = time.monotonic() + leak_grace
    while _leftovers(data_root) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    result.leaked_dirs = _leftovers(data_root)
    if submissions is not None:
        result.submissions = submissions()
    return result
