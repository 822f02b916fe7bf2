"""The Podman backend over HTTP against REAL podman (podman/podman-setup.sh), as interLink drives it.

One podman pod per Kubernetes pod; the tests look at podman itself (labels, limits, devices) as
well as at the plugin's answers. Pods of a test run side by side to keep the file short.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.harness import PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import config_map, container, pod_body, secret

pytestmark = pytest.mark.e2e

Factory = Callable[..., PluginProcess]


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout


def remove_instance_pods(instance: str, runas: list[str] | None = None) -> None:
    prefix = runas or []
    pods = subprocess.run([*prefix, "podman", "pod", "ps", "-q", "--filter", f"label=interlink.eu/instance={instance}"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    if pods:
        subprocess.run([*prefix, "podman", "pod", "rm", "-f", "-t", "0", *pods], capture_output=True, timeout=120)
    # the env secrets of those pods (the plugin removes them on delete; these pods went around it)
    names = subprocess.run([*prefix, "podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True,
                           text=True, timeout=60).stdout.split()
    mine = [n for n in names if n.startswith(f"il-{instance}-")]
    if mine:
        subprocess.run([*prefix, "podman", "secret", "rm", "--", *mine], capture_output=True, timeout=60)


@pytest.fixture
def podman_factory(tmp_path: Path, podman_ready: None) -> Iterator[Factory]:
    started: list[PluginProcess] = []

    def make(workdir: Path | None = None, **config: Any) -> PluginProcess:
        workdir = workdir or tmp_path / f"plugin{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir,
            {"Backend": "podman", "InstanceId": f"p{len(started)}-{tmp_path.name[-12:]}", "LogFormat": "text",
             **config},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()
    for process in started:
        remove_instance_pods(process.config["InstanceId"])


@pytest.fixture
def podman_plugin(podman_factory: Factory) -> PluginProcess:
    return podman_factory()


def running(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: "running" in states(s)[name]


def wait_gone(plugin: PluginProcess, body: dict[str, Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while plugin.status(body) is not None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert plugin.status(body) is None


def assert_pod_removed(job_id: str, timeout: float = 30) -> None:
    """The plugin removes a deleted pod in the background, right after it forgets it."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["podman", "pod", "exists", job_id], timeout=30).returncode == 0:
        assert time.monotonic() < deadline, f"pod {job_id} was not removed"
        time.sleep(0.2)


def pod_labels(job_id: str) -> dict[str, str]:
    return dict(json.loads(podman("pod", "inspect", "--format", "json", job_id))["Labels"])


