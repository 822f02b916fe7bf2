"""The plugin over HTTP against a REAL slurmctld/slurmd (slurm/slurm-up.sh), as interLink drives it."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import config_map, container, pod_body, secret

pytestmark = pytest.mark.e2e


def scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10).stdout


def jobs_with_comment(comment: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%k"], capture_output=True, text=True, timeout=10
    ).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|", 1)[1] == comment]


def test_hello_world_end_to_end(plugin: PluginProcess) -> None:
    body = pod_body("hello", [container("hello", ["sh", "-c", "echo hello world; echo oops >&2"])])
    uid = body["pod"]["metadata"]["uid"]
    created = plugin.create(body)
    assert created["PodUID"] == uid and created["PodJID"].isdigit()
    job = scontrol(created["PodJID"])
    assert f"Comment=il:{uid}@" in job
    assert f"WorkDir={plugin.config['DataRootFolder']}/default-{uid}" in job
    assert "Requeue=0" in job

    status = plugin.wait_done(body)
    assert status["UID"] == uid and status["JID"] == created["PodJID"] and status["name"] == "hello"
    term = states(status)["hello"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", term["startedAt"])
    assert term["finishedAt"] >= term["startedAt"]
    assert f"job {created['PodJID']} on node" in term["message"]

    logs = plugin.logs(body, "hello")
    # stdout and stderr are two pipes: their relative order is not defined (as with the kubelet)
    assert logs.status_code == 200 and sorted(logs.text.splitlines(keepends=True)) == ["hello world\n", "oops\n"]
    stamped = plugin.logs(body, "hello", Timestamps=True).text.splitlines()
    assert len(stamped) == 2 and all(re.match(r"\d{4}-.*Z (hello world|oops)$", line) for line in stamped)

    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{uid}"
    assert job_dir.exists() and oct(job_dir.stat().st_mode & 0o777) == "0o700"
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 15
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not job_dir.exists(), "job dir kept after the job was gone"
    assert plugin.delete(body).status_code == 200  # idempotent
    assert plugin.status(body) is None


def test_array_shaped_create_of_interlink_0_4(plugin: PluginProcess) -> None:
    body = pod_body("legacy", [container("c", ["true"])])
    response = plugin.client.post("/create", json=[body])
    assert response.status_code == 200
    assert response.json()["PodUID"] == body["pod"]["metadata"]["uid"]
    assert exit_codes(plugin.wait_done(body)) == {"c": 0}
    response = plugin.client.post("/status", json=[body["pod"]])  # POST alias
    assert response.status_code == 200 and response.json()[0]["UID"] == body["pod"]["metadata"]["uid"]


def test_twenty_concurrent_identical_creates_leave_one_job(plugin: PluginProcess) -> None:
    body = pod_body("dup", [container("c", ["sleep", "1"])])
    uid = body["pod"]["metadata"]["uid"]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: plugin.client.post("/create", json=body), range(20)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["PodJID"] for a in answers}) == 1
    assert len(jobs_with_comment(f"il:{uid}@{plugin.config['InstanceId']}")) == 1


def test_init_containers_in_order_then_parallel_main_containers(plugin: PluginProcess) -> None:
    volumes = [{"name": "work", "emptyDir": {}}]
    mount = [{"name": "work", "mountPath": "/work"}]
    body = pod_body(
        "ordered",
        [
            container(
                "a", ["sh", "-c", "echo a-start >> /work/trace; sleep 2; echo a-end >> /work/trace"], volumeMounts=mount
            ),
            container(
                "b",
                [
                    "sh",
                    "-c",
                    "echo b-start >> /work/trace; sleep 2; echo b-end >> /work/trace; "
                    "while ! grep -q a-end /work/trace; do sleep 0.1; done; cat /work/trace",
                ],
                volumeMounts=mount,
            ),
        ],
        init_containers=[
            container("init1", ["sh", "-c", "echo init1 > /work/trace"], volumeMounts=mount),
            container("init2", ["sh", "-c", "echo init2 >> /work/trace"], volumeMounts=mount),
        ],
        volumes=volumes,
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status) == {"init1": 0, "init2": 0, "a": 0, "b": 0}
    assert [c["name"] for c in status["initContainers"]] == ["init1", "init2"]
    trace = plugin.logs(body, "b").text.splitlines()
    assert trace[:2] == ["init1", "init2"]
    assert trace.index("a-start") < trace.index("b-end") and trace.index("b-start") < trace.index("a-end")


def test_failing_init_container_stops_the_pod(plugin: PluginProcess) -> None:
    body = pod_body(
        "initfail",
        [container("main", ["sh", "-c", "echo must-not-run"])],
        init_containers=[container("bad", ["sh", "-c", "echo failing; exit 7"]), container("never", ["true"])],
    )
    plugin.create(body)
    status = plugin.wait_done(body)
    codes = exit_codes(status)
    assert codes["bad"] == 7 and codes["never"] != 0 and codes["main"] != 0
    assert states(status)["main"]["terminated"]["reason"] == "InitContainerFailed"
    assert plugin.logs(body, "bad").text == "failing\n"


def test_per_container_exit_codes(plugin: PluginProcess) -> None:
    body = pod_body("codes", [container("ok", ["true"]), container("three", ["sh", "-c", "exit 3"])])
    plugin.create(body)
    status = plugin.wait_done(body)
    assert exit_codes(status) == {"ok": 0, "three": 3}
    assert states(status)["three"]["terminated"]["reason"] == "Error"


def test_volumes_configmap_secret_projected_emptydir(plugin: PluginProcess) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\nabc==\n-----END CERTIFICATE-----\n"
    volumes = [
        {
            "name": "cfg",
            "configMap": {
                "name": "cfg-1",
                "items": [{"key": "app.yaml", "path": "conf/app.yaml", "mode": 0o600}],
                "defaultMode": 0o644,
            },
        },
        {"name": "sec", "secret": {"secretName": "sec-1", "defaultMode": 0o400}},
        {
            "name": "kube-api-access",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
        {"name": "shared", "emptyDir": {}},
    ]
    writer_mounts = [
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "sec", "mountPath": "/secrets", "readOnly": True},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        {"name": "shared", "mountPath": "/shared"},
    ]
    script = (
        "cat /etc/app/conf/app.yaml; stat -c '%a' /etc/app/conf/app.yaml /secrets/pw; "
        "printf '%s' \"$(cat /secrets/pw)\"; echo; cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; "
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "
        "echo shared-data > /shared/f; if echo x 2>/dev/null >/secrets/new; then echo RO-BROKEN; fi"
    )
    reader_script = "sleep 1; while [ ! -s /shared/f ]; do sleep 0.2; done; cat /shared/f; if echo x 2>/dev/null >/shared/g; then echo RO-BROKEN; fi"
    body = pod_body(
        "vols",
        [
            container("writer", ["sh", "-c", script], volumeMounts=writer_mounts),
            container(
                "reader",
                ["sh", "-c", reader_script],
                volumeMounts=[{"name": "shared", "mountPath": "/shared", "readOnly": True}],
            ),
        ],
        volumes=volumes,
        config_maps=[config_map("cfg-1", {"app.yaml": "a: 1\nb: 'two'\n"})],
        secrets=[secret("sec-1", {"pw": b"s3cr3t $(whoami) `id`"})],
        projected=[
            {
                "metadata": {"name": "kube-api-access", "creationTimestamp": None},
                "data": {"token": "eyJhbGciOi.fake", "ca.crt": pem, "namespace": "default"},
            }
        ],
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"writer": 0, "reader": 0}
    out = plugin.logs(body, "writer").text
    assert out == "a: 1\nb: 'two'\n600\n400\ns3cr3t $(whoami) `id`\n" + pem + "default\n"
    assert plugin.logs(body, "reader").text == "shared-data\n"


def test_env_and_args_byte_exact_with_k8s_expansion(plugin: PluginProcess) -> None:
    env = [
        {"name": "PLAIN", "value": "simple"},
        {"name": "QUOTES", "value": 'it\'s "quoted" \\ back'},
        {"name": "MULTI", "value": "line1\nline2\n"},
        {"name": "JSON", "value": '{"a": [1, "$(PLAIN)"], "b": "${HOME}"}'},
        {"name": "UNICODE", "value": "ümlaut – ✓ 日本"},
        {"name": "EMPTY", "value": ""},
    ]
    args = ["$(PLAIN)", "$$(PLAIN)", "$(UNDEFINED)", "$(QUOTES)", "`id`", "; rm -rf /", "a b  c", "$HOME", ""]
    body = pod_body(
        "env",
        [
            container(
                "c",
                [
                    "sh",
                    "-c",
                    'for a in "$@"; do printf "[%s]\\n" "$a"; done; env | sort | grep -E "^(PLAIN|QUOTES|JSON|UNICODE|EMPTY)="; printf "%s" "$MULTI" | od -c | head -2',
                    "sh",
                ],
                args=args,
                env=env,
            )
        ],
    )
    plugin.create(body)
    status = plugin.wait_done(body)
    assert exit_codes(status) == {"c": 0}
    lines = plugin.logs(body, "c").text.splitlines()
    assert lines[:9] == [
        "[simple]",
        "[$(PLAIN)]",
        "[$(UNDEFINED)]",
        '[it\'s "quoted" \\ back]',
        "[`id`]",
        "[; rm -rf /]",
        "[a b  c]",
        "[$HOME]",
        "[]",
    ]
    assert "EMPTY=" in lines and "PLAIN=simple" in lines and "UNICODE=ümlaut – ✓ 日本" in lines
    assert 'JSON={"a": [1, "$(PLAIN)"], "b": "${HOME}"}' in lines
    assert 'QUOTES=it\'s "quoted" \\ back' in lines
    assert any("l   i   n   e   1  \\n" in line for line in lines)


def test_resources_and_deadline_reach_sbatch(plugin: PluginProcess) -> None:
    body = pod_body(
        "res",
        [
            container("a", ["sleep", "30"], resources={"requests": {"cpu": "500m", "memory": "100Mi"}}),
            container(
                "b",
                ["sleep", "30"],
                resources={
                    "limits": {"cpu": "1200m", "memory": "0.5Gi", "nvidia.com/gpu": "1"},
                    "requests": {"cpu": "1"},
                },
            ),
        ],
        init_containers=[container("i", ["true"], resources={"limits": {"cpu": "3"}})],
        activeDeadlineSeconds=150,
    )
    job_id = plugin.create(body)["PodJID"]
    job = scontrol(job_id)
    # cpu: max(0.5 + 1.2 -> 2, init 3) = 3; memory: 100Mi + 512Mi = 612 MiB; 1 GPU; 150 s -> 3 min
    assert "NumCPUs=3" in job or "MinCPUsNode=3" in job, job
    assert "MinMemoryNode=612M" in job, job
    assert re.search(r"gres[:/]gpu[:=]1", job), job
    assert "TimeLimit=00:03:00" in job
    assert "Deadline=" in job and "Deadline=N/A" not in job
    plugin.delete(body)


def test_policy_refuses_forbidden_sbatch_flags_in_every_spelling(plugin: PluginProcess) -> None:
    for flags in (
        "--chdir=/etc",
        "-D /etc",
        "--chd=/etc",
        "--uid=0",
        "--ui=0",
        "--export=ALL",
        "-o /etc/passwd",
        "--comment=x",
    ):
        body = pod_body("flags", [container("c", ["true"])], annotations={"slurm-job.vk.io/flags": flags})
        response = plugin.client.post("/create", json=body)
        assert response.status_code == 403, (flags, response.text)
        assert "slurm-job.vk.io/flags" in response.json()["error"]
    ok = pod_body(
        "flags-ok", [container("c", ["true"])], annotations={"slurm-job.vk.io/flags": "--job-name=test-pod-cfg -t 2800"}
    )
    job_id = plugin.create(ok)["PodJID"]
    job = scontrol(job_id)
    assert "JobName=test-pod-cfg" in job and "TimeLimit=1-22:40:00" in job


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda b: b["pod"]["metadata"].pop("uid"), 422, "metadata.uid"),
        (
            lambda b: b["pod"]["spec"]["containers"][0]["resources"].update(limits={"cpu": "lots"}),
            422,
            "spec.containers[0].resources.limits[cpu]",
        ),
        (
            lambda b: b["pod"]["spec"]["volumes"].append({"name": "p", "persistentVolumeClaim": {"claimName": "x"}}),
            422,
            "spec.volumes[0].persistentVolumeClaim",
        ),
        (lambda b: b["pod"]["spec"]["containers"][0].pop("command"), 422, "spec.containers[0].command"),
        (lambda b: b["pod"]["spec"]["containers"].append(container("c", ["true"])), 422, "spec.containers"),
        (
            lambda b: b["pod"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/etc"}}),
            403,
            "spec.volumes[0].hostPath.path",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(plugin: PluginProcess, mutate: Any, status: int, field: str) -> None:
    body = pod_body("bad", [container("c", ["true"])])
    mutate(body)
    response = plugin.client.post("/create", json=body)
    assert response.status_code == status, response.text
    assert field in response.json()["error"]
    assert plugin.client.post("/create", content=b"{not json").status_code == 400


def test_restart_policy_on_failure_with_previous_logs(plugin: PluginProcess) -> None:
    script = "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run-$n; [ $n -ge 3 ]"
    body = pod_body(
        "restarts",
        [container("c", ["sh", "-c", script], volumeMounts=[{"name": "state", "mountPath": "/state"}])],
        volumes=[{"name": "state", "emptyDir": {}}],
        restart_policy="OnFailure",
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=60)
    entry = status["containers"][0]
    assert entry["restartCount"] == 2 and entry["state"]["terminated"]["exitCode"] == 0
    assert entry["lastState"]["terminated"]["exitCode"] == 1
    assert plugin.logs(body, "c").text == "run-3\n"
    assert plugin.logs(body, "c", Previous=True).text == "run-2\n"


def test_logs_options_and_follow(plugin: PluginProcess) -> None:
    body = pod_body("logs", [container("c", ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.5; done"])])
    plugin.create(body)
    plugin.wait_status(body, lambda s: "running" in s["containers"][0]["state"] or all_terminated(s), timeout=30)
    started = time.monotonic()
    with plugin.client.stream(
        "GET",
        "/getLogs",
        json={
            "Namespace": "default",
            "PodUID": body["pod"]["metadata"]["uid"],
            "PodName": "logs",
            "ContainerName": "c",
            "Opts": {"Follow": True, "Tail": 0, "Bytes": 0, "SinceTime": "0001-01-01T00:00:00Z"},
        },
    ) as stream:
        assert stream.status_code == 200
        text = b"".join(stream.iter_bytes()).decode()
    assert text == "".join(f"line{i}\n" for i in range(1, 6))
    status = plugin.wait_done(body)
    finished = datetime.fromisoformat(
        status["containers"][0]["state"]["terminated"]["finishedAt"].replace("Z", "+00:00")
    )
    assert time.monotonic() - started < 15
    assert finished.timestamp() <= time.time()
    assert plugin.logs(body, "c", Tail=2).text == "line4\nline5\n"
    assert plugin.logs(body, "c", Bytes=8).text == "line1\nli"
    assert plugin.logs(body, "c", SinceSeconds=3600).text.count("\n") == 5
    future = "2999-01-01T00:00:00Z"
    assert plugin.logs(body, "c", SinceTime=future).text == ""
    assert plugin.logs(body, "c", Tail=1, Bytes=1).status_code == 400
    assert plugin.logs(body, "nope").status_code == 400


def test_logs_of_a_container_not_started_yet(plugin: PluginProcess) -> None:
    body = pod_body("later", [container("c", ["true"])], annotations={"slurm-job.vk.io/flags": "--begin=now+3600"})
    plugin.create(body)
    response = plugin.logs(body, "c")
    assert response.status_code == 400
    assert "container c is waiting to start" in response.json()["error"]
    status = plugin.wait_status(
        body, lambda s: s["containers"][0]["state"].get("waiting", {}).get("reason") == "Pending"
    )
    assert status["JID"].isdigit()
    assert "BeginTime" in status["containers"][0]["state"]["waiting"]["message"]
    assert plugin.delete(body).status_code == 200


def test_delete_running_pod_sends_sigterm_to_every_container(plugin_factory: Any, tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    plugin = plugin_factory(AllowedHostPaths=[str(witness)])
    trap = "trap 'echo term-$0 > /w/$0; exit 0' TERM; while true; do sleep 0.1; done"
    mounts = [{"name": "w", "mountPath": "/w"}]
    body = pod_body(
        "victim",
        [
            container("a", ["sh", "-c", trap, "a"], volumeMounts=mounts),
            container("b", ["sh", "-c", trap, "b"], volumeMounts=mounts),
        ],
        volumes=[{"name": "w", "hostPath": {"path": str(witness), "type": "Directory"}}],
        terminationGracePeriodSeconds=5,
    )
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout=30)
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ((witness / "a").exists() and (witness / "b").exists()):
        time.sleep(0.2)
    assert (witness / "a").read_text() == "term-a\n" and (witness / "b").read_text() == "term-b\n"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "JobState=CANCELLED" not in scontrol(job_id) and scontrol(job_id):
        time.sleep(0.3)
    assert "JobState=RUNNING" not in scontrol(job_id)


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                          timeout=10).stdout.strip()


def test_delete_of_a_pending_job_no_poll_has_seen_is_prompt(plugin_factory: Any) -> None:
    """Created and deleted at once (no poll in between: the delete cannot know the job waits): the job is
    cancelled at once, and the delete neither waits for the command timeout nor marks SLURM unreachable."""
    plugin = plugin_factory(PollInterval=120, CommandTimeout=10)
    body = pod_body("never-starts", [container("c", ["true"])],
                    annotations={"slurm-job.vk.io/flags": "--begin=now+3600"})
    job_id = plugin.create(body)["PodJID"]
    assert squeue_state(job_id) == "PENDING"
    started = time.monotonic()
    response = plugin.delete(body)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert elapsed < 3, f"the delete took {elapsed:.1f}s"
    assert squeue_state(job_id) in ("CANCELLED", "")  # no longer pending
    assert all(taint["key"] != "interlink.eu/backend-unavailable" for taint in plugin.ping()["taints"])
    assert "unreachable" not in plugin.log_path.read_text()


def test_delete_of_a_running_job_no_poll_has_seen_sends_sigterm(plugin_factory: Any, tmp_path: Path) -> None:
    """After a restart the first delete also comes before any poll: a running job still gets SIGTERM."""
    witness = tmp_path / "witness"
    witness.mkdir()
    plugin = plugin_factory(PollInterval=120, AllowedHostPaths=[str(witness)])
    script = "trap 'echo term > /w/term; exit 0' TERM; touch /w/ready; while true; do sleep 0.1; done"
    body = pod_body("victim", [container("a", ["sh", "-c", script], volumeMounts=[{"name": "w", "mountPath": "/w"}])],
                    volumes=[{"name": "w", "hostPath": {"path": str(witness), "type": "Directory"}}],
                    terminationGracePeriodSeconds=30)
    job_id = plugin.create(body)["PodJID"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (witness / "ready").exists():
        time.sleep(0.2)
    assert (witness / "ready").exists() and squeue_state(job_id) == "RUNNING"
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 15  # well before the hard cancel at the end of the 30 s grace period
    while time.monotonic() < deadline and not (witness / "term").exists():
        time.sleep(0.2)
    assert (witness / "term").read_text() == "term\n"


def test_ping_reports_cluster_resources_and_taints(plugin_factory: Any) -> None:
    plugin = plugin_factory(Taints=[{"Key": "site/maintenance", "Value": "soon", "Effect": "NoSchedule"}])
    deadline = time.monotonic() + 10
    ping = plugin.ping()
    while "resources" not in ping and time.monotonic() < deadline:
        time.sleep(0.3)
        ping = plugin.ping()
    assert ping["status"] == "ok"
    assert ping["resources"]["cpu"] == "32"
    assert ping["resources"]["memory"] == "32000Mi"
    assert {"resourceType": "nvidia.com/gpu", "available": "2"} in ping["resources"]["accelerators"]
    assert ping["taints"] == [{"key": "site/maintenance", "value": "soon", "effect": "NoSchedule"}]


def test_podman_runtime_inside_slurm_jobs(plugin_factory: Any) -> None:
    plugin = plugin_factory(runtime="podman")
    env = [{"name": "MSG", "value": "from podman: $(x) `y` 'z'"}]
    body = (
        pod_body(
            "pm",
            [
                container("a", ["sh", "-c", 'echo "$MSG"; cat /etc/hostname >/dev/null'], env=env),
                container("entry", None),
            ],
            image="localhost/busybox:latest",
        )
        if False
        else pod_body(
            "pm",
            [
                container("a", ["sh", "-c", 'echo "$MSG"'], env=env),
                container("entry", None, image="localhost/busybox-entry:latest", args=["my-arg"]),
            ],
        )
    )
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status) == {"a": 0, "entry": 0}
    assert plugin.logs(body, "a").text == "from podman: $(x) `y` 'z'\n"
    assert plugin.logs(body, "entry").text == "entry my-arg\n"


def test_render_and_check_commands(plugin: PluginProcess, tmp_path: Path) -> None:
    body = pod_body(
        "render",
        [container("c", ["echo", "hi"])],
        volumes=[{"name": "s", "secret": {"secretName": "s1"}}],
        secrets=[secret("s1", {"password": b"hunter2-very-secret"})],
    )
    body["pod"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]
    pod_file = tmp_path / "pod.json"
    import json

    pod_file.write_text(json.dumps(body))
    cli = [os.sys.executable, "-m", "interlink_plugins.cli"]
    rendered = subprocess.run(
        [*cli, "render", str(pod_file), "--config", str(plugin.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=plugin.env,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "--export-file=/dev/null" in rendered.stdout and "pod-runner.sh" in rendered.stdout
    assert "hunter2-very-secret" not in rendered.stdout
    assert not (Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}").exists()
    checked = subprocess.run(
        [*cli, "check", "--config", str(plugin.config_path)], capture_output=True, text=True, timeout=60, env=plugin.env
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "backend slurm reachable: 32 CPUs" in checked.stdout


def test_job_purged_from_slurmctld_is_resolved_through_accounting(plugin: PluginProcess) -> None:
    """A cancel not asked by /delete, seen only after slurmctld forgot the job (MinJobAge=10)."""
    body = pod_body("purged", [container("c", ["true"])], annotations={"slurm-job.vk.io/flags": "--begin=now+3600"})
    job_id = plugin.create(body)["PodJID"]
    plugin.kill()
    subprocess.run(["scancel", job_id], check=True, timeout=10)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        probe = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, timeout=10)
        if probe.returncode != 0:
            break
        time.sleep(1)
    else:
        pytest.fail("slurmctld never purged the job")
    plugin.start()
    status = plugin.wait_done(body, timeout=30)
    term = states(status)["c"]["terminated"]
    assert term["reason"] == "Cancelled" and term["exitCode"] == 143
    assert f"job {job_id}" in term["message"]


def test_env_values_never_show_in_process_arguments(plugin: PluginProcess) -> None:
    """On a shared node `ps` must not reveal env values (tokens resolved from secretKeyRef arrive as env)."""
    marker = "tok-" + os.urandom(8).hex()
    body = pod_body("ps", [
        container("plain", ["sh", "-c", 'test -n "$TOKEN" && sleep 30'], env=[{"name": "TOKEN", "value": marker}]),
        container("mounted", ["sleep", "30"], env=[{"name": "TOKEN", "value": marker}],
                  volumeMounts=[{"name": "v", "mountPath": "/v"}]),
    ], volumes=[{"name": "v", "emptyDir": {}}], terminationGracePeriodSeconds=1)
    plugin.create(body)
    plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout=30)
    time.sleep(1)
    leaks = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    leaks.append(proc.name)
            except OSError:
                continue
    assert leaks == []
    plugin.delete(body)


def test_job_environment_is_slurms_own_only(plugin_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the plugin's environment nor a login shell's reaches the job (SLURM 22.05 loads the login
    environment, `su - <user>` on the node, for --export=NIL/NONE: the plugin submits with an empty
    --export-file instead)."""
    canary = "plugin-env-" + os.urandom(6).hex()
    monkeypatch.setenv("IL_PLUGIN_CANARY", canary)
    plugin = plugin_factory()
    body = pod_body("jobenv", [container("c", ["sleep", "30"])], terminationGracePeriodSeconds=1)
    job_dir = f"{plugin.config['DataRootFolder']}/default-{body['pod']['metadata']['uid']}"
    plugin.create(body)
    plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout=60)
    environments = []
    for proc in Path("/proc").iterdir():
        try:
            # slurmd runs a spooled copy of the batch script, in the job dir (--chdir)
            if proc.name.isdigit() and os.readlink(proc / "cwd") == job_dir and b"bash" in (proc / "cmdline").read_bytes():
                environments.append(dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0")
                                         if b"=" in item))
        except OSError:
            continue
    plugin.delete(body)
    assert environments, "the pod runner process was not found"
    for env in environments:
        assert env[b"SLURM_JOB_ID"]  # positive control: this is the job's environment
        assert canary.encode() not in b"".join(env.values())
        assert b"SLURM_GET_USER_ENV" not in env, "the node loaded a login environment for the job"
        assert not [key for key in env if key.startswith((b"PYENV", b"IL_PLUGIN"))]
