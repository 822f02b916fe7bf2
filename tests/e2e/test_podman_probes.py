"""Probes and lifecycle hooks on the Podman backend, against REAL rootful podman, as the kubelet runs them.

httpGet/tcpSocket probes come from the host into the pod's network namespace (a server in the
container logs each one arriving, with the prober's User-Agent); exec probes through ``podman
exec``. The pods of a test run side by side to keep the wall time short.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e

PYTHON = "docker.io/library/python:3.11-alpine"
Factory = Callable[..., PluginProcess]
FAST = {"PollInterval": 1, "RestartBackoffInitial": 1, "RestartBackoffMax": 4, "CommandTimeout": 30}


def remove_instance_pods(instance: str) -> None:
    pods = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label=interlink.eu/instance={instance}"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    if pods:
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", *pods], capture_output=True, timeout=120)


@pytest.fixture
def factory(tmp_path: Path, podman_ready: None, kubelet_images: dict[str, str]) -> Iterator[Factory]:
    started: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        workdir = tmp_path / f"plugin{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir, {"Backend": "podman", "InstanceId": f"pr{len(started)}-{tmp_path.name[-10:]}",
                      "LogFormat": "text", **FAST, **config},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()
    for process in started:
        remove_instance_pods(process.config["InstanceId"])


def entry(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["containers"] + status["initContainers"] if c["name"] == name)


def running(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: "running" in states(s)[name]


def podman_ctr(plugin: PluginProcess, body: dict[str, Any], name: str) -> str:
    """The podman id of the container's current run."""
    uid = body["pod"]["metadata"]["uid"]
    out = subprocess.run(
        ["podman", "ps", "-q", "--no-trunc", "--filter", f"label=interlink.eu/pod-uid={uid}",
         "--filter", f"label=interlink.eu/container={name}"], capture_output=True, text=True, timeout=60,
    ).stdout.split()
    assert out, f"no running podman container for {name}"
    return out[0]


SERVER = textwrap.dedent(
    """
    import http.server, socketserver, sys, threading, time
    start = time.time()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            up = time.time() - start
            if self.path == '/startup':
                code = 200 if up > 3 else 503
            elif self.path == '/healthz':
                code = 200
            elif self.path == '/ready':
                code = 200 if up > 6 else 503
            else:
                code = 404
            self.send_response(code)
            self.end_headers()
            print(f'probe {self.path} -> {code} agent={self.headers.get("User-Agent")} t={up:.1f}', flush=True)
        def log_message(self, *args):
            pass
    class T(socketserver.StreamRequestHandler):
        def handle(self):
            print('tcp connection', flush=True)
    threading.Thread(target=socketserver.TCPServer(('', 9090), T).serve_forever, daemon=True).start()
    print('serving', flush=True)
    http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()
    """
)


