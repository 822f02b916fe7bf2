"""The plugin as a drop-in for the Go SLURM plugin: started the way interLink's docs start the Go plugin
(SLURMCONFIGPATH exported, the binary run in the background with its log and pid file, no --config), on a
SlurmConfig.yaml holding every key the Go plugin documents, with interLink's tracing variables, running a
pod on the REAL local cluster.

The Go plugin's runtime is singularity, which cannot be installed on Debian 12 (local-backends.md §2): a
stand-in binary records the argv the job gives it and runs the command on the host, so that the options
SingularityDefaultOptions maps reach a real command line. Spans go to a REAL OTLP/gRPC receiver (a gRPC
server here decoding ExportTraceServiceRequest with opentelemetry-proto).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.test_tracing import Receiver
from tests.harness import PluginProcess, exit_codes, free_port
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

STANDIN = """\
#!/bin/bash
# stand-in for singularity: records its argv, then runs the command after the image on the host
printf '%s\\n' "$@" > singularity.argv
shift
while [[ $1 == -* ]]; do
  case $1 in --bind|--pwd) shift 2 ;; *) shift ;; esac
done
shift
exec "$@"
"""


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.take("grpc", request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[Receiver, int]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Collector(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(grace=None)


@pytest.fixture
def site() -> Iterator[Path]:
    """The user's $HOME/.interlink of interLink's docs, traversable by the job's user."""
    base = Path(tempfile.mkdtemp(prefix="il-go-dropin-"))
    base.chmod(0o755)
    for sub in ("logs", "config", "jobs"):
        (base / sub).mkdir(mode=0o755)
        (base / sub).chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def go_slurm_config(base: Path, port: int, shim: Path, uid: int) -> dict[str, Any]:
    """Every key the Go plugin documents (its README, example configs and SlurmConfig struct)."""
    return {
        "SidecarPort": str(port),
        "Socket": "",
        "SbatchPath": shutil.which("sbatch"),
        "ScancelPath": shutil.which("scancel"),
        "SqueuePath": shutil.which("squeue"),
        "SinfoPath": shutil.which("sinfo"),
        "CommandPrefix": 'echo "CommandPrefix ran in job $SLURM_JOB_ID"',
        "ImagePrefix": "docker://",
        "SingularityPrefix": "",
        "SingularityPath": str(shim),
        "SingularityDefaultOptions": ["--nv", "--no-eval", "--containall", "--bind /cvmfs"],
        "ContainerRuntime": "singularity",
        "EnrootPath": "enroot",
        "EnrootDefaultOptions": ["--rw"],
        "EnrootPrefix": "",
        "ExportPodData": True,
        "DataRootFolder": f"{base}/jobs/",  # the Go plugin's trailing slash
        "Namespace": "vk",
        "Tsocks": False,
        "TsocksPath": "$WORK/tsocks-1.8beta5+ds1/libtsocks.so",
        "TsocksLoginNode": "login01",
        "BashPath": "/bin/bash",
        "VerboseLogging": True,
        "ErrorsOnlyLogging": False,
        "EnableProbes": False,
        "Flavors": {"small": {"Name": "small", "Description": "a small job", "CPUDefault": 2,
                              "MemoryDefault": "300M", "SlurmFlags": ["--job-name=go-dropin"]}},
        "DefaultFlavor": "small",
        "DefaultUID": uid,
        "Taints": [{"Key": "site.example/offload", "Value": "hpc", "Effect": "NoSchedule"}],
        "ResourceScriptPath": "",
        "VKConfigPath": "",
        "InterlinkPort": "0",  # interLink's own key, in the plugin configs of interLink's cookbook
        # not a Go key: the test's own state dir (the default /var/lib/interlink-plugin may belong to another
        # test's site user on this shared machine)
        "StateDir": f"{base}/state",
    }


