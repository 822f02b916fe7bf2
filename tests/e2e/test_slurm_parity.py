"""SLURM completeness: every feature of the Go SLURM plugin, and past it, over HTTP against
a REAL slurmctld/slurmd.

These tests run on a private cluster of their own (slurm/slurm-up.sh with another state dir and
ports, extra partitions `low`/`high` and partition-priority preemption through SLURM_EXTRA_CONF):
they take the node down, drain it and preempt jobs, which must not disturb the shared test cluster.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("IL_PARITY_SLURM_STATE", "/tmp/il-slurm-parity"))
EXTRA_CONF = "\n".join(
    [
        "PreemptType=preempt/partition_prio",
        "PreemptMode=CANCEL",
        "PartitionName=low Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=1",
        "PartitionName=high Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10",
    ]
)
QOS_REFUSAL = (
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)"
)


# ---------------------------------------------------------------------------------------------
# the private cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "SLURM_MIN_JOB_AGE": "10",
        "SLURMCTLD_PORT": os.environ.get("IL_PARITY_CTLD_PORT", "6927"),
        "SLURMD_PORT": os.environ.get("IL_PARITY_SLURMD_PORT", "6928"),
        "SLURM_EXTRA_CONF": EXTRA_CONF,
    }
    result = subprocess.run(
        ["bash", str(ROOT / "slurm" / "slurm-up.sh"), str(STATE)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    conf = {"SLURM_CONF": str(STATE / "slurm.conf")}
    yield conf
    subprocess.run(["bash", str(ROOT / "slurm" / "slurm-down.sh"), str(STATE)], capture_output=True, timeout=60)


def slurm(cluster: dict[str, str], *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check,
                          env={**os.environ, **cluster})


@pytest.fixture
def factory(tmp_path: Path, cluster: dict[str, str]) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(runtime: str = "none", workdir: Path | None = None, start: bool = True, **config: Any) -> PluginProcess:
        workdir = workdir or tmp_path / f"plugin{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir,
            {"Backend": "slurm", "ContainerRuntime": runtime, "LogFormat": "text",
             "InstanceId": f"p{len(started)}-{tmp_path.name[-12:]}", **config},
            env=cluster,
        )
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.stop()
    # nothing of ours may stay in the queue (a later test needs the whole node)
    out = slurm(cluster, "squeue", "-h", "-o", "%i").stdout.split()
    if out:
        slurm(cluster, "scancel", *out)


def squeue_field(cluster: dict[str, str], job_id: str, fmt: str) -> str:
    return slurm(cluster, "squeue", "-h", "-t", "all", "-j", job_id, "-o", fmt).stdout.strip()


def scontrol(cluster: dict[str, str], job_id: str) -> str:
    return slurm(cluster, "scontrol", "show", "job", job_id).stdout


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running(status: dict[str, Any]) -> bool:
    return all("running" in c["state"] for c in status["containers"])


def node_name(cluster: dict[str, str]) -> str:
    return slurm(cluster, "sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]


def restore_node(cluster: dict[str, str]) -> None:
    node = node_name(cluster)
    slurm(cluster, "scontrol", "update", f"nodename={node}", "state=resume")

    def idle() -> bool:
        states_ = set(slurm(cluster, "sinfo", "-h", "-N", "-o", "%T").stdout.split())
        return states_ <= {"idle", "mixed", "allocated"} and bool(states_)

    wait_for(idle, 30, "the node to be back")


# ---------------------------------------------------------------------------------------------
# annotations


def test_flags_with_short_options_and_separate_values(factory: Callable[..., PluginProcess],
                                                      cluster: dict[str, str]) -> None:
    plugin = factory(DefaultNamespacePolicy={"Partitions": ["debug", "low", "high"]})
    body = pod_body("flags", [container("c", ["sleep", "30"])],
                    annotations={"slurm-job.vk.io/flags": "-p low -t 60 -J my-name -c 2"})
    job_id = plugin.create(body)["PodJID"]
    assert squeue_field(cluster, job_id, "%P|%l|%j|%C") == "low|1:00:00|my-name|2"
    legacy = pod_body("legacy", [container("c", ["sleep", "30"])], annotations={"job.vk.io/flags": "--partition high"})
    assert squeue_field(cluster, plugin.create(legacy)["PodJID"], "%P") == "high"
    refused = pod_body("nope", [container("c", ["true"])], annotations={"slurm-job.vk.io/flags": "-p low -o /etc/x"})
    response = plugin.client.post("/create", json=refused)
    assert response.status_code == 403 and "'-o /etc/x'" in response.json()["error"]


def test_raw_shell_annotations_wstunnel_pre_exec_mesh_and_pod_ip(factory: Callable[..., PluginProcess]) -> None:
    mesh = textwrap.dedent(
        """\
        cat <<'EOFMESH' > $TMPDIR/mesh.sh
        #!/bin/bash
        echo "mesh wraps: $*" > mesh.marker
        exec "$@"
        EOFMESH
        """
    )
    annotations = {
        "interlink.eu/wstunnel-client-commands": "echo wstunnel-ran > wstunnel.marker",
        "slurm-job.vk.io/pre-exec": mesh + 'echo "pre-exec POD_IP=$POD_IP" > pre-exec.marker\n',
        "interlink.eu/pod-ip": "10.1.2.3",
    }
    body = pod_body("raw", [container("c", ["sh", "-c", "echo in-container"])], annotations=annotations)
    closed = factory()
    for key in ("interlink.eu/wstunnel-client-commands", "slurm-job.vk.io/pre-exec"):
        only = pod_body("raw", [container("c", ["true"])], annotations={key: annotations[key]})
        response = closed.client.post("/create", json=only)
        assert response.status_code == 403, response.text
        assert key in response.json()["error"] and "AllowRawShell" in response.json()["error"]

    plugin = factory(AllowRawShell=True)
    plugin.create(body)
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0}
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    assert (job_dir / "wstunnel.marker").read_text() == "wstunnel-ran\n"
    assert (job_dir / "pre-exec.marker").read_text() == "pre-exec POD_IP=10.1.2.3\n"
    # the heredoc went to mesh.sh in the job dir, and the containers ran inside it (as its arguments)
    assert (job_dir / "mesh.sh").read_text().startswith("#!/bin/bash\n")
    assert (job_dir / "mesh.marker").read_text() == f"mesh wraps: bash {job_dir}/pod-runner.sh --wrapped\n"
    assert plugin.logs(body, "c").text == "in-container\n"


def test_interlink_job_script_runs_as_the_pseudo_container(factory: Callable[..., PluginProcess]) -> None:
    body = pod_body("js", [container("a", ["true"]), container("b", ["true"])],
                    init_containers=[container("i", ["false"])])
    body["jobScript"] = "#!/bin/bash\necho from-job-script\nexit 4\n"
    closed = factory()
    response = closed.client.post("/create", json=body)
    assert response.status_code == 403 and "jobScript" in response.json()["error"]
    plugin = factory(AllowRawShell=True)
    plugin.create(body)
    status = plugin.wait_done(body)
    assert exit_codes(status) == {"i": 0, "a": 4, "b": 4}  # the script replaces every container
    assert plugin.logs(body, "a").text == "from-job-script\n" == plugin.logs(body, "b").text


def test_singularity_annotations_reach_the_runtime(factory: Callable[..., PluginProcess], tmp_path: Path) -> None:
    """Apptainer cannot be installed on Debian 12 (local-backends.md §2): a stand-in binary records the
    argv the job gives it and runs the command on the host; SLURM, the runner and the policy are real."""
    shim = tmp_path / "apptainer-standin"
    shim.write_text(textwrap.dedent(
        """\
        #!/bin/bash
        # stand-in for apptainer: records its argv, then runs the command after the image on the host
        printf '%s\\n' "$@" > apptainer.argv
        shift
        while [[ $1 == -* ]]; do
          case $1 in --bind|--pwd) shift 2 ;; *) shift ;; esac
        done
        echo "image=$1"
        shift
        exec "$@"
        """
    ))
    shim.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    plugin = factory("apptainer", SingularityPath=str(shim), AllowedHostPaths=[str(data)], ImagePrefix="docker://")
    annotations = {
        "slurm-job.vk.io/image-root": "oras://registry.example/",
        "slurm-job.vk.io/singularity-mounts": f"--bind {data}:/data",
        "job.vk.io/singularity-options": "--cleanenv --containall",
    }
    body = pod_body("sing", [container("c", ["echo", "ran"], image="lib/tool:1")], annotations=annotations)
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body)) == {"c": 0}
    assert plugin.logs(body, "c").text == "image=oras://registry.example/lib/tool:1\nran\n"
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    argv = (job_dir / "apptainer.argv").read_text().splitlines()
    assert argv[:2] == ["exec", "--no-eval"]
    assert argv.index(f"--bind={data}:/data") < argv.index("--cleanenv") < argv.index("--containall")
    outside = pod_body("sing2", [container("c", ["true"])],
                       annotations={"slurm-job.vk.io/singularity-mounts": "--bind /etc:/data"})
    response = plugin.client.post("/create", json=outside)
    assert response.status_code == 403 and "'/etc' is not allowed" in response.json()["error"]


def test_mpi_flags_run_the_container_once_per_task(factory: Callable[..., PluginProcess]) -> None:
    plugin = factory()
    body = pod_body(
        "mpi",
        [container("c", ["sh", "-c", 'echo "rank $SLURM_PROCID of $SLURM_NTASKS"'])],
        annotations={"slurm-job.vk.io/flags": "--ntasks=2", "slurm-job.vk.io/mpi-flags": "--kill-on-bad-exit=1"},
    )
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body, timeout=60)) == {"c": 0}
    assert sorted(plugin.logs(body, "c").text.splitlines()) == ["rank 0 of 2", "rank 1 of 2"]
    refused = pod_body("mpi2", [container("c", ["true"])], annotations={"slurm-job.vk.io/mpi-flags": "--export=ALL"})
    response = plugin.client.post("/create", json=refused)
    assert response.status_code == 403 and "reserved" in response.json()["error"]


# ---------------------------------------------------------------------------------------------
# flavors, GPUs, namespaces, users


def test_flavor_defaults_apply_and_gpu_pods_pick_a_gpu_flavor(factory: Callable[..., PluginProcess],
                                                              cluster: dict[str, str]) -> None:
    flavors = {
        "small": {"CPUDefault": 3, "MemoryDefault": "700M", "SlurmFlags": ["-p low"]},
        "gpu-one": {"SlurmFlags": ["--gres=gpu:1"]},
        "gpu-two": {"CPUDefault": 2, "SlurmFlags": ["--gres=gpu:2", "--partition=high"]},
    }
    plugin = factory(Flavors=flavors, GresMap={"nvidia.com/mig-1g.5gb": "gpu"})
    body = pod_body("fl", [container("c", ["sleep", "30"])], annotations={"slurm-job.vk.io/flavor": "small"})
    job_id = plugin.create(body)["PodJID"]
    assert squeue_field(cluster, job_id, "%C %m %P") == "3 700M low"
    plugin.delete(body)

    gpu = pod_body("gp", [container("c", ["sleep", "30"], resources={"limits": {"nvidia.com/gpu": "2"}})])
    job_id = plugin.create(gpu)["PodJID"]
    assert squeue_field(cluster, job_id, "%C %P %b") == "2 high gres:gpu:2"
    plugin.delete(gpu)

    mig = pod_body("mig", [container("c", ["sleep", "30"], resources={"limits": {"nvidia.com/mig-1g.5gb": "1"}})])
    job_id = plugin.create(mig)["PodJID"]
    assert squeue_field(cluster, job_id, "%b") == "gres:gpu:1"
    plugin.delete(mig)
    unmapped = pod_body("mig2", [container("c", ["true"], resources={"limits": {"nvidia.com/mig-2g.10gb": "1"}})])
    response = plugin.client.post("/create", json=unmapped)
    assert response.status_code == 422 and "GresMap" in response.json()["error"]
    unknown = pod_body("fl2", [container("c", ["true"])], annotations={"slurm-job.vk.io/flavor": "huge"})
    assert plugin.client.post("/create", json=unknown).status_code == 422


def test_namespace_policy_accounts_partitions_and_flavor_choices(factory: Callable[..., PluginProcess],
                                                                 cluster: dict[str, str]) -> None:
    plugin = factory(
        NamespacePolicy={"team-a": {"Accounts": ["proj1", "proj2"], "QOS": ["normal"], "Partitions": ["low", "debug"]}},
        Flavors={"big": {"SlurmFlags": ["-p high"]}},
    )
    body = pod_body("ns", [container("c", ["sleep", "30"])], namespace="team-a")
    job_id = plugin.create(body)["PodJID"]
    assert squeue_field(cluster, job_id, "%a %P") == "proj1 low"  # the namespace's first choices
    other = pod_body("ns2", [container("c", ["sleep", "30"])], namespace="team-a",
                     annotations={"slurm-job.vk.io/flags": "-A proj2 -p debug"})
    assert squeue_field(cluster, plugin.create(other)["PodJID"], "%a %P") == "proj2 debug"
    for namespace, extra in (
        ("team-a", {"slurm-job.vk.io/flags": "-A someone-else"}),
        ("team-a", {"slurm-job.vk.io/flavor": "big"}),  # the flavor's partition is not the namespace's
        ("team-b", {"slurm-job.vk.io/flags": "-p low"}),  # no policy: no choice at all
    ):
        refused = pod_body("ns3", [container("c", ["true"])], namespace=namespace, annotations=extra)
        response = plugin.client.post("/create", json=refused)
        assert response.status_code == 403, (extra, response.text)


def test_run_as_user_only_where_the_namespace_may(factory: Callable[..., PluginProcess], tmp_path: Path,
                                                  cluster: dict[str, str]) -> None:
    user, uid = "ilparity", 4271
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-u", str(uid), "-s", "/bin/sh", user], check=True, timeout=30)
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
    path = tmp_path
    while str(path).startswith("/tmp/") and path != Path("/tmp"):
        path.chmod((path.stat().st_mode & 0o7777) | 0o711)  # the job's user traverses to its job dir
        path = path.parent
    plugin = factory(NamespacePolicy={"team-u": {"Users": [user]}})
    body = pod_body("uid", [container("c", ["sh", "-c", "id -u; id -g; sleep 2"])], namespace="team-u",
                    securityContext={"runAsUser": uid})
    job_id = plugin.create(body)["PodJID"]
    assert squeue_field(cluster, job_id, "%U") == str(uid)
    job_dir = Path(plugin.config["DataRootFolder"]) / f"team-u-{body['pod']['metadata']['uid']}"
    stat = job_dir.stat()
    assert stat.st_uid == uid and oct(stat.st_mode & 0o777) == "0o750" and stat.st_gid == os.getegid()
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0}
    gid = subprocess.run(["id", "-g", user], capture_output=True, text=True, check=True).stdout.strip()
    assert plugin.logs(body, "c").text == f"{uid}\n{gid}\n"
    for namespace, run_as in (("team-u", uid + 1), ("default", uid)):
        refused = pod_body("uid2", [container("c", ["true"])], namespace=namespace,
                           securityContext={"runAsUser": run_as})
        response = plugin.client.post("/create", json=refused)
        assert response.status_code == 403 and "runAsUser" in response.json()["error"], response.text


# ---------------------------------------------------------------------------------------------
# probes and lifecycle hooks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probes_and_lifecycle_hooks(factory: Callable[..., PluginProcess], tmp_path: Path) -> None:
    web_port, tcp_port = free_port(), free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    plugin = factory(EnableProbes=True)
    server = f"import http.server as h; h.HTTPServer(('127.0.0.1', {web_port}), h.SimpleHTTPRequestHandler).serve_forever()"
    listener = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {tcp_port})); s.listen(); time.sleep(600)"
    alive = marks / "alive"
    body = pod_body(
        "probes",
        [
            container(
                "web", ["sh", "-c", f"sleep 3; exec python3 -c \"{server}\""],
                readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                ports=[{"name": "http", "containerPort": web_port}],
                lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"echo started > {marks}/poststart"]}},
                           "preStop": {"exec": {"command": ["sh", "-c", f"echo stopping > {marks}/prestop"]}}},
            ),
            container(
                "tcp", ["sh", "-c", f"sleep 3; exec python3 -c \"{listener}\""],
                startupProbe={"tcpSocket": {"port": tcp_port}, "periodSeconds": 1, "failureThreshold": 30},
            ),
            container(
                "live", ["sh", "-c", f"touch {alive}; sleep 4; rm -f {alive}; sleep 600"],
                livenessProbe={"exec": {"command": ["test", "-e", str(alive)]}, "periodSeconds": 1,
                               "failureThreshold": 2},
            ),
        ],
        restart_policy="Always",
        terminationGracePeriodSeconds=5,
    )
    plugin.create(body)
    first = plugin.wait_status(body, running, timeout=30)
    entries = {c["name"]: c for c in first["containers"]}
    assert entries["web"]["ready"] is False  # running, not ready until the readiness probe passes
    assert entries["tcp"]["started"] is False and entries["tcp"]["ready"] is False
    assert entries["live"]["ready"] is True  # no readiness probe: ready while it runs
    plugin.wait_status(body, lambda s: all(c["ready"] for c in s["containers"] if c["name"] != "live"), timeout=30)
    tcp = {c["name"]: c for c in plugin.status(body)["containers"]}["tcp"]  # type: ignore[index]
    assert tcp["started"] is True
    # liveness: the container is killed and restarted (restartPolicy Always), not the pod
    restarted = plugin.wait_status(
        body, lambda s: {c["name"]: c for c in s["containers"]}["live"]["restartCount"] >= 1, timeout=40
    )
    live = {c["name"]: c for c in restarted["containers"]}["live"]
    assert live["lastState"]["terminated"]["exitCode"] in (137, 143)
    web = {c["name"]: c for c in restarted["containers"]}["web"]
    assert web["restartCount"] == 0 and "running" in web["state"]
    assert (marks / "poststart").read_text() == "started\n"
    assert plugin.delete(body).status_code == 200
    wait_for(lambda: (marks / "prestop").exists(), 20, "the preStop hook")
    assert (marks / "prestop").read_text() == "stopping\n"


# ---------------------------------------------------------------------------------------------
# throttling, requeue, preemption, node failure


def test_submission_throttled_by_a_qos_limit_waits_and_is_submitted_later(
    factory: Callable[..., PluginProcess], tmp_path: Path
) -> None:
    """No slurmdbd here, so no QOS limit can refuse a job: a counting stand-in around the real sbatch
    answers SLURM's exact QOS refusal (stderr and exit code of sbatch 22.05) for its first two calls."""
    counter = tmp_path / "sbatch-calls"
    wrapper = tmp_path / "sbatch-throttled-standin"
    wrapper.write_text(textwrap.dedent(
        f"""\
        #!/bin/bash
        # stand-in: the first 2 submissions are refused as SLURM refuses them over QOS MaxSubmitJobs
        n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))
        echo "$n" > {counter}
        if [ "$n" -le 2 ]; then
          printf '%s\\n' {json.dumps(QOS_REFUSAL.splitlines()[0])} {json.dumps(QOS_REFUSAL.splitlines()[1])} >&2
          exit 1
        fi
        exec sbatch "$@"
        """
    ))
    wrapper.chmod(0o755)
    plugin = factory(SbatchPath=str(wrapper))
    body = pod_body("throttled", [container("c", ["sh", "-c", "echo finally"])])
    created = plugin.create(body)
    assert created["PodJID"] == f"pending-{body['pod']['metadata']['uid']}"
    waiting = plugin.status(body)["containers"][0]["state"]["waiting"]  # type: ignore[index]
    assert waiting["reason"] == "SubmitThrottled"
    assert "QOSMaxSubmitJobPerUserLimit" in waiting["message"]
    assert "Job violates accounting/QOS policy" in waiting["message"]
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0} and status["JID"].isdigit()
    assert counter.read_text().strip() == "3"


