"""HTCondor benchmark: plugin vs raw Schedd.submit in the same run, on the real personal pool.

    .venv/bin/python -m bench.bench_htcondor [--creates 200] [--tracked 1000] [--window 30]
    .venv/bin/python -m bench.bench_htcondor --creates 0 --tracked 0 --load-pods 1000 --cpus 128

Measures creates/s and p50/p99 create latency of the plugin (HTTP /create, shared mode) against raw
``Schedd.submit`` of the same kind of job through the same bindings; then, with N tracked pods,
/status latency (one pod per request, interLink's pattern, and all N in one request) and the
schedd queries the plugin made per poll interval (counted from its debug log). Jobs are kept idle
(``requirements = false``) so the 2-core machine measures the plugin, not the jobs. With --load-pods N:
N pods through create -> run -> complete -> logs (and Follow streams) -> delete at interLink's rate,
with lost / duplicated / leaked checks (bench/lifecycle.py). The benchmark runs its own pool
(container il-htcondor-bench, collector port 9718), so the tests' pool is left alone. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_slurm import cpu_seconds, rss_mib
from bench.lifecycle import load_pods, percentile, run_lifecycle
from bench.results import publish
from tests.harness import PluginProcess
from tests.podfactory import container, pod_body, status_pod

ROOT = Path(__file__).resolve().parent.parent
POOL = {"HTCONDOR_NAME": "il-htcondor-bench", "HTCONDOR_DIR": "/tmp/il-htcondor-bench", "HTCONDOR_PORT": "9718",
        "HTCONDOR_SHARED": "/tmp"}
COLLECTOR = f"127.0.0.1:{POOL['HTCONDOR_PORT']}"
PARAMS = {"SEC_CLAIMTOBE_USER": "condortest", "FILESYSTEM_DOMAIN": "il-pool", "UID_DOMAIN": "il-pool",
          "ENABLE_IPV6": "False", "SEC_CLIENT_AUTHENTICATION_METHODS": "CLAIMTOBE"}
IDLE = {"htcondor-job.vk.io/submit-commands": "requirements = false"}


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    return {"count": len(latencies), "per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


def start_pool(cpus: int, cpu_shares: int) -> None:
    image = subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-build.sh")], check=True, capture_output=True,
                           text=True, timeout=900).stdout.split()[-1]
    subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-up.sh"), image], check=True, capture_output=True,
                   timeout=180, env={**os.environ, **POOL, "HTCONDOR_CPUS": str(cpus),
                                     **({"HTCONDOR_CPU_SHARES": str(cpu_shares)} if cpu_shares else {})})


def plugin_settings(instance: str, interval: float) -> dict[str, Any]:
    return {
        "Backend": "htcondor", "ContainerRuntime": "none", "InstanceId": instance, "LogLevel": "debug",
        "LogFormat": "text", "HTCondorCollector": COLLECTOR, "HTCondorAuth": ["CLAIMTOBE"],
        "HTCondorParams": {k: v for k, v in PARAMS.items() if k.startswith(("SEC_CLAIMTOBE", "FILESYSTEM", "UID"))},
        "HTCondorJobUser": "2001", "PollInterval": interval, "CommandTimeout": 30,
        "HTCondorTailCommand": f"podman exec -u condortest {POOL['HTCONDOR_NAME']} condor_tail",
    }


def pool_jobs(instance: str) -> int:
    """Jobs of one plugin instance the schedd ever had: queue plus history."""
    count = 0
    for tool in ("condor_q", "condor_history"):
        listed = subprocess.run(["podman", "exec", POOL["HTCONDOR_NAME"], tool, "-allusers" if tool == "condor_q"
                                 else "-forwards", "-constraint", f'InterLinkInstance == "{instance}"', "-af",
                                 "ClusterId"], capture_output=True, text=True, timeout=120)
        count += len(listed.stdout.split())
    return count


def bench_lifecycle(workdir: Path, pods: int, seconds: float, interval: float, max_sleep: float) -> dict[str, Any]:
    plugin = PluginProcess(workdir / "lifecycle", plugin_settings("bench-life", interval),
                           env={"CONDOR_CONFIG": "/dev/null"})
    plugin.workdir.mkdir(parents=True)
    plugin.workdir.chmod(0o711)
    plugin.start()
    try:
        outcome = asyncio.run(run_lifecycle(
            str(plugin.client.base_url).rstrip("/"), load_pods(pods, max_sleep, prefix="life"),
            data_root=plugin.workdir / "jobs", duration=seconds, submissions=lambda: pool_jobs("bench-life")))
        assert plugin.proc is not None
        return {**outcome.summary(), "problems": outcome.problems(), "poll_interval_s": interval,
                "plugin_rss_mib": round(rss_mib(plugin.proc.pid), 1),
                "plugin_cpu_s": round(cpu_seconds(plugin.proc.pid), 1)}
    finally:
        plugin.stop()


def raw_submits(count: int, workdir: Path) -> dict[str, float]:
    import htcondor2

    for key, value in {**PARAMS, "COLLECTOR_HOST": COLLECTOR}.items():
        htcondor2.param[key] = value
    collector = htcondor2.Collector(COLLECTOR)
    name = collector.query(htcondor2.AdTypes.Schedd, projection=["Name"])[0]["Name"]
    schedd = htcondor2.Schedd(collector.locate(htcondor2.DaemonTypes.Schedd, name))
    latencies = []
    began = time.perf_counter()
    for i in range(count):
        job = htcondor2.Submit({"executable": "/bin/true", "initialdir": str(workdir), "output": "out",
                                "error": "out", "should_transfer_files": "NO", "requirements": "false",
                                "+InterLinkInstance": '"bench-raw"', "+InterLinkPodUID": f'"raw-{i}"'})
        one = time.perf_counter()
        schedd.submit(job)
        latencies.append(time.perf_counter() - one)
    wall = time.perf_counter() - began
    schedd.act(htcondor2.JobAction.Remove, 'InterLinkInstance == "bench-raw"')
    return stats(latencies, wall)


def schedd_queries(log: Path, start: float, end: float) -> int:
    count = 0
    for line in log.read_text().splitlines():
        if "htcondor call query" not in line:
            continue
        stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        if start <= stamp <= end:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--tracked", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--no-start", action="store_true", help="use a running pool")
    parser.add_argument("--load-pods", type=int, default=0, help="lifecycle load: pods through their whole life")
    parser.add_argument("--load-seconds", type=float, default=900)
    parser.add_argument("--max-sleep", type=float, default=30, help="load pods sleep 1..N s")
    parser.add_argument("--cpus", type=int, default=8, help="job slots of the bench pool")
    parser.add_argument("--jobs-cpu-shares", type=int, default=0,
                        help="cpu weight of the pool container (1024 = the plugin's), 0 = off")
    args = parser.parse_args()
    if not args.no_start:
        start_pool(args.cpus, args.jobs_cpu_shares)
    workdir = Path(tempfile.mkdtemp(prefix="bench-htc-", dir="/tmp"))
    workdir.chmod(0o711)
    result: dict[str, Any] = {"backend": "htcondor", "creates": args.creates, "tracked": args.tracked}
    if args.load_pods:
        result["lifecycle"] = bench_lifecycle(workdir, args.load_pods, args.load_seconds, args.interval,
                                              args.max_sleep)
    if args.creates or args.tracked:
        result.update(bench_creates_and_status(workdir, args))
    publish("htcondor", result)


def bench_creates_and_status(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"raw_schedd_submit": raw_submits(args.creates, workdir)}
    plugin = PluginProcess(workdir, plugin_settings("bench", args.interval), env={"CONDOR_CONFIG": "/dev/null"}).start()
    try:
        bodies = [pod_body(f"b{i}", [container("c", ["true"])], annotations=IDLE) for i in range(args.tracked)]
        latencies = []
        began = time.perf_counter()
        for body in bodies[: args.creates]:
            one = time.perf_counter()
            plugin.create(body)
            latencies.append(time.perf_counter() - one)
        result["plugin_create"] = stats(latencies, time.perf_counter() - began)
        for body in bodies[args.creates:]:
            plugin.create(body)
        time.sleep(2 * args.interval)
        status_latencies = []
        window_start = time.time()
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:
            body = random.choice(bodies)
            one = time.perf_counter()
            response = plugin.client.request("GET", "/status", json=[status_pod(body)])
            status_latencies.append(time.perf_counter() - one)
            assert response.status_code == 200 and response.json(), response.text
            time.sleep(0.02)
        window_end = time.time()
        one = time.perf_counter()
        response = plugin.client.request("GET", "/status", json=[status_pod(b) for b in bodies])
        all_ms = (time.perf_counter() - one) * 1000
        assert response.status_code == 200 and len(response.json()) == len(bodies)
        queries = schedd_queries(plugin.log_path, window_start, window_end)
        result["status"] = {
            "tracked_pods": len(bodies), "requests": len(status_latencies),
            "p50_ms": round(percentile(status_latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(status_latencies, 0.99) * 1000, 2),
            "all_pods_one_request_ms": round(all_ms, 1),
            "window_seconds": round(window_end - window_start, 1), "poll_interval": args.interval,
            "schedd_queries": queries,
            "schedd_queries_per_interval": round(queries / ((window_end - window_start) / args.interval), 2),
        }
    finally:
        plugin.stop()
        subprocess.run(["podman", "exec", POOL["HTCONDOR_NAME"], "condor_rm", "-constraint",
                        'InterLinkInstance == "bench"'], capture_output=True, timeout=120)
    return result


if __name__ == "__main__":
    main()
