"""Prometheus metrics: one registry per plugin process, fed from the few places that know.

Scheduler calls are timed by MeteredRunner (every command goes through the runner), HTTP by a
middleware, lifecycle events by the service; tracked pods and data-root usage are computed when
scraped or by the poller, never on the /status hot path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from interlink_plugins.core.runner import CommandResult, CommandRunner
from interlink_plugins.tracing import TracedRunner

SCHEDULER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)


class Metrics:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.registry = CollectorRegistry(auto_describe=True)
        self.creates = Counter(
            "interlink_plugin_creates_total", "Pods accepted by /create", ["backend"], registry=self.registry
        )
        self.create_failures = Counter(
            "interlink_plugin_create_failures_total",
            "Creates refused or failed, by reason",
            ["backend", "reason"],
            registry=self.registry,
        )
        self.scheduler_seconds = Histogram(
            "interlink_plugin_scheduler_call_seconds",
            "Scheduler command latency",
            ["backend", "command", "outcome"],
            buckets=SCHEDULER_BUCKETS,
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "interlink_plugin_poll_seconds",
            "Duration of one status poll (all pods)",
            ["backend"],
            buckets=SCHEDULER_BUCKETS,
            registry=self.registry,
        )
        self.log_bytes = Counter(
            "interlink_plugin_log_bytes_served_total",
            "Log bytes sent to interLink",
            ["backend"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "interlink_plugin_http_request_seconds",
            "HTTP latency by route",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.data_root_bytes = Gauge(
            "interlink_plugin_data_root_bytes", "Bytes used under DataRootFolder", ["backend"], registry=self.registry
        )
        self.backend_up = Gauge(
            "interlink_plugin_backend_up", "1 while the scheduler answers", ["backend"], registry=self.registry
        )
        self.backend_up.labels(backend).set(1)
        self.event_loop_lag = Histogram(
            "interlink_plugin_event_loop_lag_seconds",
            "How late the event loop ran a timer: blocking work on the loop (or the GIL held elsewhere)",
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def track_pods(self, phases: Callable[[], Iterable[str]]) -> None:
        """Register the tracked-pods gauge, computed at scrape time."""
        self.registry.register(_PhaseCollector(self.backend, phases))

    def scheduler_call(self, command: str, seconds: float, ok: bool) -> None:
        self.scheduler_seconds.labels(self.backend, command, "ok" if ok else "error").observe(seconds)


LAG_PROBE_SECONDS = 0.5


async def watch_event_loop_lag(metrics: Metrics) -> None:
    """Sleep a fixed time, again and again; the overshoot is the loop's lag (every request waits as long)."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - before - LAG_PROBE_SECONDS))


class _PhaseCollector(Collector):
    def __init__(self, backend: str, phases: Callable[[], Iterable[str]]) -> None:
        self._backend = backend
        self._phases = phases

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "interlink_plugin_tracked_pods", "Pods tracked, by phase", labels=["backend", "phase"]
        )
        counts = Tally(self._phases())
        for phase in ("pending", "running", "succeeded", "failed", "waiting-backend", "deleting"):
            family.add_metric([self._backend, phase], counts.get(phase, 0))
        yield family


class MeteredRunner:
    """A CommandRunner that times every command (by program name) into the metrics."""

    def __init__(self, inner: CommandRunner, metrics: Metrics) -> None:
        self._inner = TracedRunner(inner)  # a span per command when tracing is on
        self._metrics = metrics

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        command = os.path.basename(argv[0]) if argv else "?"
        started = time.monotonic()
        try:
            result = await self._inner.run(argv, timeout=timeout, stdin=stdin, env=env)
        except Exception:
            self._metrics.scheduler_call(command, time.monotonic() - started, False)
            raise
        self._metrics.scheduler_call(command, result.seconds, result.ok)
        return result


def directory_bytes(root: Path) -> int:
    """Disk usage of a tree (blocking; run it in a worker thread, rarely). Jobs shape the trees below the
    data root: the walk keeps its own stack (any depth), follows no symlink and skips what it cannot read."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total
