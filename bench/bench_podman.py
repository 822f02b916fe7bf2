"""Podman benchmark: the plugin vs raw podman in the same run, on the real local podman.

    .venv/bin/python -m bench.bench_podman [--starts 15] [--tracked 200] [--status-seconds 20]
    .venv/bin/python -m bench.bench_podman --starts 0 --tracked 0 --load-pods 200

1. Pod start latency: a pod of two containers, created through the plugin (/create, then the
   plugin starts the containers) vs raw ``podman pod create`` + ``podman run -d`` of the same two
   containers (same image, log driver, labels), one pod at a time, plugin and raw interleaved.
   Latency = from the request (or the first raw command) to the later container start that podman
   records (State.StartedAt); for the plugin also until /status reports both running.
2. /status latency with N tracked pods (each a running container) at interLink's request rate
   (one request per pod every 5 s, with `hey`), plus the podman calls per poll interval, counted by
   a wrapper around the REAL podman (a stand-in in name only: it logs the call and execs podman).
3. Lifecycle load (--load-pods N): N pods through create -> run -> complete -> logs (and Follow
   streams) -> delete at interLink's rate, with lost / duplicated / leaked checks (bench/lifecycle.py).

Prints JSON (also written to bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_slurm import _create_all, _status_rate, cpu_seconds, rss_mib
from bench.lifecycle import load_pods, percentile, run_lifecycle
from bench.results import publish
from tests.harness import PluginProcess
from tests.podfactory import BUSYBOX, container, pod_body

ROOT = Path(__file__).resolve().parent.parent


def podman(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True, timeout=timeout).stdout


def started_at(container_ids: list[str]) -> list[float]:
    items = json.loads(podman("inspect", "--type", "container", "--format", "json", *container_ids))
    return [datetime.fromisoformat(_trim(i["State"]["StartedAt"])).timestamp() for i in items]


def _trim(text: str) -> str:
    """RFC 3339 with nanoseconds -> what fromisoformat takes (microseconds)."""
    head, _, rest = text.partition(".")
    if not rest:
        return text.replace("Z", "+00:00")
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits):].replace("Z", "+00:00")
    return f"{head}.{digits[:6]}{zone}"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p90_ms": round(percentile(values, 0.9) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


def counting_podman(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "podman"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'printf "%s %s\\n" "$EPOCHREALTIME" "$1" >> {directory}/podman.calls\n'
        f'[ "$1 $2" = "pod create" ] && printf "%s pod-create\\n" "$EPOCHREALTIME" >> {directory}/podman.calls\n'
        'exec podman "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def podman_calls(directory: Path, start: float, end: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    path = directory / "podman.calls"
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stamp, _, verb = line.partition(" ")
        if start <= float(stamp) <= end:
            counts[verb] = counts.get(verb, 0) + 1
    return counts


TWO = [["sleep", "3600"], ["sh", "-c", "echo ready; exec sleep 3600"]]


def plugin_start(plugin: PluginProcess) -> tuple[float, float]:
    body = pod_body(f"lat-{uuid.uuid4().hex[:6]}", [container(f"c{i}", argv) for i, argv in enumerate(TWO)],
                    terminationGracePeriodSeconds=0)
    began = time.time()
    job_id = plugin.create(body)["PodJID"]
    while True:
        status = plugin.status(body)
        if status and all("running" in c["state"] for c in status["containers"]):
            break
        time.sleep(0.02)
    status_seconds = time.time() - began
    ids = podman("ps", "-q", "--no-trunc", "--filter", f"pod={job_id}", "--filter", "label=interlink.eu/run=0").split()
    assert len(ids) == 2, ids
    return max(started_at(ids)) - began, status_seconds


def raw_start(workdir: Path, index: int) -> float:
    name = f"il-bench-raw-{index}-{uuid.uuid4().hex[:6]}"
    logs = workdir / name
    logs.mkdir(parents=True)
    began = time.time()
    pod_id = podman("pod", "create", f"--name={name}", "--label=interlink.eu/bench=raw").strip()
    ids = []
    for i, argv in enumerate(TWO):
        ids.append(podman("run", "-d", f"--pod={pod_id}", f"--name={name}-c{i}", "--log-driver=k8s-file",
                          f"--log-opt=path={logs}/c{i}.log", "--label=interlink.eu/bench=raw", "--pull=never",
                          f"--entrypoint={json.dumps(argv)}", BUSYBOX).strip())
    return max(started_at(ids)) - began


def bench_start(work: Path, count: int) -> dict[str, Any]:
    plugin = PluginProcess(work / "start", {"Backend": "podman", "InstanceId": "bench-start", "PollInterval": 1,
                                            "LogFormat": "text"})
    plugin.workdir.mkdir(parents=True)
    plugin.start()
    plugin_started: list[float] = []
    plugin_status: list[float] = []
    raw: list[float] = []
    try:
        for index in range(count):
            started, status = plugin_start(plugin)
            plugin_started.append(started)
            plugin_status.append(status)
            raw.append(raw_start(work / "raw", index))
    finally:
        plugin.stop()
        _remove("interlink.eu/instance=bench-start")
        _remove("interlink.eu/bench=raw")
    return {
        "pods": count,
        "containers_per_pod": len(TWO),
        "plugin_create_to_containers_started": summary(plugin_started),
        "raw_pod_create_plus_runs_to_containers_started": summary(raw),
        "ratio_plugin_to_raw_p50": round(percentile(plugin_started, 0.5) / percentile(raw, 0.5), 3),
        "plugin_create_to_status_running": summary(plugin_status),
        "status_poll_interval_s": 1,
    }


def _remove(label: str) -> None:
    pods = podman("pod", "ps", "-q", "--filter", f"label={label}").split()
    for start in range(0, len(pods), 50):
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", *pods[start:start + 50]], capture_output=True,
                       timeout=600)


def bench_status(work: Path, tracked: int, seconds: float, interval: float) -> dict[str, Any]:
    counted = work / "counted"
    plugin = PluginProcess(work / "status", {"Backend": "podman", "InstanceId": "bench-status", "LogFormat": "text",
                                             "PollInterval": interval, "PodmanPath": counting_podman(counted)})
    plugin.workdir.mkdir(parents=True)
    plugin.start()
    try:
        bodies = [pod_body(f"s{i}", [container("c", ["sleep", "3600"])], terminationGracePeriodSeconds=0)
                  for i in range(tracked)]
        began = time.time()
        asyncio.run(_create_all(str(plugin.client.base_url).rstrip("/"), bodies, 8))
        created = time.time() - began
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            up = podman("ps", "-q", "--filter", "label=interlink.eu/instance=bench-status",
                        "--filter", "label=interlink.eu/run=0").split()
            if len(up) >= tracked:
                break
            time.sleep(1)
        all_running = time.time() - began
        time.sleep(3 * interval)  # the first polls inspect every container once; measure the steady state
        ps_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            podman("ps", "-a", "--format", "json", "--filter", "label=interlink.eu/instance=bench-status")
            ps_times.append(time.perf_counter() - t0)
        start = time.time()
        figures = _status_rate(str(plugin.client.base_url).rstrip("/"), bodies[tracked // 2], seconds,
                               tracked / 5.0, work)
        end = time.time()
        polls = (end - start) / interval
        calls = podman_calls(counted, start, end)
        assert plugin.proc is not None
        result = {
            "tracked_pods": tracked,
            "containers_in_podman": tracked * 2,
            "creates_seconds": round(created, 1),
            "all_running_seconds": round(all_running, 1),
            "target_rps": round(tracked / 5.0, 1),
            "achieved_rps": round(figures.get("achieved_rps", 0.0), 1),
            "non_200": int(figures.get("non_200", 0)),
            "status_p50_ms": round(figures.get("p50_ms", float("nan")), 2),
            "status_p99_ms": round(figures.get("p99_ms", float("nan")), 2),
            "poll_interval_s": interval,
            "podman_calls_during_measure": calls,
            "podman_ps_per_interval": round(calls.get("ps", 0) / polls, 2),
            "podman_inspect_per_interval": round(calls.get("inspect", 0) / polls, 2),
            "podman_ps_seconds_p50": round(percentile(ps_times, 0.5), 3),
            "plugin_rss_mib": round(rss_mib(plugin.proc.pid), 1),
        }
        began = time.time()
        for body in bodies:
            assert plugin.delete(body).status_code == 200
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and podman("pod", "ps", "-q", "--filter",
                                                      "label=interlink.eu/instance=bench-status").split():
            time.sleep(1)
        result["delete_all_seconds"] = round(time.time() - began, 1)
    finally:
        plugin.stop()
        _remove("interlink.eu/instance=bench-status")
    return result


def bench_lifecycle(work: Path, pods: int, seconds: float, interval: float, max_sleep: float) -> dict[str, Any]:
    """`pods` pods through create -> run -> complete -> logs -> delete at interLink's rate (bench/lifecycle.py)."""
    counted = work / "lifecycle-counted"
    plugin = PluginProcess(work / "lifecycle", {"Backend": "podman", "InstanceId": "bench-life", "LogFormat": "text",
                                                "PollInterval": interval, "PodmanPath": counting_podman(counted)})
    plugin.workdir.mkdir(parents=True)
    plugin.start()
    try:
        start = time.time()
        outcome = asyncio.run(run_lifecycle(
            str(plugin.client.base_url).rstrip("/"), load_pods(pods, max_sleep, image=BUSYBOX, prefix="life"),
            data_root=plugin.workdir / "jobs", duration=seconds,
            submissions=lambda: podman_calls(counted, 0, float("inf")).get("pod-create", 0)))
        end = start + outcome.window_seconds
        assert plugin.proc is not None
        calls = podman_calls(counted, start, end)
        result = {**outcome.summary(), "problems": outcome.problems(), "poll_interval_s": interval,
                  "podman_ps_per_interval": round(calls.get("ps", 0) / (outcome.window_seconds / interval), 2),
                  "podman_calls": calls, "plugin_rss_mib": round(rss_mib(plugin.proc.pid), 1),
                  "plugin_cpu_s": round(cpu_seconds(plugin.proc.pid), 1)}
        result["pods_left_in_podman"] = len(podman("pod", "ps", "-q", "--filter",
                                                   "label=interlink.eu/instance=bench-life").split())
        return result
    finally:
        plugin.stop()
        _remove("interlink.eu/instance=bench-life")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--tracked", type=int, default=200)
    parser.add_argument("--status-seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--load-pods", type=int, default=0, help="lifecycle load: pods through their whole life")
    parser.add_argument("--load-seconds", type=float, default=600)
    parser.add_argument("--max-sleep", type=float, default=30, help="load pods sleep 1..N s")
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "podman" / "podman-setup.sh")], check=True, timeout=600, capture_output=True)
    results: dict[str, Any] = {"load_average_at_start": Path("/proc/loadavg").read_text().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="il-bench-podman-") as tmp:
        work = Path(tmp)
        if args.starts:
            results["start"] = bench_start(work, args.starts)
        if args.tracked:
            results["status"] = bench_status(work, args.tracked, args.status_seconds, args.interval)
        if args.load_pods:
            results["lifecycle"] = bench_lifecycle(work, args.load_pods, args.load_seconds, args.interval,
                                                   args.max_sleep)
    publish("podman", results)


if __name__ == "__main__":
    main()