def test_requeue_when_enabled_counts_a_restart(factory: Callable[..., PluginProcess], cluster: dict[str, str]) -> None:
    plugin = factory(Requeue=True)
    body = pod_body("rq", [container("c", ["sh", "-c", "echo run; sleep 300"])], terminationGracePeriodSeconds=1)
    job_id = plugin.create(body)["PodJID"]
    assert "Requeue=1" in scontrol(cluster, job_id)
    plugin.wait_status(body, running, timeout=30)
    slurm(cluster, "scontrol", "requeue", job_id, check=True)
    requeued = plugin.wait_status(
        body, lambda s: s["containers"][0]["state"].get("waiting", {}).get("reason") == "Requeued", timeout=30
    )
    entry = requeued["containers"][0]
    assert entry["restartCount"] == 1 and "terminated" in entry["lastState"]
    assert f"job {job_id}" in entry["state"]["waiting"]["message"]
    slurm(cluster, "scontrol", "update", f"jobid={job_id}", "starttime=now", check=True)  # skip the requeue delay
    again = plugin.wait_status(body, running, timeout=30)
    assert again["containers"][0]["restartCount"] == 1
    assert plugin.logs(body, "c").text == "run\n"
    # the first run's log (sh may add "Terminated" for its killed child)
    assert plugin.logs(body, "c", Previous=True).text.startswith("run\n")


