"""Log volume benchmark: a container writing 1 GB of log on the real local SLURM cluster (runtime none).

    .venv/bin/python -m bench.bench_logs [--mb 1000] [--stamper-mb 20]

1. The runner's log stamping, the runner run directly on this host: perl and the bash fallback (perl
   off the job's PATH) on the same --stamper-mb of output, lines/s and MB/s of container output.
2. One pod writing --mb MB (``yes LINE | head -c``) through the plugin, with a Follow opened while it
   writes (does the stream keep up, how long after the container's end does it close), then, on the
   finished log: the whole log, Tail=10, Bytes=1 MB and a Follow of it, each with bytes/s served and the
   plugin's peak RSS while serving (sampled every 20 ms) and CPU seconds; ``cat`` of the file as raw
   baseline. MaxContainerLogBytes is 0 here (the stamped file of 1 GB of output is ~1.8 GB).

Prints JSON (also written to bench/results/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_slurm import cpu_seconds, rss_mib
from bench.results import publish
from interlink_plugins.core.podrunner.plan import ContainerRun, RunPlan
from interlink_plugins.core.podrunner.render import render_runner
from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, log_request, pod_body

ROOT = Path(__file__).resolve().parent.parent
LINE = "a fairly long log line to fill the disk quickly"  # 47 bytes + newline


def writer(size: int) -> list[str]:
    return ["sh", "-c", f"yes '{LINE}' | head -c {size}"]


def no_perl_path(work: Path) -> str:
    """/usr/bin without perl: the runner falls back to its bash stamping loop."""
    bin_dir = work / "noperl"
    bin_dir.mkdir(exist_ok=True)
    for entry in Path("/usr/bin").iterdir():
        if not entry.name.startswith("perl") and not (bin_dir / entry.name).exists():
            (bin_dir / entry.name).symlink_to(entry)
    return str(bin_dir)


def bench_stamper(work: Path, mb: int, path: str, cap: int = 0) -> dict[str, Any]:
    size = mb * 1_000_000
    job = Path(tempfile.mkdtemp(dir=work))
    plan = RunPlan(
        job_dir=str(job),
        containers=(ContainerRun(name="c", kind="main", argv=tuple(writer(size)), restart_policy="Never"),),
        runner_path=path,
        log_max_bytes=cap,
    )
    (job / "pod-runner.sh").write_text(render_runner(plan))
    started = time.monotonic()
    subprocess.run(["bash", "pod-runner.sh"], cwd=job, check=True, capture_output=True, timeout=7200)
    seconds = time.monotonic() - started
    log = job / "c" / "c" / "log"
    result = {
        "output_mb": mb,
        "seconds": round(seconds, 2),
        "lines_per_s": round(size / (len(LINE) + 1) / seconds),
        "mb_per_s": round(mb / seconds, 2),
        "log_mb": round(log.stat().st_size / 1e6, 1),
    }
    log.unlink()
    return result


class RssSampler:
    """The plugin's peak RSS while a block of code runs (VmRSS every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.before = rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()




def fetch(plugin: PluginProcess, body: dict[str, Any], **opts: Any) -> tuple[int, float]:
    """(bytes, seconds) of one /getLogs, read as a stream."""
    started = time.monotonic()
    size = 0
    with plugin.client.stream("GET", "/getLogs", json=log_request(body, **opts), timeout=3600) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
    return size, time.monotonic() - started


def served(plugin: PluginProcess, call: Callable[[], tuple[int, float]]) -> dict[str, Any]:
    assert plugin.proc is not None
    cpu = cpu_seconds(plugin.proc.pid)
    with RssSampler(plugin.proc.pid) as rss:
        size, seconds = call()
    return {
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "plugin_cpu_s": round(cpu_seconds(plugin.proc.pid) - cpu, 2),
        "plugin_rss_before_mib": round(rss.before, 1),
        "plugin_rss_peak_mib": round(rss.peak, 1),
    }


