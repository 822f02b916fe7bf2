"""SSH benchmark on the REAL login node (slurm/loginnode/), in one run:

    .venv/bin/python -m bench.bench_ssh [--commands 200] [--creates 40]

1. per-command overhead of `true` over the plugin's pooled connection (SshRunner) vs a fresh
   connection per command (paramiko connect + login + exec + close), and vs OpenSSH's `ssh`;
2. /create latency of the plugin over SSH (DataTransfer sftp: upload + sbatch; shared: sbatch only)
   vs the plugin running ON the login node (local sbatch, unix socket), same cluster, same pods.

Prints JSON (and writes bench/results/ssh.json). Starts its own login node (name, ports, dirs of
its own) and removes it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from interlink_plugins.core.commands.ssh import SshRunner, SshTarget, open_transport
from tests.harness import PluginProcess
from tests.podfactory import config_map, container, pod_body, secret

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "slurm" / "loginnode"
NAME = "il-loginnode-bench"
HERE = Path("/tmp/il-loginnode-bench")
SHARED = Path("/tmp/il-loginnode-bench-shared")
PORT = 2224
KEYS = HERE / "ssh"


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "n": len(ordered),
    }


def target() -> SshTarget:
    return SshTarget(host="127.0.0.1", port=PORT, user="hpcuser", key_file=str(KEYS / "id_ed25519"),
                     known_hosts=str(KEYS / "known_hosts"))


async def pooled(n: int) -> list[float]:
    runner = SshRunner(target())
    await runner.run(["true"], timeout=10)  # the login itself is not per-command overhead
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await runner.run(["true"], timeout=10)
        times.append(time.perf_counter() - started)
        assert result.ok
    await runner.close()
    return times


def fresh(n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        transport = open_transport(target())
        chan = transport.open_session()
        chan.exec_command("true")
        assert chan.recv_exit_status() == 0
        transport.close()
        times.append(time.perf_counter() - started)
    return times


def openssh(n: int) -> list[float]:
    times = []
    argv = ["ssh", "-p", str(PORT), "-i", str(KEYS / "id_ed25519"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={KEYS / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "hpcuser@127.0.0.1", "true"]
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(argv, check=True, timeout=30, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def pod(i: int) -> dict[str, Any]:
    return pod_body(
        f"bench{i}",
        [container("c", ["sleep", "600"], volumeMounts=[{"name": "cm", "mountPath": "/cm"},
                                                        {"name": "s", "mountPath": "/s"}])],
        volumes=[{"name": "cm", "configMap": {"name": "cm"}}, {"name": "s", "secret": {"secretName": "s"}}],
        config_maps=[config_map("cm", {"a": "1", "b": "2"})], secrets=[secret("s", {"t": b"x"})],
    )


def create_latency(plugin: PluginProcess, creates: int) -> dict[str, Any]:
    bodies = [pod(i) for i in range(creates)]
    times = []
    for body in bodies:
        started = time.perf_counter()
        plugin.create(body)
        times.append(time.perf_counter() - started)
    for body in bodies:
        plugin.delete(body)
    return ms(times)


def node_plugin(workdir: Path, config: dict[str, Any]) -> PluginProcess:
    from tests.e2e import test_loginnode as t

    t.NAME = NAME  # the helpers address the container by name
    return t.NodePlugin(workdir, config).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--creates", type=int, default=40)
    args = parser.parse_args()
    env = {**os.environ, "LOGINNODE_NAME": NAME, "LOGINNODE_DIR": str(HERE), "LOGINNODE_SHARED": str(SHARED),
           "SSH_PORT": str(PORT), "SLURMCTLD_PORT": "7837", "SLURMD_PORT": "7838", "LOGINNODE_SRC": str(ROOT)}
    subprocess.run(["bash", str(ROOT / "podman" / "podman-setup.sh")], check=True, capture_output=True, timeout=900)
    started = time.perf_counter()
    subprocess.run(["bash", str(KIT / "loginnode-up.sh")], check=True, capture_output=True, timeout=1200, env=env)
    up_seconds = time.perf_counter() - started
    plugins: list[PluginProcess] = []
    try:
        fresh_n = max(10, args.commands // 10)
        result: dict[str, Any] = {
            "login_node_up_seconds": round(up_seconds, 2),
            "per_command": {
                "pooled_connection": ms(asyncio.run(pooled(args.commands))),
                "fresh_paramiko_connection": ms(fresh(fresh_n)),
                "fresh_openssh_process": ms(openssh(fresh_n)),
            },
        }
        base = {"Backend": "slurm", "ContainerRuntime": "apptainer", "PollInterval": 5, "CommandTimeout": 30,
                "LogFormat": "text"}
        ssh = {"SshHost": "127.0.0.1", "SshPort": PORT, "SshUser": "hpcuser", "SshKeyFile": str(KEYS / "id_ed25519"),
               "SshKnownHosts": str(KEYS / "known_hosts")}
        stamp = f"{os.getpid()}-{threading.get_ident() % 1000}"
        runs = {
            "ssh_sftp": {**base, **ssh, "DataTransfer": "sftp", "DataRootFolder": f"/home/hpcuser/bench-{stamp}",
                         "InstanceId": "bench-sftp"},
            "ssh_shared_root": {**base, **ssh, "SshUser": "root", "DataTransfer": "shared",
                                "DataRootFolder": str(SHARED / f"jobs-{stamp}"), "InstanceId": "bench-shared"},
        }
        creates: dict[str, Any] = {}
        for label, config in runs.items():
            workdir = Path(f"/tmp/il-bench-ssh/{label}-{stamp}")
            workdir.mkdir(parents=True, exist_ok=True)
            plugin = PluginProcess(workdir, config).start()
            plugins.append(plugin)
            creates[label] = create_latency(plugin, args.creates)
        workdir = SHARED / f"node-{stamp}"
        workdir.mkdir(parents=True, exist_ok=True)
        plugin = node_plugin(workdir, {**base, "InstanceId": "bench-local"})
        plugins.append(plugin)
        creates["local_on_login_node"] = create_latency(plugin, args.creates)
        result["create_latency"] = creates
    finally:
        for plugin in plugins:
            plugin.stop()
        subprocess.run(["bash", str(KIT / "loginnode-down.sh")], capture_output=True, timeout=60, env=env)
    text = json.dumps(result, indent=2)
    print(text)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "ssh.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