def test_preempted_job_reports_preempted(factory: Callable[..., PluginProcess], cluster: dict[str, str],
                                         tmp_path: Path) -> None:
    cpus = slurm(cluster, "sinfo", "-h", "-N", "-o", "%c").stdout.split()[0]
    plugin = factory(Flavors={"scavenger": {"CPUDefault": int(cpus), "SlurmFlags": ["--partition=low"]}})
    body = pod_body("victim", [container("c", ["sleep", "300"])], annotations={"slurm-job.vk.io/flavor": "scavenger"})
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, running, timeout=30)
    slurm(cluster, "sbatch", "-p", "high", "-c", cpus, "--mem=100", f"--chdir={tmp_path}", "--wrap", "sleep 2",
          check=True)
    status = plugin.wait_done(body, timeout=30)
    term = states(status)["c"]["terminated"]
    assert term["reason"] == "Preempted" and term["exitCode"] == 143, term
    assert term["message"].startswith("Preempted: SLURM PREEMPTED") and f"job {job_id} on node" in term["message"]


def test_node_failure_reports_node_fail(factory: Callable[..., PluginProcess], cluster: dict[str, str]) -> None:
    plugin = factory()
    body = pod_body("nf", [container("c", ["sleep", "300"])])
    plugin.create(body)
    plugin.wait_status(body, running, timeout=30)
    node = node_name(cluster)
    try:
        slurm(cluster, "scontrol", "update", f"nodename={node}", "state=down", "reason=parity-test", check=True)
        status = plugin.wait_done(body, timeout=30)
    finally:
        restore_node(cluster)
    term = states(status)["c"]["terminated"]
    assert term["reason"] == "NodeFail" and term["exitCode"] != 0, term
    assert term["message"].startswith("NodeFail: SLURM NODE_FAIL")


