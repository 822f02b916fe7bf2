"""Probe cost on the Podman backend: the plugin's probing vs a raw loop of the same checks, in one run.

    .venv/bin/python -m bench.bench_probes [--pods 4] [--seconds 20]

``--pods`` pods, each one container with an exec readiness probe (``podman exec``) and one with an
httpGet liveness probe (a python server; the plugin enters the pod's network namespace), both every
second. Over a window of ``--seconds`` the plugin's CPU (its own and its reaped children's: the
probe processes) is measured with probes and, for the same pods without probes, as the baseline;
the checks made are counted inside the containers (exec: a line per check in a file; http: the
server's log). Then the same number of checks as a raw loop, sequential, from this process:
``podman exec CTR sh -c ...`` and ``nsenter --net curl``. Reported: CPU per check for both and the
ratio plugin/raw (1.0 = the plugin adds nothing to the commands it runs), and checks per second.

Prints JSON (also written to bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.results import publish
from tests.harness import PluginProcess, states
from tests.podfactory import BUSYBOX, container, pod_body

PYTHON = "docker.io/library/python:3.11-alpine"
SERVER = ("import http.server, time\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "    def do_GET(self):\n"
          "        self.send_response(200); self.end_headers(); print('probe', time.time(), flush=True)\n"
          "    def log_message(self, *a): pass\n"
          "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n")
EXEC_CHECK = ["sh", "-c", "date +%s >> /tmp/checks"]


def plugin_cpu(pid: int) -> float:
    """User + system CPU of the plugin and of the children it reaped (the probe processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pods(count: int, probes: bool, tag: str) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        exec_probe = {"readinessProbe": {"exec": {"command": EXEC_CHECK}, "periodSeconds": 1}} if probes else {}
        http_probe = {"livenessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}} if probes else {}
        out.append(pod_body(f"{tag}-{i}", [
            container("e", ["sh", "-c", "sleep 3600"], image=BUSYBOX, **exec_probe),
            container("h", ["python3", "-c", SERVER], image=PYTHON, **http_probe),
        ], terminationGracePeriodSeconds=0))
    return out


def podman_ids(uid: str, name: str) -> tuple[str, int]:
    out = subprocess.run(["podman", "ps", "--no-trunc", "--format", "{{.ID}} {{.Pid}}", "--filter",
                          f"label=interlink.eu/pod-uid={uid}", "--filter", f"label=interlink.eu/container={name}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


def count_checks(plugin: PluginProcess, bodies: list[dict[str, Any]], start: float, end: float) -> tuple[int, int]:
    """Checks that arrived between ``start`` and ``end`` (epoch): each one leaves its time in the container."""
    exec_checks = http_checks = 0
    for body in bodies:
        ctr, _pid = podman_ids(body["pod"]["metadata"]["uid"], "e")
        text = subprocess.run(["podman", "exec", ctr, "cat", "/tmp/checks"], capture_output=True, text=True,
                              timeout=60).stdout
        # `date +%s` has whole seconds: a check at start-0.x counts, one at end-0.x does not (even)
        exec_checks += sum(1 for w in text.split() if int(start) <= int(w) < int(end))
        for line in plugin.logs(body, "h").text.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "probe" and start <= float(words[1]) < end:
                http_checks += 1
    return exec_checks, http_checks


def window(plugin: PluginProcess, bodies: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    for body in bodies:
        plugin.create(body)
    for body in bodies:
        plugin.wait_status(body, lambda s: all("running" in st for st in states(s).values()), timeout=120)
    time.sleep(3)  # the first probes of each container settle
    assert plugin.proc is not None
    cpu0, t0, start = plugin_cpu(plugin.proc.pid), time.monotonic(), time.time()
    time.sleep(seconds)
    cpu1, t1, end = plugin_cpu(plugin.proc.pid), time.monotonic(), time.time()
    checks = count_checks(plugin, bodies, start, end)
    for body in bodies:
        plugin.delete(body)
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "exec_checks": checks[0], "http_checks": checks[1]}


def raw_loop(body: dict[str, Any], exec_n: int, http_n: int) -> dict[str, float]:
    uid = body["pod"]["metadata"]["uid"]
    ctr, _ = podman_ids(uid, "e")
    _, http_pid = podman_ids(uid, "h")
    cpu0, t0 = children_cpu(), time.monotonic()
    for _ in range(exec_n):
        subprocess.run(["podman", "exec", ctr, *EXEC_CHECK], capture_output=True, timeout=30)
    cpu1, t1 = children_cpu(), time.monotonic()
    for _ in range(http_n):
        subprocess.run(["nsenter", f"--target={http_pid}", "--net", "curl", "-s", "-o", "/dev/null",
                        "http://127.0.0.1:8080/"], capture_output=True, timeout=30)
    cpu2, t2 = children_cpu(), time.monotonic()
    return {"exec_cpu_s": cpu1 - cpu0, "exec_wall_s": t1 - t0, "http_cpu_s": cpu2 - cpu1, "http_wall_s": t2 - t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="il-bench-probes-") as tmp:
        plugin = PluginProcess(Path(tmp), {"Backend": "podman", "InstanceId": f"bp-{run}", "PollInterval": 5,
                                           "PullPolicy": "never", "LogFormat": "text"}).start()
        try:
            idle = window(plugin, pods(args.pods, False, f"idle{run}"), args.seconds)
            probing_bodies = pods(args.pods, True, f"probe{run}")
            probing = window(plugin, probing_bodies, args.seconds)
            spare = pods(1, False, f"raw{run}")[0]
            plugin.create(spare)
            plugin.wait_status(spare, lambda s: all("running" in st for st in states(s).values()), timeout=120)
            raw = raw_loop(spare, int(probing["exec_checks"]), int(probing["http_checks"]))
            plugin.delete(spare)
        finally:
            plugin.stop()
            subprocess.run(["bash", "-c", f"podman pod rm -f -t 0 $(podman pod ps -q --filter "
                                          f"label=interlink.eu/instance=bp-{run})"], capture_output=True, timeout=120)
    checks = probing["exec_checks"] + probing["http_checks"]
    idle_rate = idle["cpu_s"] / idle["wall_s"]
    probe_cpu = max(probing["cpu_s"] - idle_rate * probing["wall_s"], 0.0)
    raw_cpu = raw["exec_cpu_s"] + raw["http_cpu_s"]
    results = {
        "pods": args.pods,
        "window_s": round(probing["wall_s"], 1),
        "checks": checks,
        "checks_per_s": round(checks / probing["wall_s"], 2),
        "expected_checks_per_s": 2 * args.pods,
        "plugin_cpu_s_idle_window": round(idle["cpu_s"], 3),
        "plugin_cpu_s_probing_window": round(probing["cpu_s"], 3),
        "plugin_cpu_ms_per_check": round(probe_cpu / max(checks, 1) * 1000, 2),
        "raw_cpu_ms_per_check": round(raw_cpu / max(checks, 1) * 1000, 2),
        "raw_exec_ms_wall_per_check": round(raw["exec_wall_s"] / max(probing["exec_checks"], 1) * 1000, 1),
        "raw_http_ms_wall_per_check": round(raw["http_wall_s"] / max(probing["http_checks"], 1) * 1000, 1),
        "ratio_plugin_vs_raw_cpu": round(probe_cpu / raw_cpu, 2) if raw_cpu else None,
        "detail": {"idle": idle, "probing": probing, "raw": raw},
    }
    publish("probes", results)
    print(json.dumps({k: results[k] for k in ("checks_per_s", "ratio_plugin_vs_raw_cpu")}))


if __name__ == "__main__":
    main()