def test_two_containers_talk_over_localhost_in_one_podman_pod(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    body = pod_body(
        "web-and-client",
        [
            container("web", ["sh", "-c", "echo served-from-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]),
            container("client", ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/ 2>/dev/null; do sleep 0.2; done; hostname"]),
        ],
        terminationGracePeriodSeconds=1,
    )
    uid = body["pod"]["metadata"]["uid"]
    started = time.monotonic()
    created = plugin.create(body)
    assert time.monotonic() - started < 5
    job_id = created["PodJID"]
    assert re.fullmatch(r"[0-9a-f]{64}", job_id)
    labels = pod_labels(job_id)
    assert labels["interlink.eu/pod-uid"] == uid and labels["interlink.eu/namespace"] == "default"
    assert labels["interlink.eu/name"] == "web-and-client"
    assert labels["interlink.eu/instance"] == plugin.config["InstanceId"]
    status = plugin.wait_status(body, lambda s: "terminated" in states(s)["client"], timeout=60)
    assert status["JID"] == job_id and "running" in states(status)["web"]
    assert plugin.logs(body, "client").text == "served-from-web\nweb-and-client\n"
    members = json.loads(podman("ps", "-a", "--format", "json", "--filter", f"pod={job_id}"))
    by_name = {m["Labels"].get("interlink.eu/container"): m["Labels"] for m in members if not m["IsInfra"]}
    assert by_name["web"]["interlink.eu/kind"] == "main" and by_name["web"]["interlink.eu/run"] == "0"
    assert by_name["client"]["interlink.eu/index"] == "1" and by_name["client"]["interlink.eu/pod-uid"] == uid

    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{uid}"
    assert oct(job_dir.stat().st_mode & 0o777) == "0o700"
    response = plugin.delete(body)
    assert response.status_code == 200
    wait_gone(plugin, body)
    assert_pod_removed(job_id)
    deadline = time.monotonic() + 10
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_dir.exists()
    assert plugin.delete(body).status_code == 200  # idempotent


def test_exit_codes_oom_start_error_and_missing_image(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    oom = pod_body(
        "oom",
        [container("hog", ["sh", "-c", "echo allocating; head -c 200m /dev/zero | tail"],
                   resources={"limits": {"memory": "32Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}})],
    )
    codes = pod_body("codes", [container("ok", ["true"]), container("three", ["sh", "-c", "echo bad >&2; exit 3"])])
    noexec = pod_body("noexec", [container("c", ["/no/such/program"])])
    # restarted: the run that could not start stays StartError in lastState (the kubelet's CrashLoopBackOff)
    noexec_always = pod_body("noexec-always", [container("c", ["/no/such/program"])], restart_policy="Always")
    noimage = pod_body("noimage", [container("c", ["true"], image="localhost/not-built-here:1")])
    for body in (oom, codes, noexec, noexec_always, noimage):
        plugin.create(body)

    term = states(plugin.wait_done(oom))["hog"]["terminated"]
    assert term["exitCode"] == 137 and term["reason"] == "OOMKilled", term
    hog = json.loads(podman("ps", "-a", "--format", "json", "--filter",
                            f"label=interlink.eu/pod-uid={oom['pod']['metadata']['uid']}",
                            "--filter", "label=interlink.eu/container=hog"))[0]
    host_config = json.loads(podman("inspect", hog["Id"]))[0]["HostConfig"]
    assert host_config["Memory"] == 32 * 2**20 and host_config["NanoCpus"] == 500_000_000
    assert host_config["CpuShares"] == 256

    status = plugin.wait_done(codes)
    assert exit_codes(status) == {"ok": 0, "three": 3}
    assert states(status)["three"]["terminated"]["reason"] == "Error"
    assert plugin.logs(codes, "three").text == "bad\n"

    term = states(plugin.wait_done(noexec))["c"]["terminated"]
    assert term["exitCode"] == 128 and term["reason"] == "StartError" and "/no/such/program" in term["message"]
    looping = plugin.wait_status(noexec_always, lambda s: "lastState" in s["containers"][0])["containers"][0]
    last = looping["lastState"]["terminated"]
    assert last["exitCode"] == 128 and last["reason"] == "StartError" and "/no/such/program" in last["message"]
    assert plugin.delete(noexec_always).status_code == 200

    waiting = plugin.wait_status(noimage, lambda s: "waiting" in states(s)["c"]
                                 and states(s)["c"]["waiting"]["reason"] != "ContainerCreating")
    assert states(waiting)["c"]["waiting"]["reason"] == "ErrImageNeverPull"
    assert "not-built-here" in states(waiting)["c"]["waiting"]["message"]
    assert plugin.logs(noimage, "c").status_code == 400


def test_init_containers_in_order_sharing_an_emptydir_then_failing_init(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    mount = [{"name": "work", "mountPath": "/work"}]
    ordered = pod_body(
        "ordered",
        [
            container("a", ["sh", "-c", "echo a-start >> /work/trace; sleep 1; echo a-end >> /work/trace"],
                      volumeMounts=mount),
            container("b", ["sh", "-c", "echo b-start >> /work/trace; while ! grep -q a-end /work/trace; do "
                                        "sleep 0.1; done; cat /work/trace"], volumeMounts=mount),
        ],
        init_containers=[
            container("init1", ["sh", "-c", "echo init1 > /work/trace"], volumeMounts=mount),
            container("init2", ["sh", "-c", "sleep 1; echo init2 >> /work/trace"], volumeMounts=mount),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    failing = pod_body(
        "initfail",
        [container("main", ["sh", "-c", "echo must-not-run"])],
        init_containers=[container("bad", ["sh", "-c", "echo failing; exit 7"]), container("never", ["true"])],
    )
    plugin.create(ordered)
    plugin.create(failing)
    early = plugin.wait_status(ordered, lambda s: "running" in states(s)["init2"] or "terminated" in states(s)["init2"])
    assert states(early)["a"]["waiting"]["reason"] == "PodInitializing"
    status = plugin.wait_done(ordered, timeout=60)
    assert exit_codes(status) == {"init1": 0, "init2": 0, "a": 0, "b": 0}
    assert [c["name"] for c in status["initContainers"]] == ["init1", "init2"]
    trace = plugin.logs(ordered, "b").text.splitlines()
    assert trace[:2] == ["init1", "init2"] and set(trace[2:]) == {"a-start", "b-start", "a-end"}
    init2 = states(status)["init2"]["terminated"]
    assert init2["startedAt"] >= states(status)["init1"]["terminated"]["finishedAt"]

    status = plugin.wait_done(failing)
    codes = exit_codes(status)
    assert codes["bad"] == 7 and codes["never"] == 1 and codes["main"] == 1
    assert states(status)["main"]["terminated"]["reason"] == "InitContainerFailed"
    assert "init container bad exited 7" in states(status)["main"]["terminated"]["message"]
    assert plugin.logs(failing, "bad").text == "failing\n"
    assert plugin.logs(failing, "main").status_code == 400


def test_configmap_secret_projected_volumes_readonly_and_hostpath_policy(
    podman_factory: Factory, tmp_path: Path
) -> None:
    shared = tmp_path / "host-share"
    shared.mkdir()
    (shared / "from-host").write_text("host file\n")
    plugin = podman_factory(AllowedHostPaths=[str(shared)])
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg-1", "items": [{"key": "app.yaml", "path": "conf/app.yaml",
                                                                     "mode": 0o600}]}},
        {"name": "sec", "secret": {"secretName": "sec-1", "defaultMode": 0o400}},
        {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "host", "hostPath": {"path": str(shared), "type": "Directory"}},
    ]
    mounts = [
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "sec", "mountPath": "/secrets", "readOnly": True},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        {"name": "host", "mountPath": "/host", "readOnly": True},
    ]
    script = (
        "cat /etc/app/conf/app.yaml; stat -c '%a' /etc/app/conf/app.yaml /secrets/pw; cat /secrets/pw; echo; "
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; cat /host/from-host; "
        "for f in /secrets/new /host/new; do if echo x 2>/dev/null > $f; then echo RO-BROKEN $f; fi; done"
    )
    body = pod_body(
        "vols", [container("c", ["sh", "-c", script], volumeMounts=mounts)], volumes=volumes,
        config_maps=[config_map("cfg-1", {"app.yaml": "a: 1\nb: 'two'\n"})],
        secrets=[secret("sec-1", {"pw": b"s3cr3t $(whoami) `id`"})],
        projected=[{"metadata": {"name": "kube-api-access"}, "data": {"token": "eyJ.fake", "namespace": "default"}}],
    )
    plugin.create(body)
    status = plugin.wait_done(body)
    assert exit_codes(status) == {"c": 0}
    assert plugin.logs(body, "c").text == "a: 1\nb: 'two'\n600\n400\ns3cr3t $(whoami) `id`\ndefault\nhost file\n"
    assert not (shared / "new").exists()

    refused = pod_body("refused", [container("c", ["true"], volumeMounts=[{"name": "h", "mountPath": "/h"}])],
                       volumes=[{"name": "h", "hostPath": {"path": "/etc", "type": "Directory"}}])
    response = plugin.client.post("/create", json=refused)
    assert response.status_code == 403 and "spec.volumes[0].hostPath.path" in response.json()["error"]


def test_env_args_workdir_user_and_image_entrypoint(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    env = [
        {"name": "PLAIN", "value": "simple"},
        {"name": "QUOTES", "value": 'it\'s "quoted" \\ back'},
        {"name": "MULTI", "value": "line1\nline2\n"},
        {"name": "EMPTY", "value": ""},
        {"name": "UNICODE", "value": "ümlaut – ✓ 日本"},
    ]
    args = ["$(PLAIN)", "$$(PLAIN)", "$(UNDEFINED)", "`id`", "; rm -rf /", "a b  c", "$HOME", ""]
    script = ('for a in "$@"; do printf "[%s]\\n" "$a"; done; pwd; id -u; id -g; '
              'env | grep -E "^(PLAIN|QUOTES|EMPTY|UNICODE)=" | sort; printf %s "$MULTI" | od -c | head -1')
    body = pod_body(
        "env",
        [
            container("c", ["sh", "-c", script, "sh"], args=args, env=env, workingDir="/tmp/wd",
                      securityContext={"runAsUser": 1234, "runAsGroup": 2345}),
            container("entry", None, image="localhost/busybox-entry:latest", args=["my-arg"]),
            container("entry-default", None, image="localhost/busybox-entry:latest"),
        ],
    )
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body)) == {"c": 0, "entry": 0, "entry-default": 0}
    lines = plugin.logs(body, "c").text.splitlines()
    assert lines[:8] == ["[simple]", "[$(PLAIN)]", "[$(UNDEFINED)]", "[`id`]", "[; rm -rf /]", "[a b  c]",
                         "[$HOME]", "[]"]
    assert lines[8:11] == ["/tmp/wd", "1234", "2345"]
    assert lines[11:15] == ["EMPTY=", "PLAIN=simple", 'QUOTES=it\'s "quoted" \\ back', "UNICODE=ümlaut – ✓ 日本"]
    assert "l   i   n   e   1  \\n" in lines[15]
    assert plugin.logs(body, "entry").text == "entry my-arg\n"
    assert plugin.logs(body, "entry-default").text == "entry default-cmd\n"


def test_delete_of_a_running_pod_honours_the_grace_period(podman_factory: Factory, tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    plugin = podman_factory(AllowedHostPaths=[str(witness)])
    mounts = [{"name": "w", "mountPath": "/w"}]
    polite = "trap 'echo term > /w/polite; exit 0' TERM; while true; do sleep 0.1; done"
    stubborn = "trap 'echo ignored >> /w/stubborn' TERM; while true; do sleep 0.1; done"
    body = pod_body(
        "victim",
        [container("polite", ["sh", "-c", polite], volumeMounts=mounts),
         container("stubborn", ["sh", "-c", stubborn], volumeMounts=mounts)],
        volumes=[{"name": "w", "hostPath": {"path": str(witness), "type": "Directory"}}],
        terminationGracePeriodSeconds=4,
    )
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout=30)
    started = time.monotonic()
    assert plugin.delete(body).status_code == 200
    assert time.monotonic() - started < 2, "delete must not wait for the grace period"
    deadline = time.monotonic() + 10
    while not (witness / "polite").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (witness / "polite").read_text() == "term\n"
    time.sleep(2)
    assert (witness / "stubborn").read_text() == "ignored\n"
    alive = podman("ps", "-a", "--filter", f"pod={job_id}", "--filter", "label=interlink.eu/container=stubborn",
                   "--format", "{{.State}}").split()
    assert [a.lower() for a in alive] in (["stopping"], ["running"]), alive
    wait_gone(plugin, body, timeout=30)
    assert time.monotonic() - started >= 3.5, "killed before the grace period ran out"
    assert_pod_removed(job_id)


def test_restart_policies_with_restart_count_last_state_and_previous_logs(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    counter = "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run-$n; [ $n -ge 3 ]"
    on_failure = pod_body(
        "onfailure",
        [container("c", ["sh", "-c", counter], volumeMounts=[{"name": "state", "mountPath": "/state"}])],
        volumes=[{"name": "state", "emptyDir": {}}],
        restart_policy="OnFailure",
    )
    always = pod_body("always", [container("c", ["sh", "-c", "echo tick; exit 0"])], restart_policy="Always",
                      terminationGracePeriodSeconds=1)
    plugin.create(on_failure)
    plugin.create(always)
    backoff = plugin.wait_status(always, lambda s: states(s)["c"].get("waiting", {}).get("reason") == "CrashLoopBackOff")
    entry = backoff["containers"][0]
    assert entry["lastState"]["terminated"]["exitCode"] == 0 and entry["restartCount"] >= 1
    assert "back-off" in entry["state"]["waiting"]["message"]
    assert "waiting to start" in plugin.logs(always, "c").json()["error"]
    assert plugin.logs(always, "c", Previous=True).text == "tick\n"

    status = plugin.wait_done(on_failure, timeout=60)
    entry = status["containers"][0]
    assert entry["restartCount"] == 2 and entry["state"]["terminated"]["exitCode"] == 0
    assert entry["lastState"]["terminated"]["exitCode"] == 1
    assert plugin.logs(on_failure, "c").text == "run-3\n"
    assert plugin.logs(on_failure, "c", Previous=True).text == "run-2\n"
    # only the current and the previous run stay in podman
    uid = on_failure["pod"]["metadata"]["uid"]
    runs = podman("ps", "-a", "--filter", f"label=interlink.eu/pod-uid={uid}", "--filter",
                  "label=interlink.eu/container=c", "--format", '{{index .Labels "interlink.eu/run"}}').split()
    deadline = time.monotonic() + 10
    while sorted(runs) != ["1", "2"] and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = podman("ps", "-a", "--filter", f"label=interlink.eu/pod-uid={uid}", "--filter",
                      "label=interlink.eu/container=c", "--format", '{{index .Labels "interlink.eu/run"}}').split()
    assert sorted(runs) == ["1", "2"]

    status = plugin.wait_status(always, lambda s: s["containers"][0]["restartCount"] >= 3, timeout=60)
    assert not all_terminated(status)
    assert plugin.delete(always).status_code == 200
    wait_gone(plugin, always)


def test_sidecar_init_container_runs_beside_the_main_container_and_is_stopped(
    podman_plugin: PluginProcess,
) -> None:
    plugin = podman_plugin
    body = pod_body(
        "sidecar",
        [container("main", ["sh", "-c", "until wget -qO- http://127.0.0.1:8081/ 2>/dev/null; do sleep 0.2; done; sleep 1"])],
        init_containers=[
            container("proxy", ["sh", "-c", "echo from-sidecar > /tmp/index.html; exec httpd -f -p 8081 -h /tmp"],
                      restartPolicy="Always"),
            container("after", ["sh", "-c", "wget -qO- http://127.0.0.1:8081/"]),
        ],
        terminationGracePeriodSeconds=2,
    )
    plugin.create(body)
    mid = plugin.wait_status(body, running("main"), timeout=60)
    assert "running" in states(mid)["proxy"]
    assert plugin.logs(body, "after").text == "from-sidecar\n"
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"proxy": 0, "after": 0, "main": 0}
    proxy = states(status)["proxy"]["terminated"]
    assert proxy["reason"] == "Completed" and "sidecar stopped" in proxy["message"]
    assert proxy["finishedAt"] >= states(status)["main"]["terminated"]["finishedAt"]


def test_logs_with_every_option_and_follow(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    body = pod_body("logs", [container("c", ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.5; done; "
                                                          "printf partial"])])
    plugin.create(body)
    plugin.wait_status(body, lambda s: "waiting" not in states(s)["c"], timeout=30)
    started = time.monotonic()
    with plugin.client.stream(
        "GET", "/getLogs",
        json={"Namespace": "default", "PodUID": body["pod"]["metadata"]["uid"], "PodName": "logs",
              "ContainerName": "c", "Opts": {"Follow": True, "Tail": 0, "Bytes": 0}},
    ) as stream:
        assert stream.status_code == 200
        text = b"".join(stream.iter_bytes()).decode()
    assert text == "".join(f"line{i}\n" for i in range(1, 6)) + "partial\n"
    assert time.monotonic() - started < 15
    status = plugin.wait_done(body)
    finished = datetime.fromisoformat(status["containers"][0]["state"]["terminated"]["finishedAt"].replace("Z", "+00:00"))
    assert finished.timestamp() <= time.time()
    assert plugin.logs(body, "c", Tail=2).text == "line5\npartial\n"
    assert plugin.logs(body, "c", Bytes=8).text == "line1\nli"
    stamped = plugin.logs(body, "c", Timestamps=True, Tail=1).text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|\+00:00) partial\n", stamped), stamped
    assert plugin.logs(body, "c", SinceSeconds=3600).text.count("\n") == 6
    assert plugin.logs(body, "c", SinceTime="2999-01-01T00:00:00Z").text == ""
    assert plugin.logs(body, "c", Tail=1, Bytes=1).status_code == 400
    assert plugin.logs(body, "nope").status_code == 400
    assert plugin.logs(body, "c", Previous=True).status_code == 400


def test_kill_9_with_pods_in_every_phase(podman_plugin: PluginProcess) -> None:
    """The podman twin of the shared kill -9 test (podman keeps no pod pending: waiting = missing image)."""
    plugin = podman_plugin
    waiting = pod_body("waiting", [container("c", ["true"], image="localhost/not-built-here:1")])
    running_pod = pod_body("running", [container("c", ["sh", "-c", "echo up; sleep 600"])],
                           terminationGracePeriodSeconds=1)
    done = pod_body("done", [container("c", ["sh", "-c", "echo finished"])])
    failed = pod_body("failed", [container("c", ["sh", "-c", "echo bad; exit 3"])])
    deleting = pod_body("deleting", [container("c", ["sleep", "600"])], terminationGracePeriodSeconds=3)
    pods = [waiting, running_pod, done, failed, deleting]
    jids = {p["pod"]["metadata"]["name"]: plugin.create(p)["PodJID"] for p in pods}
    plugin.wait_done(done)
    plugin.wait_done(failed)
    plugin.wait_status(running_pod, running("c"))
    plugin.wait_status(deleting, running("c"))
    assert plugin.delete(deleting).status_code == 200

    plugin.kill(signal.SIGKILL)
    plugin.start()

    # until the first poll after a restart the core answers ContainerCreating for pods not final yet
    plugin.wait_status(running_pod, running("c"), timeout=10)
    assert plugin.status(waiting)["JID"] == jids["waiting"]
    assert states(plugin.status(waiting))["c"]["waiting"]["reason"] == "ErrImageNeverPull"
    assert exit_codes(plugin.status(done)) == {"c": 0}
    assert exit_codes(plugin.status(failed)) == {"c": 3}
    assert plugin.logs(done, "c").text == "finished\n"
    assert plugin.logs(failed, "c").text == "bad\n"
    assert plugin.logs(running_pod, "c").text == "up\n"
    wait_gone(plugin, deleting, timeout=40)
    assert_pod_removed(jids["deleting"])
    for pod in (waiting, running_pod, done, failed):
        assert plugin.delete(pod).status_code == 200
    for pod in (waiting, running_pod, done, failed):
        wait_gone(plugin, pod)
    for name in ("waiting", "running", "done", "failed"):
        assert_pod_removed(jids[name])


@pytest.mark.parametrize("step", ["before-submit", "after-submit"])
def test_kill_at_each_step_of_create_leaves_exactly_one_pod(podman_factory: Factory, tmp_path: Path, step: str) -> None:
    wrapper = tmp_path / "podman-crash"
    marker = tmp_path / "crash-once"
    marker.write_text(step)
    real = shutil.which("podman")
    # named stand-in around the REAL podman: kills the plugin (its parent) at the chosen step of
    # `podman pod create`, once
    wrapper.write_text(
        "#!/bin/bash\n"
        'if [ "$1 $2" = "pod create" ]; then\n'
        f"  mode=$(cat {marker} 2>/dev/null); rm -f {marker}\n"
        '  [ "$mode" = before-submit ] && kill -9 $PPID && exit 1\n'
        f'  out=$({real} "$@"); rc=$?\n'
        '  [ "$mode" = after-submit ] && kill -9 $PPID && sleep 1 && exit 1\n'
        '  printf "%s\\n" "$out"; exit $rc\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
    plugin = podman_factory(PodmanPath=str(wrapper))
    body = pod_body("crashy", [container("c", ["sh", "-c", "echo survived"])])
    with pytest.raises(Exception):
        plugin.client.post("/create", json=body)
    assert plugin.proc is not None
    plugin.proc.wait(timeout=20)
    plugin.start()
    status = plugin.wait_done(body, timeout=60)
    assert exit_codes(status) == {"c": 0}, json.dumps(status)
    assert plugin.create(body)["PodJID"] == status["JID"]  # interLink may repeat the create
    assert plugin.logs(body, "c").text == "survived\n"
    name = f"il-{plugin.config['InstanceId']}-{body['pod']['metadata']['uid']}"
    events = podman("events", "--stream=false", "--since", since, "--filter", "type=pod", "--filter", "event=create",
                    "--format", "json")
    assert [e["ID"] for e in map(json.loads, events.splitlines()) if e["Name"] == name] == [status["JID"]]


def test_plugin_restart_with_the_state_dir_deleted_keeps_restart_history(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    counter = "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run-$n; " \
              "[ $n -ge 2 ] && exec sleep 600; exit 1"
    body = pod_body(
        "history",
        [container("c", ["sh", "-c", counter], volumeMounts=[{"name": "state", "mountPath": "/state"}]),
         container("side", ["sh", "-c", "echo steady; sleep 600"])],
        volumes=[{"name": "state", "emptyDir": {}}],
        restart_policy="OnFailure",
        terminationGracePeriodSeconds=1,
    )
    job_id = plugin.create(body)["PodJID"]
    before = plugin.wait_status(body, lambda s: s["containers"][0]["restartCount"] == 1 and running("c")(s))
    plugin.kill(signal.SIGKILL)
    shutil.rmtree(plugin.config["StateDir"])
    plugin.start()
    after = plugin.wait_status(body, running("c"))
    assert after["JID"] == job_id
    entry = after["containers"][0]
    assert entry["restartCount"] == 1 and entry["lastState"]["terminated"]["exitCode"] == 1
    assert entry["state"]["running"]["startedAt"] == before["containers"][0]["state"]["running"]["startedAt"]
    assert plugin.logs(body, "c").text == "run-2\n"
    assert plugin.logs(body, "c", Previous=True).text == "run-1\n"
    assert plugin.logs(body, "side").text == "steady\n"
    assert plugin.delete(body).status_code == 200
    wait_gone(plugin, body)
    assert_pod_removed(job_id)


def test_active_deadline_and_bad_input(podman_plugin: PluginProcess) -> None:
    plugin = podman_plugin
    body = pod_body("deadline", [container("c", ["sleep", "600"])], activeDeadlineSeconds=3,
                    terminationGracePeriodSeconds=1)
    plugin.create(body)
    term = states(plugin.wait_done(body, timeout=30))["c"]["terminated"]
    assert term["reason"] == "DeadlineExceeded" and term["exitCode"] in (137, 143)

    for mutate, field in (
        (lambda b: b["pod"]["spec"]["containers"][0]["resources"].update(limits={"nvidia.com/gpu": "1"}),
         "spec.containers[0].resources[nvidia.com/gpu]"),
        (lambda b: b["pod"]["spec"]["containers"][0]["resources"].update(limits={"example.com/fpga": "1"}),
         "spec.containers[0].resources[example.com/fpga]"),
        (lambda b: b["pod"]["spec"]["containers"][0].update(imagePullPolicy="Sometimes"),
         "spec.containers[0].imagePullPolicy"),
        (lambda b: b["pod"]["spec"]["containers"][0].update(
            ports=[{"containerPort": 80, "hostPort": "x"}]), "spec.containers[0].ports[0].hostPort"),
    ):
        bad = pod_body("bad", [container("c", ["true"])])
        mutate(bad)
        response = plugin.client.post("/create", json=bad)
        assert response.status_code == 422, response.text
        assert field in response.json()["error"]
        assert plugin.status(bad) is None


def test_gpus_through_cdi_and_the_ping(podman_factory: Factory, tmp_path: Path) -> None:
    node = Path(f"/dev/il-test-gpu-{os.getpid()}")
    spec = Path(f"/etc/cdi/interlink-test-{os.getpid()}.json")
    kind = f"interlink.test{os.getpid()}/gpu"
    if not node.exists():
        subprocess.run(["mknod", str(node), "c", "1", "3"], check=True, timeout=10)
    spec.parent.mkdir(parents=True, exist_ok=True)
    # cdiVersion 0.3.0: the newest podman 4.3's CDI library reads
    spec.write_text(json.dumps({"cdiVersion": "0.3.0", "kind": kind, "devices": [
        {"name": "0", "containerEdits": {"deviceNodes": [{"path": str(node)}], "env": ["IL_GPU=0"]}}]}))
    try:
        plugin = podman_factory(GpuCdiMap={"nvidia.com/gpu": [f"{kind}=0"]})
        body = pod_body("gpu", [container("c", ["sh", "-c", f"ls -l {node}; echo IL_GPU=$IL_GPU"],
                                          resources={"limits": {"nvidia.com/gpu": "1"}})])
        plugin.create(body)
        status = plugin.wait_done(body)
        assert exit_codes(status) == {"c": 0}, plugin.logs(body, "c").text
        out = plugin.logs(body, "c").text
        assert re.search(rf"^c\S+\s+\d+ root\s+root\s+1,\s+3 .* {node}$", out, re.M), out
        assert "IL_GPU=0" in out
        too_many = pod_body("gpus", [container("c", ["true"], resources={"limits": {"nvidia.com/gpu": "2"}})])
        response = plugin.client.post("/create", json=too_many)
        assert response.status_code == 422 and "nvidia.com/gpu" in response.json()["error"]

        deadline = time.monotonic() + 10
        ping = plugin.ping()
        while "resources" not in ping and time.monotonic() < deadline:
            time.sleep(0.3)
            ping = plugin.ping()
        assert ping["resources"]["cpu"] == str(len(os.sched_getaffinity(0)))
        total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
        assert ping["resources"]["memory"] == f"{total}Mi"
        assert ping["resources"]["accelerators"] == [{"resourceType": "nvidia.com/gpu", "available": "1"}]
    finally:
        spec.unlink(missing_ok=True)
        node.unlink(missing_ok=True)


ROOTLESS_USER = "ilpodman"


def _rootless_user(base: Path) -> list[str] | None:
    """An unprivileged user with subuids and the busybox image in its own store; None when impossible."""
    if os.geteuid() != 0 or not shutil.which("newuidmap") or not shutil.which("runuser"):
        return None
    try:
        pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", ROOTLESS_USER], check=True, timeout=30)
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if Path(table).exists() else []
        if not any(line.startswith(f"{ROOTLESS_USER}:") for line in lines):
            with open(table, "a") as handle:
                handle.write(f"{ROOTLESS_USER}:300000:65536\n")
    runas = ["runuser", "-u", ROOTLESS_USER, "--", "env", f"HOME={pwd.getpwnam(ROOTLESS_USER).pw_dir}"]
    archive = base / "busybox.tar"
    podman("save", "-q", "-o", str(archive), "localhost/busybox:latest")
    archive.chmod(0o644)
    loaded = subprocess.run([*runas, "podman", "load", "-q", "-i", str(archive)], capture_output=True, text=True,
                            timeout=300, cwd="/")
    if loaded.returncode != 0:
        pytest.skip(f"rootless podman cannot load images here: {loaded.stderr.strip()}")
    return runas


class RootlessPlugin(PluginProcess):
    """The same plugin, started as the unprivileged user (Debian's python3 with the venv's packages:
    the venv's interpreter lives under /root)."""

    runas: ClassVar[list[str]] = []

    def start(self, timeout: float = 30) -> PluginProcess:
        self.config_path.write_text(json.dumps(self.config))
        log = self.log_path.open("ab")
        for path in (self.workdir, self.config_path, self.log_path):
            shutil.chown(path, ROOTLESS_USER, ROOTLESS_USER)
        root = Path(__file__).resolve().parents[2]
        site = next((root / ".venv" / "lib").glob("python3*/site-packages"))
        self.proc = subprocess.Popen(
            [*self.runas, f"PYTHONPATH={root}:{site}", "/usr/bin/python3", "-m", "interlink_plugins.cli", "serve",
             "--config", str(self.config_path)],
            stdout=log, stderr=log, cwd="/", start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-3000:])
            try:
                if self.client.get("/healthz", timeout=1).status_code == 200:
                    return self
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(self.log_path.read_text()[-3000:])


@pytest.fixture
def rootless(podman_ready: None) -> Iterator[Callable[[dict[str, Any]], RootlessPlugin]]:
    """Start plugins as the unprivileged user (rootless podman); each one's pods removed afterwards."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs Debian's python3 for the unprivileged plugin process")
    base = Path(tempfile.mkdtemp(prefix="il-rootless-", dir="/tmp"))
    base.chmod(0o755)
    runas = _rootless_user(base)
    if runas is None:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("rootless podman needs root to prepare a user, newuidmap and runuser")
    RootlessPlugin.runas = runas
    started: list[RootlessPlugin] = []

    def start(config: dict[str, Any]) -> RootlessPlugin:
        workdir = base / f"plugin{len(started)}"
        workdir.mkdir()
        plugin = RootlessPlugin(workdir, {"Backend": "podman", "InstanceId": f"rl{len(started)}-{base.name[-8:]}",
                                          "LogFormat": "text", "AllowedClientUids": [0], **config})  # root's client
        started.append(plugin)
        plugin.start()
        return plugin

    try:
        yield start
    finally:
        for plugin in started:
            plugin.stop()
            remove_instance_pods(plugin.config["InstanceId"], runas)
        shutil.rmtree(base, ignore_errors=True)


def test_rootless_create_run_logs_delete_and_limits_refused(
    rootless: Callable[[dict[str, Any]], RootlessPlugin],
) -> None:
    plugin = rootless({"PodmanPodNetwork": "none"})
    runas, instance = RootlessPlugin.runas, plugin.config["InstanceId"]
    body = pod_body("rootless", [
        container("a", ["sh", "-c", "echo hi > /tmp/i; httpd -p 8080 -h /tmp; sleep 1; echo as-$(id -u)"]),
        container("b", ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/i 2>/dev/null; do sleep 0.2; done"]),
    ], terminationGracePeriodSeconds=1)
    job_id = plugin.create(body)["PodJID"]
    status = plugin.wait_done(body, timeout=90)
    assert exit_codes(status) == {"a": 0, "b": 0}, plugin.log_path.read_text()[-2000:]
    assert plugin.logs(body, "a").text == "as-0\n" and plugin.logs(body, "b").text == "hi\n"
    owner = subprocess.run([*runas, "podman", "pod", "inspect", "--format", "{{.Name}}", job_id],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert owner.returncode == 0 and owner.stdout.strip().startswith(f"il-{instance}-")
    assert plugin.delete(body).status_code == 200
    wait_gone(plugin, body)

    limited = pod_body("limited", [container("c", ["true"], resources={"limits": {"memory": "64Mi"}})])
    response = plugin.client.post("/create", json=limited)
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert response.status_code == 200  # cgroup v2: rootless podman enforces limits
    else:
        assert response.status_code == 422, response.text
        assert "spec.containers[0].resources.limits[memory]" in response.json()["error"]
        assert "cgroup v1" in response.json()["error"]


def test_rootless_probes_and_hooks_reach_into_the_pod(rootless: Callable[[dict[str, Any]], RootlessPlugin]) -> None:
    """A rootless plugin runs httpGet/tcpSocket probes inside the pod's network namespace, entered through
    its user namespace (it has no capability in the host's), and exec probes and hooks with podman exec.

    The readiness probe fetches the file the postStart hook writes; the preStop hook leaves a mark in an
    emptyDir that the restarted run prints, so each step is seen to have run where it must."""
    # network none: the pod's own namespace with loopback only (slirp4netns is not installed here)
    plugin = rootless({"PodmanPodNetwork": "none", "PollInterval": 1, "RestartBackoffInitial": 1,
                       "RestartBackoffMax": 4})
    script = (
        "if [ -e /shared/stopped ]; then cat /shared/stopped; exec sleep 600; fi; "
        "mkdir -p /tmp/www; sleep 3; httpd -p 8080 -h /tmp/www; touch /tmp/alive; sleep 8; rm /tmp/alive; "
        "exec sleep 600"
    )
    body = pod_body("rl-probes", [container(
        "web", ["sh", "-c", script],
        startupProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
        readinessProbe={"httpGet": {"path": "/hook", "port": 8080}, "periodSeconds": 1},
        livenessProbe={"exec": {"command": ["test", "-e", "/tmp/alive"]}, "initialDelaySeconds": 1,
                       "periodSeconds": 1, "failureThreshold": 2},
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "mkdir -p /tmp/www; echo hooked > /tmp/www/hook"]}},
                   "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop ran > /shared/stopped"]}}},
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )], restart_policy="Always", terminationGracePeriodSeconds=2,
        volumes=[{"name": "shared", "emptyDir": {}}])
    plugin.create(body)
    first = plugin.wait_status(body, lambda s: "running" in states(s)["web"], timeout=90)
    web = first["containers"][0]
    assert web["started"] is False and web["ready"] is False, web  # httpd is not up for 3 s: startup gates
    up = plugin.wait_status(body, lambda s: s["containers"][0]["ready"], timeout=30)
    assert up["containers"][0]["started"] is True and up["containers"][0]["restartCount"] == 0
    # /tmp/alive goes 8 s after httpd started: two failed exec checks kill the run, Always restarts it
    restarted = plugin.wait_status(
        body, lambda s: s["containers"][0]["restartCount"] >= 1 and "lastState" in s["containers"][0], timeout=60)
    last = restarted["containers"][0]["lastState"]["terminated"]
    assert last["reason"] == "Unhealthy" and "liveness probe failed 2 times" in last["message"], last
    plugin.wait_status(body, lambda s: plugin.logs(body, "web").text == "pre-stop ran\n", timeout=30)
    assert plugin.delete(body).status_code == 200
    wait_gone(plugin, body)