def test_http_startup_liveness_readiness_and_tcp_probes_come_from_outside(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("http-probes", [container(
        "web", ["python3", "-c", SERVER], image=PYTHON, ports=[{"containerPort": 8080, "name": "http"}],
        startupProbe={"httpGet": {"path": "/startup", "port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
        livenessProbe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        readinessProbe={"tcpSocket": {"port": 9090}, "periodSeconds": 1},
    ), container(
        "gated", ["python3", "-c", SERVER.replace("8080", "8081").replace("9090", "9091")], image=PYTHON,
        readinessProbe={"httpGet": {"path": "/ready", "port": 8081}, "periodSeconds": 1},
    )])
    plugin.create(body)
    first = plugin.wait_status(body, running("web"), timeout=60)
    web = entry(first, "web")
    # the startup probe has not passed yet: neither started nor ready
    assert web["started"] is False and web["ready"] is False, web
    up = plugin.wait_status(body, lambda s: entry(s, "web")["ready"], timeout=30)
    assert entry(up, "web")["started"] is True
    gated = entry(up, "gated")
    ready_at = plugin.wait_status(body, lambda s: entry(s, "gated")["ready"], timeout=30)
    assert gated["ready"] is False or entry(ready_at, "gated")["ready"]
    time.sleep(3)
    log = plugin.logs(body, "web").text
    lines = log.splitlines()
    assert any(line.startswith("probe /startup -> 503 agent=kube-probe/") for line in lines), log
    assert any(line.startswith("probe /startup -> 200") for line in lines), log
    assert any(line.startswith("probe /healthz -> 200") for line in lines), log
    assert "tcp connection" in lines, log
    # startup gates the others: no liveness check arrives before the startup probe passed
    first_ok = next(i for i, line in enumerate(lines) if line.startswith("probe /startup -> 200"))
    assert not any("/healthz" in line for line in lines[:first_ok]), log
    assert not any(line.startswith("probe /startup") for line in lines[first_ok + 1:]), log
    gated_log = plugin.logs(body, "gated").text
    assert "probe /ready -> 503" in gated_log and "probe /ready -> 200" in gated_log, gated_log
    # the container is not restarted by any of this
    assert entry(plugin.status(body) or {}, "web")["restartCount"] == 0


def test_liveness_failure_restarts_with_unhealthy_last_state_and_readiness_flips(factory: Factory) -> None:
    plugin = factory()
    # alive for ~4 s, then the liveness file goes: killed, restarted (restartPolicy Always)
    live = pod_body("liveness", [container(
        "c", ["sh", "-c", "touch /tmp/alive; trap 'echo TERM; exit 0' TERM; sleep 4; rm /tmp/alive; "
                          "while :; do sleep 0.2; done"],
        livenessProbe={"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2},
    )], restart_policy="Always", terminationGracePeriodSeconds=3)
    # ready only while /tmp/ready exists: false, then true, then false again, container never restarted
    flip = pod_body("readiness", [container(
        "c", ["sh", "-c", "sleep 3; touch /tmp/ready; sleep 4; rm /tmp/ready; sleep 600"],
        readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
    )], terminationGracePeriodSeconds=1)
    plugin.create(live)
    plugin.create(flip)
    seen = [plugin.wait_status(flip, running("c"), timeout=60)]
    assert entry(seen[0], "c")["ready"] is False
    seen.append(plugin.wait_status(flip, lambda s: entry(s, "c")["ready"], timeout=20))
    seen.append(plugin.wait_status(flip, lambda s: not entry(s, "c")["ready"], timeout=20))
    assert "running" in states(seen[-1])["c"] and entry(seen[-1], "c")["restartCount"] == 0

    restarted = plugin.wait_status(live, lambda s: entry(s, "c")["restartCount"] >= 1 and "lastState" in entry(s, "c"),
                                   timeout=60)
    last = entry(restarted, "c")["lastState"]["terminated"]
    assert last["reason"] == "Unhealthy", last
    assert "liveness probe failed 2 times" in last["message"], last
    # the container was stopped the kubelet's way (SIGTERM: its trap ran)
    assert last["exitCode"] == 0
    again = plugin.wait_status(live, running("c"), timeout=30)
    assert entry(again, "c")["restartCount"] >= 1
    assert "TERM" in plugin.logs(live, "c", Previous=True).text


def test_startup_probe_that_never_passes_kills_per_failure_threshold(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("never-up", [container(
        "c", ["sh", "-c", "sleep 600"],
        startupProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 3},
    )], terminationGracePeriodSeconds=1)
    created = time.monotonic()
    plugin.create(body)
    done = plugin.wait_done(body, timeout=60)
    took = time.monotonic() - created
    term = states(done)["c"]["terminated"]
    assert term["reason"] == "Unhealthy" and "startup probe failed 3 times" in term["message"], term
    assert term["exitCode"] in (137, 143), term
    assert done["containers"][0]["restartCount"] == 0
    assert took < 30, took


def test_exec_probe_timeout_kills_the_exec_session(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("slow-exec", [container(
        "c", ["sh", "-c", "sleep 600"],
        readinessProbe={"exec": {"command": ["sh", "-c", "sleep 47"]}, "timeoutSeconds": 1, "periodSeconds": 20},
    )], terminationGracePeriodSeconds=1)
    plugin.create(body)
    plugin.wait_status(body, running("c"), timeout=60)
    ctr = podman_ctr(plugin, body, "c")
    # the first probe ran at once and timed out after 1 s; its `sleep 47` must be gone from the container
    time.sleep(5)
    ps = subprocess.run(["podman", "top", ctr, "args"], capture_output=True, text=True, timeout=30)
    assert ps.returncode == 0, ps.stderr
    assert "sleep 600" in ps.stdout and "sleep 47" not in ps.stdout, ps.stdout
    status = plugin.status(body) or {}
    assert entry(status, "c")["ready"] is False and "running" in states(status)["c"]


HOOKED = textwrap.dedent(
    """
    trap 'echo "TERM; prestop marker: $(cat /shared/prestop 2>/dev/null || echo none)"; read up _ < /proc/uptime; echo $up > /shared/term; exit 0' TERM
    [ -f /tmp/poststart ] && echo "marker present at first look" || echo "no marker at first look"
    i=0; while [ ! -f /tmp/poststart ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    echo "marker: $(cat /tmp/poststart)"
    while :; do sleep 0.2; done
    """
)


def test_post_start_gates_running_and_pre_stop_runs_before_sigterm(factory: Factory, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    plugin = factory(AllowedHostPaths=[str(shared)])
    body = pod_body("hooks", [container(
        "c", ["sh", "-c", HOOKED], volumeMounts=[{"name": "s", "mountPath": "/shared"}],
        lifecycle={
            "postStart": {"exec": {"command": ["sh", "-c", "sleep 3; echo written-by-poststart > /tmp/poststart"]}},
            "preStop": {"exec": {"command": ["sh", "-c", "cut -d' ' -f1 /proc/uptime > /shared/prestop; sleep 2"]}},
        },
    )], volumes=[{"name": "s", "hostPath": {"path": str(shared), "type": "Directory"}}],
        terminationGracePeriodSeconds=10)
    plugin.create(body)
    # while postStart runs the container is waiting (ContainerCreating), not running
    waiting = plugin.wait_status(body, lambda s: "postStart" in str(states(s)["c"].get("waiting", {})), timeout=60)
    assert states(waiting)["c"]["waiting"]["reason"] == "ContainerCreating"
    plugin.wait_status(body, running("c"), timeout=30)
    assert "marker: written-by-poststart" in plugin.logs(body, "c").text
    response = plugin.delete(body)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while not (shared / "term").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    prestop, term = float((shared / "prestop").read_text()), float((shared / "term").read_text())
    # preStop ran first; SIGTERM came after it finished (it sleeps 2 s); times: the host's uptime
    assert prestop + 1.9 < term < prestop + 10, (prestop, term)


def test_failing_post_start_kills_the_container(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("bad-hook", [container(
        "c", ["sh", "-c", "sleep 600"],
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo hook went wrong >&2; exit 3"]}}},
    )], terminationGracePeriodSeconds=1)
    plugin.create(body)
    done = plugin.wait_done(body, timeout=60)
    term = states(done)["c"]["terminated"]
    assert term["reason"] == "PostStartHookError", term
    assert "exit 3" in term["message"] and "hook went wrong" in term["message"], term


def test_probes_resume_for_adopted_pods_after_a_plugin_restart(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("adopted", [container(
        "c", ["sh", "-c", "touch /tmp/alive; sleep 600"],
        livenessProbe={"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2},
    )], restart_policy="OnFailure", terminationGracePeriodSeconds=1)
    plugin.create(body)
    plugin.wait_status(body, running("c"), timeout=60)
    plugin.kill(signal.SIGKILL)
    plugin.start()
    ctr = podman_ctr(plugin, body, "c")
    subprocess.run(["podman", "exec", ctr, "rm", "/tmp/alive"], check=True, capture_output=True, timeout=30)
    restarted = plugin.wait_status(body, lambda s: entry(s, "c")["restartCount"] >= 1, timeout=60)
    last = entry(restarted, "c")["lastState"]["terminated"]
    assert last["reason"] == "Unhealthy" and "liveness probe failed" in last["message"], last


def test_unsupported_probe_is_refused_naming_the_field(factory: Factory) -> None:
    plugin = factory()
    body = pod_body("grpc", [container("c", ["sleep", "60"], livenessProbe={"grpc": {"port": 9000}})])
    response = plugin.client.post("/create", json=body)
    assert response.status_code == 422, response.text
    assert "spec.containers[0].livenessProbe.grpc" in response.text


def test_http_probes_never_reach_the_hosts_own_network(factory: Factory) -> None:
    """A probe names any host and port: it runs in the pod's network namespace, so a service listening on
    the host's loopback (here a real HTTP server) is out of its reach, unlike a kubelet's."""
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        plugin = factory()
        body = pod_body("ssrf", [container(
            "c", ["sh", "-c", "sleep 600"],
            readinessProbe={"httpGet": {"host": "127.0.0.1", "port": port, "path": "/host-only"},
                            "periodSeconds": 1},
            livenessProbe={"tcpSocket": {"host": "127.0.0.1", "port": port}, "periodSeconds": 1,
                           "failureThreshold": 100},
        )], terminationGracePeriodSeconds=1)
        plugin.create(body)
        plugin.wait_status(body, running("c"), timeout=60)
        time.sleep(4)
        status = plugin.status(body) or {}
        assert entry(status, "c")["ready"] is False
        assert hits == []
        # the same request from the host itself does arrive: the server is reachable, the probe is not
        subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/from-host"], check=True, timeout=10)
        assert hits == ["/from-host"]
    finally:
        server.shutdown()


def test_pre_stop_runs_for_a_deadline_and_for_sidecars_stopped_after_the_main_container(
    factory: Factory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o777)
    plugin = factory(AllowedHostPaths=[str(marks)])
    volume = [{"name": "m", "hostPath": {"path": str(marks), "type": "Directory"}}]
    mount = [{"name": "m", "mountPath": "/m"}]

    def pre_stop(name: str) -> dict[str, Any]:
        return {"preStop": {"exec": {"command": ["sh", "-c", f"echo {name} > /m/{name}"]}}}

    deadline = pod_body("deadline", [container("c", ["sh", "-c", "sleep 600"], volumeMounts=mount,
                                               lifecycle=pre_stop("deadline"))],
                        volumes=volume, activeDeadlineSeconds=4, terminationGracePeriodSeconds=5)
    sidecar = pod_body(
        "sidecar", [container("main", ["sh", "-c", "sleep 3"])],
        init_containers=[container("side", ["sh", "-c", "sleep 600"], restartPolicy="Always", volumeMounts=mount,
                                   lifecycle=pre_stop("sidecar"))],
        volumes=volume, terminationGracePeriodSeconds=5,
    )
    plugin.create(deadline)
    plugin.create(sidecar)
    ended = plugin.wait_done(deadline, timeout=60)
    assert states(ended)["c"]["terminated"]["reason"] == "DeadlineExceeded", ended
    assert (marks / "deadline").read_text() == "deadline\n"
    plugin.wait_done(sidecar, timeout=60)
    assert (marks / "sidecar").read_text() == "sidecar\n"