def bench_plugin(work: Path, mb: int) -> dict[str, Any]:
    size = mb * 1_000_000 + 20  # ends with a partial line
    plugin = PluginProcess(work / "plugin", {"Backend": "slurm", "ContainerRuntime": "none", "InstanceId": "blog",
                                             "MaxContainerLogBytes": 0})
    plugin.workdir.mkdir(parents=True)
    plugin.start()
    try:
        body = pod_body("volume", [container("c", writer(size))])
        plugin.create(body)
        plugin.wait_status(body, lambda s: any("running" in c["state"] or "terminated" in c["state"]
                                               for c in s["containers"]), timeout=300)
        live: dict[str, Any] = {}

        def follow_live() -> None:
            live.update(served(plugin, lambda: fetch(plugin, body, Follow=True)))
            live["ended_at"] = time.time()

        follower = threading.Thread(target=follow_live)
        follower.start()
        status = plugin.wait_done(body, timeout=7200)
        assert exit_codes(status) == {"c": 0}, status
        follower.join(timeout=3600)
        log = next((plugin.workdir / "jobs").glob("*/c/c/log"))
        job = log.parent
        started, finished = (job / "started").read_text().strip(), (job / "finished").read_text().strip()
        def ts(text: str) -> float:
            return datetime.fromisoformat(text[:26] + "+00:00").timestamp()

        run_s = ts(finished) - ts(started)
        live["closed_after_container_end_s"] = round(live.pop("ended_at") - ts(finished), 2)
        live["complete"] = live["bytes"] == size + 1
        results: dict[str, Any] = {
            "output_mb": mb,
            "log_file_mb": round(log.stat().st_size / 1e6, 1),
            "runner": {"seconds": round(run_s, 2), "mb_per_s": round(mb / run_s, 1),
                       "lines_per_s": round(size / (len(LINE) + 1) / run_s)},
            "follow_while_writing": live,
        }
        t = time.monotonic()
        subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=True, timeout=3600)
        cat_s = time.monotonic() - t
        results["cat_file"] = {"seconds": round(cat_s, 3), "mb_per_s": round(log.stat().st_size / cat_s / 1e6, 1)}
        results["full"] = served(plugin, lambda: fetch(plugin, body))
        results["full"]["complete"] = results["full"]["bytes"] == size + 1
        results["tail_10"] = served(plugin, lambda: fetch(plugin, body, Tail=10))
        results["bytes_1mb"] = served(plugin, lambda: fetch(plugin, body, Bytes=1_000_000))
        results["timestamps_full"] = served(plugin, lambda: fetch(plugin, body, Timestamps=True))
        results["follow_finished"] = served(plugin, lambda: fetch(plugin, body, Follow=True))
        results["follow_tail_10_finished"] = served(plugin, lambda: fetch(plugin, body, Follow=True, Tail=10))
        assert plugin.ping()["status"] == "ok"
        plugin.delete(body)
        return results
    finally:
        plugin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1000, help="MB the container writes (through the plugin)")
    parser.add_argument("--stamper-mb", type=int, default=20, help="MB for the perl vs bash stamping comparison")
    args = parser.parse_args()
    state = os.environ.get("IL_SLURM_STATE", "/tmp/il-slurm")  # SLURMCTLD_PORT/SLURMD_PORT pick the ports
    subprocess.run(["bash", str(ROOT / "slurm" / "slurm-up.sh"), state], check=True, timeout=300, capture_output=True)
    os.environ["SLURM_CONF"] = f"{state}/slurm.conf"
    results: dict[str, Any] = {"loadavg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="il-bench-logs-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        if args.stamper_mb:
            system = "/usr/local/bin:/usr/bin:/bin"
            results["stamper"] = {
                "perl": bench_stamper(work, args.stamper_mb, system),
                "perl_with_cap": bench_stamper(work, args.stamper_mb, system, cap=1 << 40),
                "bash_fallback": bench_stamper(work, args.stamper_mb, no_perl_path(work)),
            }
        if args.mb:
            results["plugin"] = bench_plugin(work, args.mb)
    results["loadavg_after"] = os.getloadavg()[0]
    publish("logs", results)


if __name__ == "__main__":
    main()