def test_ping_resources_and_drained_partition_taint(factory: Callable[..., PluginProcess],
                                                    cluster: dict[str, str]) -> None:
    plugin = factory(Partitions=["low"])
    wait_for(lambda: "resources" in plugin.ping(), 15, "the first resources")
    ping = plugin.ping()
    cpus = slurm(cluster, "sinfo", "-h", "-N", "-o", "%c").stdout.split()[0]
    assert ping["resources"]["cpu"] == cpus
    assert {"resourceType": "nvidia.com/gpu", "available": "2"} in ping["resources"]["accelerators"]
    assert ping["taints"] == []
    plugin.stop()
    node = node_name(cluster)
    try:
        slurm(cluster, "scontrol", "update", f"nodename={node}", "state=drain", "reason=parity-test", check=True)
        drained = factory(Partitions=["low"])
        wait_for(lambda: bool(drained.ping()["taints"]), 15, "the taint")
        ping = drained.ping()
    finally:
        restore_node(cluster)
    assert ping["taints"] == [{"key": "interlink.eu/partition-unavailable", "value": "true", "effect": "NoSchedule"}]
    assert "cpu" not in ping.get("resources", {})  # never 0: the field is left out


# ---------------------------------------------------------------------------------------------
# migration from the Go plugin, retention


