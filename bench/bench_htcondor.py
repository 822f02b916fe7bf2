"""HTCondor benchmark: plugin vs raw Schedd.submit in the same run, on the real personal pool.

    .venv/bin/python -m bench.bench_htcondor [--creates 200] [--tracked 1000] [--window 30]

Measures creates/s and p50/p99 create latency of the plugin (HTTP /create, shared mode) against raw
``Schedd.submit`` of the same kind of job through the same bindings; then, with N tracked pods,
/status latency (one pod per request, interLink's pattern, and all N in one request) and the
schedd queries the plugin made per poll interval (counted from its debug log). Jobs are kept idle
(``requirements = false``) so the 2-core machine measures the plugin, not the jobs. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.harness import PluginProcess
from tests.podfactory import container, pod_body, status_pod

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = "127.0.0.1:9618"
PARAMS = {"SEC_CLAIMTOBE_USER": "condortest", "FILESYSTEM_DOMAIN": "il-pool", "UID_DOMAIN": "il-pool",
          "ENABLE_IPV6": "False", "SEC_CLIENT_AUTHENTICATION_METHODS": "CLAIMTOBE"}
IDLE = {"htcondor-job.vk.io/submit-commands": "requirements = false"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    return {"count": len(latencies), "per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


def start_pool() -> None:
    image = subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-build.sh")], check=True, capture_output=True,
                           text=True, timeout=900).stdout.split()[-1]
    subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-up.sh"), image], check=True, capture_output=True,
                   timeout=180, env={**os.environ, "HTCONDOR_SHARED": "/tmp"})


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
    args = parser.parse_args()
    if not args.no_start:
        start_pool()
    workdir = Path(tempfile.mkdtemp(prefix="bench-htc-", dir="/tmp"))
    workdir.chmod(0o711)
    result: dict[str, Any] = {"backend": "htcondor", "creates": args.creates, "tracked": args.tracked}
    result["raw_schedd_submit"] = raw_submits(args.creates, workdir)
    plugin = PluginProcess(workdir, {
        "Backend": "htcondor", "ContainerRuntime": "none", "InstanceId": "bench", "LogLevel": "debug",
        "LogFormat": "text", "HTCondorCollector": COLLECTOR, "HTCondorAuth": ["CLAIMTOBE"],
        "HTCondorParams": {k: v for k, v in PARAMS.items() if k.startswith(("SEC_CLAIMTOBE", "FILESYSTEM", "UID"))},
        "HTCondorJobUser": "2001", "PollInterval": args.interval, "CommandTimeout": 30,
    }, env={"CONDOR_CONFIG": "/dev/null"}).start()
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
        subprocess.run(["podman", "exec", "il-htcondor", "condor_rm", "-constraint", 'InterLinkInstance == "bench"'],
                       capture_output=True, timeout=120)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
