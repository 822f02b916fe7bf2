"""SLURM benchmark: plugin vs raw sbatch in the same run, on the real local cluster.

    .venv/bin/python -m bench.bench_slurm [--creates 200] [--tracked 1000,10000] [--load-pods 1000 --load-seconds 300]

Measures creates/s and p50/p99 create latency against raw `sbatch` of the same job scripts;
/status p50/p99 at interLink's request rate (one request per pod every 5 s) with N tracked pods,
with the scheduler calls per poll interval; the plugin's RSS. Prints JSON (also bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lifecycle import percentile
from bench.results import publish
from bench.slurm_load import calls, counting_wrappers, run_load
from tests.harness import PluginProcess
from tests.podfactory import container, pod_body, status_pod

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def confine_jobs(state: str, shares: int) -> None:
    """Put slurmd, and so every job it starts, into a low-weight cgroup-v1 cpu group.

    On a real site jobs run on compute nodes, not on the plugin's host; here they share its 2 cores,
    and 1,000 starting jobs would otherwise starve the plugin and the load client alike.
    """
    group = Path("/sys/fs/cgroup/cpu/il-bench-jobs")
    group.mkdir(exist_ok=True)
    (group / "cpu.shares").write_text(str(shares))
    for pid_file in Path(state, "run").glob("slurmd-*.pid"):
        (group / "cgroup.procs").write_text(pid_file.read_text().strip())


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine spent not idle so far (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _create_all(base: str, bodies: list[dict[str, Any]], concurrency: int) -> list[float]:
    """POST every body to /create, ``concurrency`` keep-alive connections at a time.

    A lean HTTP/1.1 client (bodies serialised before the clock starts) stands in for interLink's Go
    client: httpx cost 1.8 ms of CPU per request on the same two cores the plugin and sbatch share."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    queue = [json.dumps(body).encode() for body in reversed(bodies)]
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                data = queue.pop()
                began = time.perf_counter()
                writer.write(b"POST /create HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                async with asyncio.timeout(300):  # httpx's timeout here before
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                    answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - began)
                assert head.startswith(b"HTTP/1.1 200"), head + answer
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies


def _raw_sbatch(argvs: list[list[str]], concurrency: int) -> tuple[float, list[float]]:
    """The same sbatch command lines, run directly (the baseline)."""
    import concurrent.futures

    def one(argv: list[str]) -> float:
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
        return time.perf_counter() - began

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, argvs))
    return time.perf_counter() - began, latencies


