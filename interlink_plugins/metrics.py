"""Prometheus metrics: one registry per plugin process, fed from the few places that know.

Scheduler calls are timed by MeteredRunner (every command goes through the runner), HTTP by a
middleware, lifecycle events by the service; tracked pods and data-root usage are computed when
scraped or by the poller, never on the /status hot path.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from interlink_plugins.tracing import TracedRunner

if TYPE_CHECKING:  # the runner's types only: core imports the metrics, not the other way round
    from interlink_plugins.core.commands.local import CommandResult, CommandRunner

# no <name>_created series beside every counter and histogram (OpenMetrics only; twice the series for nothing)
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

SCHEDULER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)
# reasons a create can fail (pre-set to 0 so that increase() and rate() see the first failure)
CREATE_FAILURE_REASONS = ("Invalid", "Forbidden", "BackendUnavailable", "SubmitThrottled", "SubmitFailed")


def plugin_version() -> str:
    """The installed distribution's version, as packaging records it (a source tree without install: unknown)."""
    try:
        return importlib.metadata.version("interlink-plugins")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class _Def:
    """One metric's definition: its name, help text, label names and (a histogram's) buckets."""

    name: str
    doc: str
    labels: tuple[str, ...] = ("backend",)
    buckets: tuple[float, ...] = SCHEDULER_BUCKETS

    def counter(self, registry: CollectorRegistry) -> Counter:
        return Counter(self.name, self.doc, list(self.labels), registry=registry)

    def gauge(self, registry: CollectorRegistry) -> Gauge:
        return Gauge(self.name, self.doc, list(self.labels), registry=registry)

    def histogram(self, registry: CollectorRegistry) -> Histogram:
        return Histogram(self.name, self.doc, list(self.labels), buckets=self.buckets, registry=registry)


_CREATES = _Def("interlink_plugin_pods_created_total", "Pods accepted by /create")
_CREATE_FAILURES = _Def(
    "interlink_plugin_pod_create_failures_total",
    "Creates refused (Invalid, Forbidden) or not submitted (BackendUnavailable, SubmitThrottled, SubmitFailed)",
    ("backend", "reason"),
)
_SCHEDULER_SECONDS = _Def(
    "interlink_plugin_scheduler_command_duration_seconds",
    "Scheduler command latency, by program name and outcome",
    ("backend", "command", "outcome"),
)
_POLL_SECONDS = _Def("interlink_plugin_poll_duration_seconds", "Duration of one status poll (all pods)")
_POLL_SUCCESS_TIME = _Def(
    "interlink_plugin_poll_last_success_timestamp_seconds",
    "Unix time of the end of the last poll that reached the backend: statuses are as old as this",
)
_POLL_INTERVAL = _Def("interlink_plugin_poll_interval_seconds", "PollInterval of the config")
_LOG_BYTES = _Def("interlink_plugin_log_served_bytes_total", "Container log bytes sent to interLink (kubectl logs)")
_HTTP_SECONDS = _Def(
    "interlink_plugin_http_request_duration_seconds",
    "HTTP latency by route, until the answer starts",
    ("route", "method", "status"),
    HTTP_BUCKETS,
)
_DATA_ROOT_BYTES = _Def(
    "interlink_plugin_data_root_used_bytes", "Bytes used under DataRootFolder (measured every 5 minutes)"
)
_BACKEND_UP = _Def("interlink_plugin_backend_up", "1 while the scheduler answers")
_EVENT_LOOP_LAG = _Def(
    "interlink_plugin_event_loop_lag_seconds",
    "How late the event loop ran a timer: blocking work on the loop (or the GIL held elsewhere)",
    (),
    HTTP_BUCKETS,
)


def _register_runtime(registry: CollectorRegistry, backend: str) -> None:
    """The process (CPU, memory, fds, start time), the Python runtime (version, garbage collector) and
    the plugin's build."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = Info("interlink_plugin_build", "Plugin version and the backend it drives", registry=registry)
    build.info({"version": plugin_version(), "backend": backend})


class Metrics:
    """Names follow Prometheus conventions: base units in the name (_seconds, _bytes), _total for counters."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.registry = registry = CollectorRegistry(auto_describe=True)
        _register_runtime(registry, backend)
        self.creates = _CREATES.counter(registry)
        self.create_failures = _CREATE_FAILURES.counter(registry)
        self.scheduler_seconds = _SCHEDULER_SECONDS.histogram(registry)
        self.poll_seconds = _POLL_SECONDS.histogram(registry)
        self.poll_success_time = _POLL_SUCCESS_TIME.gauge(registry)
        self.poll_interval = _POLL_INTERVAL.gauge(registry)
        self.log_bytes = _LOG_BYTES.counter(registry)
        self.http_seconds = _HTTP_SECONDS.histogram(registry)
        self.data_root_bytes = _DATA_ROOT_BYTES.gauge(registry)
        self.backend_up = _BACKEND_UP.gauge(registry)
        self.backend_up.labels(backend).set(1)
        self.event_loop_lag = _EVENT_LOOP_LAG.histogram(registry)
        # every series of a known label set exists from the start, at 0
        self.creates.labels(backend)
        for reason in CREATE_FAILURE_REASONS:
            self.create_failures.labels(backend, reason)
        self.log_bytes.labels(backend)
        self.poll_seconds.labels(backend)

    def track_pods(self, phases: Callable[[], Iterable[str]]) -> None:
        """Register the tracked-pods gauge, computed at scrape time."""
        self.registry.register(_PhaseCollector(self.backend, phases))

    def scheduler_call(self, command: str, seconds: float, ok: bool) -> None:
        self.scheduler_seconds.labels(self.backend, command, "ok" if ok else "error").observe(seconds)

    def poll_done(self, seconds: float, *, reached_backend: bool) -> None:
        self.poll_seconds.labels(self.backend).observe(seconds)
        if reached_backend:
            self.poll_success_time.labels(self.backend).set(time.time())


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