GO_JOB = """\
#!/bin/bash
# what the Go plugin's job.sh does: runCtn NAME CMD, output to run-NAME.out, exit code to run-NAME.status
workingPath={job_dir}
printf '%s\\n' "This pod {name}/{uid} has been submitted to SLURM node ${{SLURMD_NODENAME}}."
runCtn() {{ ctn="$1"; shift; ( "$@" ) &> ${{workingPath}}/run-${{ctn}}.out & pidCtns="${{pidCtns}} $!:${{ctn}}"; }}
runCtn main bash -c 'for i in 1 2 3; do echo line$i; done; echo err >&2; {tail}'
for pidCtn in ${{pidCtns}}; do
  wait "${{pidCtn%:*}}"; printf '%s\\n' "$?" > "${{workingPath}}/run-${{pidCtn#*:}}.status"
done
"""


def go_job_dir(data_root: Path, cluster: dict[str, str], name: str, tail: str) -> tuple[str, str, Path]:
    """A Go-plugin job dir (JobID.jid, PodUID.uid, PodNamespace.ns, StartedAt.time) and its job, submitted
    with sbatch directly, as the Go plugin does."""
    uid = str(uuid.uuid4())
    job_dir = data_root / f"default-{uid}"
    job_dir.mkdir(parents=True)
    script = job_dir / "job.sh"
    script.write_text(GO_JOB.format(job_dir=job_dir, name=name, uid=uid, tail=tail))
    script.chmod(0o774)
    job_id = slurm(cluster, "sbatch", "--parsable", f"--job-name={uid}", f"--output={job_dir}/job.out",
                   "--mem=100", str(script), check=True).stdout.strip()
    (job_dir / "JobID.jid").write_text(job_id)
    (job_dir / "PodUID.uid").write_text(uid)
    (job_dir / "PodNamespace.ns").write_text("default")
    (job_dir / "StartedAt.time").write_text(time.strftime("%Y-%m-%d %H:%M:%S.123456789 +0000 UTC", time.gmtime()))
    return uid, job_id, job_dir