def bench_creates(plugin: PluginProcess, count: int, concurrency: int) -> dict[str, Any]:
    """Creates/s through the plugin, then raw sbatch of the same command lines; with the CPU both cost.

    Raw sbatch at 8 concurrent keeps both cores of a small machine busy (sbatch, munge, slurmctld), so
    the ratio is bounded by the machine's CPU per raw job over its CPU per create (plugin, its client,
    the same sbatch): ``ratio_cpu_bound`` is that bound, measured in the same run."""
    held = {"slurm-job.vk.io/flags": "--begin=now+3600"}
    bodies = [pod_body(f"c{i}", [container("c", ["true"])], annotations=held) for i in range(count)]
    assert plugin.proc is not None
    plugin_cpu, busy, client_cpu = cpu_seconds(plugin.proc.pid), machine_busy_seconds(), cpu_seconds(os.getpid())
    began = time.perf_counter()
    latencies = asyncio.run(_create_all(str(plugin.client.base_url).rstrip("/"), bodies, concurrency))
    plugin_seconds = time.perf_counter() - began
    plugin_cpu, busy = cpu_seconds(plugin.proc.pid) - plugin_cpu, machine_busy_seconds() - busy
    client_cpu = cpu_seconds(os.getpid()) - client_cpu
    db = sqlite3.connect(str(Path(plugin.config["StateDir"]) / f"state-{plugin.config['InstanceId']}.sqlite"))
    argvs = []
    for (data,) in db.execute("SELECT data FROM pods"):
        argv = json.loads(data)["submit"]["argv"]
        argvs.append([("--comment=raw-baseline" if a.startswith("--comment=") else a) for a in argv])
    raw_busy = machine_busy_seconds()
    raw_seconds, raw_latencies = _raw_sbatch(argvs[:count], concurrency)
    raw_busy = machine_busy_seconds() - raw_busy
    subprocess.run(["scancel", "--me"], timeout=120, check=False)
    raws = len(argvs[:count])
    return {
        "pods": count,
        "concurrency": concurrency,
        "plugin_creates_per_s": round(count / plugin_seconds, 1),
        "raw_sbatch_per_s": round(raws / raw_seconds, 1),
        "ratio_plugin_to_raw": round((count / plugin_seconds) / (raws / raw_seconds), 3),
        "plugin_create_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "plugin_create_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "raw_sbatch_p50_ms": round(percentile(raw_latencies, 0.5) * 1000, 1),
        "raw_sbatch_p99_ms": round(percentile(raw_latencies, 0.99) * 1000, 1),
        "plugin_cpu_ms_per_create": round(1000 * plugin_cpu / count, 2),
        "client_cpu_ms_per_create": round(1000 * client_cpu / count, 2),
        "machine_cpu_ms_per_create": round(1000 * busy / count, 2),
        "machine_cpu_ms_per_raw_sbatch": round(1000 * raw_busy / raws, 2),
        "machine_cores_busy_raw": round(raw_busy / raw_seconds, 2),
        "ratio_cpu_bound": round((raw_busy / raws) / (busy / count), 3),
    }