def test_started_as_interlinks_docs_start_the_go_plugin(
    slurm_cluster: dict[str, str], site: Path, grpc_receiver: tuple[Receiver, int]
) -> None:
    receiver, collector_port = grpc_receiver
    try:
        job_user = pwd.getpwnam("interlink")
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "interlink"], capture_output=True, timeout=30)
        job_user = pwd.getpwnam("interlink")
    shim = site / "singularity"
    shim.write_text(STANDIN)
    shim.chmod(0o755)
    port = free_port()
    config_path = site / "config" / "SlurmConfig.yaml"
    config_path.write_text(yaml.safe_dump(go_slurm_config(site, port, shim, job_user.pw_uid)))
    # interLink's docs (cookbook, edge node, SLURM tab), with this plugin's binary and its subcommand
    binary = Path(sys.executable).parent / "interlink-plugin"
    start = textwrap.dedent(f"""\
        export SLURMCONFIGPATH={config_path}
        {binary} serve &> {site}/logs/plugin.log &
        echo $! > {site}/plugin.pid
        """)
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "SLURM_CONF": slurm_cluster["SLURM_CONF"],
           "SHARED_FS": "true", "ENABLE_TRACING": "1", "TELEMETRY_ENDPOINT": f"127.0.0.1:{collector_port}",
           "TELEMETRY_UNIQUE_ID": "go-dropin"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", start], check=True, timeout=30, env=env)
    pid = int((site / "plugin.pid").read_text())
    plugin = PluginProcess(site, {})  # not started: its client, on the port of the Go config
    plugin.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    body = pod_body("go", [container("c", ["sh", "-c", "echo ran as $(id -u)"], image="busybox")])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if plugin.client.get("/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail((site / "logs" / "plugin.log").read_text()[-3000:])
        ping = plugin.ping()
        assert ping["taints"] == [{"key": "site.example/offload", "value": "hpc", "effect": "NoSchedule"}], ping
        job_id = plugin.create(body)["PodJID"]
        done = plugin.wait_done(body, timeout=90)
        assert exit_codes(done) == {"c": 0}, done
        assert plugin.logs(body, "c").text == f"ran as {job_user.pw_uid}\n"  # DefaultUID
        job_dir = site / "jobs" / f"default-{body['pod']['metadata']['uid']}"
        argv = (job_dir / "singularity.argv").read_text().splitlines()
        # SingularityDefaultOptions: --containall applied, --no-eval always, --nv only for GPU pods, --bind dropped
        assert argv[:3] == ["exec", "--no-eval", "--containall"] and "--nv" not in argv and "/cvmfs" not in argv, argv
        assert "docker://busybox" in argv  # ImagePrefix
        runner_out = (job_dir / "runner.out").read_text()
        assert f"CommandPrefix ran in job {job_id}" in runner_out, runner_out
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
        assert "MinMemoryNode=300M" in shown and "JobName=go-dropin" in shown, shown  # DefaultFlavor
        assert plugin.delete(body).status_code == 200
        # interLink's tracing variables: OTLP/gRPC to TELEMETRY_ENDPOINT, service Plugin-<TELEMETRY_UNIQUE_ID>
        spans = receiver.wait_for(lambda spans: any(s.name == "POST /create" for s in spans))
        assert {s.resource["service.name"] for s in spans} == {"Plugin-go-dropin"}
        assert any(s.name == "sbatch" for s in spans)
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        plugin.client.close()
    log = [json.loads(line) for line in (site / "logs" / "plugin.log").read_text().splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in log]
    assert any(entry["level"] == "debug" for entry in log)  # VerboseLogging
    # the keys still without effect: one warning each, naming what to use instead
    for key, replacement in (("BashPath", "JobPath"), ("Tsocks", "JobEnvironment"), ("Namespace", "NamespacePolicy"),
                             ("ResourceScriptPath", "MaxCPU"), ("EnrootDefaultOptions", "enroot is not supported"),
                             ("InterlinkPort", "SidecarPort"), ("ExportPodData", "always mounted")):
        assert any(f"config key {key!r}" in m and replacement in m for m in messages), (key, messages)
    assert any("SingularityDefaultOptions: --bind=/cvmfs ignored" in m and "AllowedHostPaths" in m for m in messages)
    assert not any("unknown config key" in m for m in messages), messages