def test_go_plugin_job_dirs_are_adopted(factory: Callable[..., PluginProcess], cluster: dict[str, str],
                                        tmp_path: Path) -> None:
    data_root = tmp_path / "plugin0" / "jobs"
    uid, job_id, job_dir = go_job_dir(data_root, cluster, "go-running", "sleep 300")
    done_uid, _done_id, done_dir = go_job_dir(data_root, cluster, "go-done", "exit 3")
    out = job_dir / "run-main.out"
    wait_for(lambda: (done_dir / "run-main.status").exists() and out.exists() and out.stat().st_size > 0,
             30, "the Go jobs to run")
    plugin = factory()
    assert plugin.config["DataRootFolder"] == str(data_root)
    body = pod_body("go-running", [container("main", ["x"])], uid=uid)
    done = pod_body("go-done", [container("main", ["x"])], uid=done_uid)
    status = plugin.wait_status(body, running, timeout=30)
    assert status["JID"] == job_id and status["name"] == "go-running"
    assert exit_codes(plugin.wait_done(done, timeout=30)) == {"main": 3}
    assert plugin.logs(body, "main").text == "line1\nline2\nline3\nerr\n"
    assert plugin.logs(body, "main", Tail=1).text == "err\n"
    assert re.fullmatch(r"(\S+Z line\d\n){3}\S+Z err\n", plugin.logs(body, "main", Timestamps=True).text)
    assert plugin.logs(body, "main", SinceSeconds=3600).text.count("\n") == 4
    assert plugin.logs(done, "main").text == "line1\nline2\nline3\nerr\n"
    assert plugin.delete(body).status_code == 200
    wait_for(lambda: squeue_field(cluster, job_id, "%T") in ("CANCELLED", ""), 30, "scancel of the Go job")
    wait_for(lambda: not job_dir.exists(), 30, "the Go job dir to be removed")
    assert plugin.delete(done).status_code == 200


def test_finished_pods_never_deleted_expire_after_retention_days(factory: Callable[..., PluginProcess]) -> None:
    plugin = factory(RetentionDays=0.0001)  # 8.6 s
    body = pod_body("old", [container("c", ["echo", "bye"])])
    plugin.create(body)
    plugin.wait_done(body)
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    running_pod = pod_body("young", [container("c", ["sleep", "60"])])
    plugin.create(running_pod)
    assert job_dir.exists()
    plugin.stop()
    time.sleep(9)
    restarted = factory(workdir=plugin.workdir, InstanceId=plugin.config["InstanceId"], RetentionDays=0.0001)
    wait_for(lambda: not job_dir.exists(), 15, "the sweep at start")
    # the record goes right after its job dir (cleanup first, so a failed cleanup is retried)
    wait_for(lambda: restarted.status(body) is None, 5, "the expired pod forgotten")
    assert restarted.status(running_pod) is not None and not all_terminated(restarted.status(running_pod) or {})