def _status_rate(base: str, body: dict[str, Any], seconds: float, rate: float, workdir: Path) -> dict[str, float]:
    """interLink's rate (one request per pod per 5 s) with `hey`, a Go load generator (Debian package):
    a Python client on this 2-core machine saturates before the plugin does."""
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("bench needs `hey` (apt-get install hey)")
    payload = workdir / "status-body.json"
    payload.write_text(json.dumps([status_pod(body)]))
    # hey's workers are closed loops (one request in flight each, at most -q per second): a worker whose
    # answer takes longer than 1/q misses ticks. interLink has one request in flight per polled pod, so
    # give each worker a slow tick (10/s): the offered rate is reached while answers stay under 100 ms
    workers = max(1, min(400, int(rate // 10) or 1))
    out = subprocess.run(
        [hey, "-z", f"{int(seconds)}s", "-c", str(workers), "-q", f"{rate / workers:.2f}", "-m", "GET",
         "-T", "application/json", "-D", str(payload), f"{base}/status"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    figures: dict[str, float] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            figures["achieved_rps"] = float(line.split()[1])
        for pct in ("50%", "99%"):
            if line.startswith(f"{pct} in"):
                figures[f"p{pct[:-1]}_ms"] = float(line.split()[2]) * 1000
    codes = re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", out, flags=re.M)
    figures["non_200"] = float(sum(int(count) for code, count in codes if code != "200"))
    return figures


def bench_status(workdir: Path, tracked: int, seconds: float, interval: float) -> dict[str, Any]:
    wrappers = workdir / f"wrappers-{tracked}"
    plugin = PluginProcess(
        workdir / f"status-{tracked}",
        {
            "Backend": "slurm",
            "ContainerRuntime": "none",
            "PollInterval": interval,
            "InstanceId": f"bs{tracked}",
            **counting_wrappers(wrappers),
        },
    )
    plugin.workdir.mkdir(parents=True, exist_ok=True)
    plugin.start()
    try:
        held = {"slurm-job.vk.io/flags": "--begin=now+3600"}
        bodies = [pod_body(f"s{i}", [container("c", ["true"])], annotations=held) for i in range(tracked)]
        asyncio.run(_create_all(str(plugin.client.base_url).rstrip("/"), bodies, 16))
        time.sleep(2 * interval)
        start = time.time()
        figures = _status_rate(str(plugin.client.base_url).rstrip("/"), bodies[len(bodies) // 2], seconds,
                               tracked / 5.0, workdir)
        end = time.time()
        assert plugin.proc is not None
        result = {
            "tracked_pods": tracked,
            "target_rps": round(tracked / 5.0, 1),
            "achieved_rps": round(figures.get("achieved_rps", 0.0), 1),
            "non_200": int(figures.get("non_200", 0)),
            "status_p50_ms": round(figures.get("p50_ms", float("nan")), 2),
            "status_p99_ms": round(figures.get("p99_ms", float("nan")), 2),
            "poll_interval_s": interval,
            "squeue_calls": calls(wrappers, "squeue", start, end),
            "squeue_per_interval": round(calls(wrappers, "squeue", start, end) / ((end - start) / interval), 2),
            "plugin_rss_mib": round(rss_mib(plugin.proc.pid), 1),
        }
    finally:
        plugin.stop()
        subprocess.run(["scancel", "--me"], timeout=300, check=False)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tracked", default="1000,10000")
    parser.add_argument("--status-seconds", type=float, default=30)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--load-pods", type=int, default=0)
    parser.add_argument("--load-seconds", type=float, default=300)
    parser.add_argument("--max-sleep", type=float, default=120, help="load pods sleep 1..N s")
    parser.add_argument("--jobs-cpu-shares", type=int, default=0,
                        help="run the jobs in a cpu cgroup of this weight (1024 = the plugin's), 0 = off")
    args = parser.parse_args()
    state = os.environ.get("IL_SLURM_STATE", "/tmp/il-slurm")  # SLURMCTLD_PORT/SLURMD_PORT pick the ports
    subprocess.run(["bash", str(ROOT / "slurm" / "slurm-up.sh"), state], check=True, timeout=300, capture_output=True)
    os.environ["SLURM_CONF"] = f"{state}/slurm.conf"
    if args.jobs_cpu_shares:
        confine_jobs(state, args.jobs_cpu_shares)
    results: dict[str, Any] = {}
    # jobs being stopped may still write into their dirs while the temp dir goes: never fail the run for it
    with tempfile.TemporaryDirectory(prefix="il-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        if args.creates:
            settings = {"Backend": "slurm", "ContainerRuntime": "none", "InstanceId": "bc"}
            plugin = PluginProcess(work / "creates", settings)
            plugin.workdir.mkdir(parents=True)
            plugin.start()
            try:
                results["creates"] = bench_creates(plugin, args.creates, args.concurrency)
            finally:
                plugin.stop()
        results["status"] = [
            bench_status(work, int(n), args.status_seconds, args.interval) for n in args.tracked.split(",") if n
        ]
        if args.load_pods:
            wrappers = work / "load-wrappers"
            load = PluginProcess(
                work / "load",
                {
                    "Backend": "slurm",
                    "ContainerRuntime": "none",
                    "InstanceId": "bl",
                    "PollInterval": args.interval,
                    **counting_wrappers(wrappers),
                },
            )
            load.workdir.mkdir(parents=True)
            load.start()
            try:
                outcome = asyncio.run(
                    run_load(
                        str(load.client.base_url).rstrip("/"),
                        wrappers,
                        load.workdir / "jobs",
                        pods=args.load_pods,
                        duration=args.load_seconds,
                        interval=args.interval,
                        max_sleep=args.max_sleep,
                    )
                )
                results["load"] = outcome.summary()
                results["load"]["problems"] = outcome.lifecycle.problems()
                assert load.proc is not None
                results["load"]["plugin_rss_mib"] = round(rss_mib(load.proc.pid), 1)
                results["load"]["plugin_cpu_s"] = round(cpu_seconds(load.proc.pid), 1)
                results["load"]["slurm_cpus"] = int(os.environ.get("SLURM_CPUS", "32"))
                results["load"]["jobs_cpu_shares"] = args.jobs_cpu_shares
            finally:
                load.stop()
    publish("slurm", results)


if __name__ == "__main__":
    main()
