"""SLURM's own reasons for ending a pod, for real: activeDeadlineSeconds (--time / --deadline) ends
with DeadlineExceeded, memory over the limit with OOMKilled, over HTTP against REAL slurmctld/slurmd.

Two private clusters (slurm/slurm-up.sh with their own state dirs, ports and node names), one per
kind of memory enforcement SLURM 22.05 offers:
  * cgroup: task/cgroup with ConstrainRAMSpace; the kernel's OOM killer acts inside the job's memory
    cgroup, only the biggest process dies, the job ends OUT_OF_MEMORY;
  * jobacct: jobacct_gather/linux with OverMemoryKill; slurmstepd polls every second and SIGKILLs
    the whole batch step, the job ends FAILED (JobLaunchFailure, 0:9), the kill named only in
    slurmstepd's line in the job's output.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, PluginProcess, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

STATE = os.environ.get("IL_REASONS_SLURM_STATE", "/tmp/il-slurm-reasons")
CLUSTERS = {
    # kind: (state dir, slurmctld port, slurmd port, node name: the cgroups are named after it)
    "cgroup": (Path(STATE), os.environ.get("IL_REASONS_CTLD_PORT", "6937"),
               os.environ.get("IL_REASONS_SLURMD_PORT", "6938"), "il-reasons-cg"),
    "jobacct": (Path(f"{STATE}-jobacct"), os.environ.get("IL_REASONS_JOBACCT_CTLD_PORT", "6947"),
                os.environ.get("IL_REASONS_JOBACCT_SLURMD_PORT", "6948"), "il-reasons-ja"),
}
# allocates and touches 10 MiB at a time up to 1 GiB; prints "survived" only if nothing stopped it
HOG = textwrap.dedent(
    """
    import time
    chunks = []
    for _ in range(100):
        chunk = bytearray(10 * 2**20)
        chunk[::4096] = b"x" * len(chunk[::4096])
        chunks.append(chunk)
        time.sleep(0.05)
    print("survived", flush=True)
    """
)
# SIGKILLs the pod runner (SLURM's batch script, the topmost `slurm_script` above this process);
# `$$$$`: Kubernetes expands `$$` in a command to `$`
KILL_BATCH_SCRIPT = textwrap.dedent(
    """
    echo up
    pid=$$$$ top=
    while [ "$pid" -gt 1 ]; do
      case $(tr '\\0' ' ' < /proc/$pid/cmdline) in *slurm_script*) top=$pid ;; esac
      pid=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$pid/status)
    done
    kill -9 "$top"
    sleep 30
    """
)


def start_cluster(kind: str) -> dict[str, str]:
    state, ctld, slurmd, node = CLUSTERS[kind]
    env = {**os.environ, "SLURM_MEMORY_ENFORCEMENT": kind, "SLURM_NODE_NAME": node, "SLURM_MIN_JOB_AGE": "10",
           "SLURMCTLD_PORT": ctld, "SLURMD_PORT": slurmd}
    result = subprocess.run(["bash", str(ROOT / "slurm" / "slurm-up.sh"), str(state)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return {"SLURM_CONF": str(state / "slurm.conf"), "state": str(state)}


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, dict[str, str]]]:
    started = {kind: start_cluster(kind) for kind in CLUSTERS}
    yield started
    for cluster in started.values():
        subprocess.run(["bash", str(ROOT / "slurm" / "slurm-down.sh"), cluster["state"]], capture_output=True,
                       timeout=60)


@pytest.fixture
def factory(tmp_path: Path, clusters: dict[str, dict[str, str]]) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(kind: str) -> PluginProcess:
        workdir = tmp_path / f"plugin{len(started)}"
        workdir.mkdir()
        process = PluginProcess(
            workdir,
            {"Backend": "slurm", "ContainerRuntime": "none", "LogFormat": "text",
             "InstanceId": f"r{len(started)}-{tmp_path.name[-12:]}"},
            env={"SLURM_CONF": clusters[kind]["SLURM_CONF"]},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


def slurm(cluster: dict[str, str], *argv: str) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                            env={**os.environ, "SLURM_CONF": cluster["SLURM_CONF"]})
    return result.stdout


def terminated(status: dict[str, Any], name: str) -> dict[str, Any]:
    state = states(status)[name]
    assert "terminated" in state, status
    return dict(state["terminated"])


def seconds(start: str, end: str) -> float:
    """Whole seconds between two RFC 3339 UTC times (the runner writes nanoseconds)."""
    def parse(text: str) -> datetime:
        return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return (parse(end) - parse(start)).total_seconds()


# ---------------------------------------------------------------------------------------------
# memory


def test_memory_over_the_limit_is_oomkilled_by_the_jobs_cgroup(factory: Callable[..., PluginProcess],
                                                               clusters: dict[str, dict[str, str]]) -> None:
    plugin = factory("cgroup")
    body = pod_body(
        "oom-cgroup",
        [
            container("hog", ["python3", "-c", HOG], resources={"limits": {"memory": "64Mi"}}),
            # the OOM killer takes the biggest process of the job's cgroup: the other container lives on
            container("calm", ["sh", "-c", "sleep 4; echo calm"], resources={"limits": {"memory": "32Mi"}}),
        ],
    )
    job_id = plugin.create(body)["PodJID"]
    status = plugin.wait_done(body, timeout=60)
    hog, calm = terminated(status, "hog"), terminated(status, "calm")
    assert hog["reason"] == "OOMKilled" and hog["exitCode"] == 137, hog
    assert hog["message"].startswith("OOMKilled: SLURM OUT_OF_MEMORY"), hog
    assert f"oom-kill event(s) in StepId={job_id}.batch" in hog["message"] and f"job {job_id}" in hog["message"]
    assert calm["reason"] == "Completed" and calm["exitCode"] == 0, calm
    assert "survived" not in plugin.logs(body, "hog").text
    assert plugin.logs(body, "calm").text == "calm\n"
    # SLURM's own verdict, and the limit it enforced (the pod's 96 MiB)
    assert slurm(clusters["cgroup"], "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State").split()[-1] == \
        "OUT_OF_MEMORY"
    log = Path(clusters["cgroup"]["state"], "log", "slurmd-il-reasons-cg.log").read_text()
    assert f"[{job_id}.batch] task/cgroup: _memcg_initialize: job: alloc=96MB mem.limit=96MB" in log


def test_memory_over_the_limit_is_oomkilled_by_jobacct_gather(factory: Callable[..., PluginProcess],
                                                              clusters: dict[str, dict[str, str]]) -> None:
    plugin = factory("jobacct")
    body = pod_body("oom-jobacct", [container("hog", ["python3", "-c", HOG],
                                              resources={"limits": {"memory": "64Mi"}})])
    job_id = plugin.create(body)["PodJID"]
    status = plugin.wait_done(body, timeout=60)
    hog = terminated(status, "hog")
    assert hog["reason"] == "OOMKilled" and hog["exitCode"] == 137, hog
    # slurmstepd's own line: the step, the usage it saw and the 64 MiB limit
    assert hog["message"].startswith(f"OOMKilled: SLURM FAILED (StepId={job_id}.batch exceeded memory limit ("), hog
    assert "> 67108864), being killed)" in hog["message"], hog
    assert "survived" not in plugin.logs(body, "hog").text
    state = slurm(clusters["jobacct"], "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State,ExitCode")
    assert state.split()[-1] == "FAILED|0:9", state


def test_a_kill_without_slurms_memory_line_is_not_oomkilled(factory: Callable[..., PluginProcess],
                                                            clusters: dict[str, dict[str, str]]) -> None:
    # the same end as jobacct's kill (batch step SIGKILLed: FAILED, 0:9), but no memory involved
    plugin = factory("jobacct")
    body = pod_body("kill9", [container("c", ["sh", "-c", KILL_BATCH_SCRIPT])])
    job_id = plugin.create(body)["PodJID"]
    status = plugin.wait_done(body, timeout=60)
    entry = terminated(status, "c")
    # the runner is gone: the container's fate is unknown, not an OOM
    assert entry["reason"] == "ContainerStatusUnknown" and entry["exitCode"] == 137, entry
    assert entry["message"].startswith("ContainerStatusUnknown: SLURM FAILED"), entry
    state = slurm(clusters["jobacct"], "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State,ExitCode")
    assert state.split()[-1] == "FAILED|0:9", state


# ---------------------------------------------------------------------------------------------
# activeDeadlineSeconds


def test_active_deadline_ends_running_pending_and_late_pods_with_deadline_exceeded(
    factory: Callable[..., PluginProcess], clusters: dict[str, dict[str, str]]
) -> None:
    cluster = clusters["cgroup"]
    plugin = factory("cgroup")
    # holds both (fake) GPUs of the node, so a pod asking for one stays pending
    blocker = slurm(cluster, "sbatch", "--parsable", "--gres=gpu:2", "--mem=10", "-o", "/dev/null",
                    "--wrap", "sleep 300").strip()
    assert blocker.isdigit()
    try:
        running = pod_body("dl-run", [container("c", ["sh", "-c", "echo started; sleep 600"])],
                           activeDeadlineSeconds=20)
        pending = pod_body("dl-pending", [container("c", ["true"], resources={"limits": {"nvidia.com/gpu": "1"}})],
                           activeDeadlineSeconds=10)
        late = pod_body("dl-late", [container("c", ["true"])], activeDeadlineSeconds=60)
        late["pod"]["status"]["startTime"] = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = time.monotonic()
        plugin.create(late)
        run_id = plugin.create(running)["PodJID"]
        plugin.create(pending)

        # the deadline's own --deadline never stops a job that can still run to it
        plugin.wait_status(running, lambda s: "running" in states(s)["c"], timeout=30)
        job = slurm(cluster, "scontrol", "show", "job", run_id)
        assert "JobState=RUNNING" in job and "TimeLimit=00:01:00" in job, job

        # a pod whose deadline passed before it was submitted: SLURM ends it at its first scheduling pass
        entry = terminated(plugin.wait_done(late, timeout=45), "c")
        assert entry["reason"] == "DeadlineExceeded" and entry["exitCode"] == 137, entry
        assert entry["message"].startswith("DeadlineExceeded: SLURM DEADLINE"), entry
        assert "never started" in entry["message"], entry

        # still pending at its deadline: SLURM removes it (its deadline scan runs every ~30 s)
        entry = terminated(plugin.wait_done(pending, timeout=60), "c")
        assert entry["reason"] == "DeadlineExceeded" and "SLURM DEADLINE" in entry["message"], entry
        assert time.monotonic() - created >= 10

        # running at its deadline: SLURM's time limit (one minute, enforced within ~30 s) ends it
        status = plugin.wait_done(running, timeout=120)
        entry = terminated(status, "c")
        assert entry["reason"] == "DeadlineExceeded" and entry["exitCode"] in (137, 143), entry
        assert entry["message"].startswith("DeadlineExceeded: SLURM TIMEOUT"), entry
        assert seconds(entry["startedAt"], entry["finishedAt"]) >= 20, entry
        assert plugin.logs(running, "c").text == "started\n"
    finally:
        slurm(cluster, "scancel", blocker)
