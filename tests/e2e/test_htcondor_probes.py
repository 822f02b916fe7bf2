"""Probes, lifecycle hooks and restartPolicy on the REAL HTCondor pool (htcondor/ scripts), as interLink drives it.

The pool's jobs run the shared pod runner (runtime none: the execute node's userland under bubblewrap),
with EnableProbes: httpGet/tcpSocket/exec probes from the job (the pod's network is the execute node's),
postStart/preStop exec hooks, the restart policy, and a delete that lets the runner run the preStop hooks
before SIGTERM within the grace period (condor_rm keeps the job "Removing" until it ends).
Run under ``flock /tmp/il-htcondor.lock``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.kits import HTCondorKit
from tests.harness import PluginProcess, all_terminated, free_port
from tests.podfactory import container, log_request, pod_body

pytestmark = pytest.mark.e2e


@pytest.fixture
def kit(tmp_path: Path, htcondor_pool: dict[str, str]) -> Iterator[HTCondorKit]:
    made = HTCondorKit(tmp_path / "kit", htcondor_pool)
    yield made
    made.close()


@pytest.fixture
def plugin(kit: HTCondorKit) -> PluginProcess:
    return kit.plugin(EnableProbes=True, PollInterval=1)


@pytest.fixture
def marks(kit: HTCondorKit) -> Path:
    """A directory the job (uid 2001) writes its marks into, on the pool's shared /tmp."""
    path = kit.workdir / "marks"
    path.mkdir()
    path.chmod(0o777)
    return path


def by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status["containers"]}


def wait_for(what: Callable[[], bool], timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not happen within {timeout:.0f}s")
        time.sleep(0.3)


def follow(plugin: PluginProcess, body: dict[str, Any], name: str) -> str:
    """A Follow stream of the container's log, read to its end."""
    chunks = []
    try:
        with plugin.client.stream("GET", "/getLogs", json=log_request(body, name, Follow=True),
                                  timeout=httpx.Timeout(60, read=60)) as response:
            chunks += list(response.iter_text())
    except httpx.HTTPError as exc:
        chunks.append(f"\n[follow ended: {exc}]")
    return "".join(chunks)


def job_status(kit: HTCondorKit, job_id: str) -> str:
    """JobStatus while the job is in the queue, "" once it left it."""
    out = kit.condor("condor_q", "-all", job_id, "-af", "JobStatus").stdout.split()
    return out[0] if out else ""


def test_probes_gate_ready_and_restart_and_prestop_runs_on_delete_before_sigterm(
    kit: HTCondorKit, plugin: PluginProcess, marks: Path
) -> None:
    web_port, tcp_port = free_port(), free_port()
    server = f"import http.server as h; h.HTTPServer(('127.0.0.1', {web_port}), h.SimpleHTTPRequestHandler).serve_forever()"
    listener = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {tcp_port})); s.listen(); time.sleep(600)"
    alive = marks / "alive"
    # web: TERM is recorded with what the preStop hook had written by then, then the container exits
    web = ("trap 'line=\"TERM received; preStop marker: $(cat " + str(marks) + "/prestop)\"; echo \"$line\"; "
           f"echo \"$line\" > {marks}/term; exit 0' TERM; "
           f"sleep 3; python3 -c \"{server}\" & wait $!; wait $!")
    body = pod_body(
        "probes",
        [
            container(
                "web", ["bash", "-c", web],
                readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                ports=[{"name": "http", "containerPort": web_port}],
                lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"echo started > {marks}/poststart"]}},
                           "preStop": {"exec": {"command": ["sh", "-c", f"sleep 2; echo stopping > {marks}/prestop"]}}},
            ),
            container(
                # startup gates liveness: the liveness check writes "early" if it ran before the listener was up
                "tcp", ["sh", "-c", f"sleep 3; touch {marks}/listening; exec python3 -c \"{listener}\""],
                startupProbe={"tcpSocket": {"port": tcp_port}, "periodSeconds": 1, "failureThreshold": 30},
                livenessProbe={"exec": {"command": ["sh", "-c", f"if [ -e {marks}/listening ]; then echo ok; "
                                                                f"else echo early; fi >> {marks}/live-checks"]},
                               "periodSeconds": 1},
            ),
            container(
                "live", ["sh", "-c", f"touch {alive}; sleep 4; rm -f {alive}; sleep 600"],
                livenessProbe={"exec": {"command": ["test", "-e", str(alive)]}, "periodSeconds": 1,
                               "failureThreshold": 2},
            ),
        ],
        restart_policy="Always",
        terminationGracePeriodSeconds=8,
    )
    job_id = plugin.create(body)["PodJID"]
    first = plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout=60)
    entries = by_name(first)
    assert entries["web"]["ready"] is False  # running, not ready until the readiness probe passes
    assert entries["tcp"]["started"] is False and entries["tcp"]["ready"] is False  # startup probe pending
    plugin.wait_status(body, lambda s: by_name(s)["web"]["ready"] and by_name(s)["tcp"]["started"], timeout=40)
    assert by_name(plugin.status(body) or {})["tcp"]["ready"] is True
    # liveness: the container is killed and restarted in place (restartPolicy Always), not the pod
    restarted = plugin.wait_status(body, lambda s: by_name(s)["live"]["restartCount"] >= 1, timeout=40)
    live = by_name(restarted)["live"]
    assert live["lastState"]["terminated"]["exitCode"] in (137, 143)
    assert live["lastState"]["terminated"]["reason"] == "Unhealthy"
    web_entry, tcp_entry = by_name(restarted)["web"], by_name(restarted)["tcp"]
    assert web_entry["restartCount"] == 0 and tcp_entry["restartCount"] == 0 and "running" in web_entry["state"]
    assert (marks / "poststart").read_text() == "started\n"
    checks = (marks / "live-checks").read_text().split()
    assert "ok" in checks and "early" not in checks, checks

    # delete: the job is removed (condor_rm), the runner runs preStop, then SIGTERM. The plugin keeps the pod
    # meanwhile (its status, its job dir, a Follow stream opened before the delete sees the container's end)
    assert not (marks / "prestop").exists()
    followed: list[str] = []
    follower = threading.Thread(target=lambda: followed.append(follow(plugin, body, "web")), daemon=True)
    follower.start()
    time.sleep(1.5)
    assert plugin.delete(body).status_code == 200
    wait_for(lambda: job_status(kit, job_id) == "3", 10, "condor_rm")
    while not (marks / "term").exists():
        assert job_status(kit, job_id) == "3", "the job ended before SIGTERM reached the container"
        during = plugin.status(body)
        assert during is not None, "the pod was forgotten while its job still runs its preStop hook"
        time.sleep(0.3)
    assert (marks / "term").read_text() == "TERM received; preStop marker: stopping\n"
    follower.join(40)
    assert "TERM received; preStop marker: stopping\n" in followed[0], followed
    wait_for(lambda: job_status(kit, job_id) == "" and plugin.status(body) is None, 40, "the end of the job")


@pytest.mark.parametrize("policy", ["Always", "OnFailure", "Never"])
def test_a_failed_liveness_probe_follows_the_restart_policy(plugin: PluginProcess, policy: str) -> None:
    body = pod_body("liveness", [container(
        "c", ["sh", "-c", "echo run; exec sleep 600"],
        livenessProbe={"exec": {"command": ["false"]}, "initialDelaySeconds": 1, "periodSeconds": 1,
                       "failureThreshold": 2})],
        restart_policy=policy, terminationGracePeriodSeconds=2)
    plugin.create(body)
    if policy == "Never":
        status = plugin.wait_done(body, timeout=60)
        entry = by_name(status)["c"]
        term = entry["state"]["terminated"]
        assert term["reason"] == "Unhealthy" and term["exitCode"] in (137, 143), term
        assert "liveness probe failed 2 times" in term["message"]
        assert entry["restartCount"] == 0 and "lastState" not in entry
    else:
        # the container is killed (a non-zero exit): OnFailure restarts it as Always does
        status = plugin.wait_status(body, lambda s: by_name(s)["c"]["restartCount"] >= 1, timeout=60)
        entry = by_name(status)["c"]
        assert entry["lastState"]["terminated"]["reason"] == "Unhealthy"
        assert entry["lastState"]["terminated"]["exitCode"] in (137, 143)
        assert plugin.logs(body, "c", Previous=True).text == "run\n"
    assert plugin.delete(body).status_code == 200


@pytest.mark.parametrize(("policy", "code", "restarts"), [
    ("OnFailure", 3, True), ("Never", 3, False), ("OnFailure", 0, False), ("Always", 0, True),
])
def test_a_container_exit_follows_the_restart_policy(plugin: PluginProcess, policy: str, code: int,
                                                     restarts: bool) -> None:
    body = pod_body("exits", [container("c", ["sh", "-c", f"echo run; exit {code}"])], restart_policy=policy,
                    terminationGracePeriodSeconds=1)
    plugin.create(body)
    if restarts:
        status = plugin.wait_status(body, lambda s: by_name(s)["c"]["restartCount"] >= 1, timeout=60)
        entry = by_name(status)["c"]
        assert entry["lastState"]["terminated"]["exitCode"] == code
        assert entry["lastState"]["terminated"]["reason"] == ("Completed" if code == 0 else "Error")
    else:
        status = plugin.wait_done(body, timeout=60)
        entry = by_name(status)["c"]
        assert entry["state"]["terminated"]["exitCode"] == code and entry["restartCount"] == 0
        time.sleep(3)  # nothing restarts it: the job is over
        assert by_name(plugin.status(body) or {})["c"]["restartCount"] == 0
    assert plugin.delete(body).status_code == 200


def test_post_start_runs_before_the_container_is_running(plugin: PluginProcess, marks: Path) -> None:
    body = pod_body("poststart", [container(
        "c", ["sh", "-c", f"i=0; while [ ! -e {marks}/hooked ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
                          f"echo \"marker: $(cat {marks}/hooked)\"; exec sleep 600"],
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"sleep 3; echo hooked > {marks}/hooked"]}}})],
        terminationGracePeriodSeconds=1)
    plugin.create(body)
    seen: list[str] = []

    def look(status: dict[str, Any]) -> bool:
        state = by_name(status)["c"]["state"]
        seen.append(next(iter(state)) + ("" if "running" in state else " " + str(next(iter(state.values())))))
        return "running" in state

    plugin.wait_status(body, look, timeout=60)
    assert (marks / "hooked").exists(), f"reported running before the postStart hook finished: {seen}"
    assert any("ContainerCreating" in s for s in seen), seen
    wait_for(lambda: "marker: hooked" in plugin.logs(body, "c").text, 10, "the container seeing the marker")
    assert plugin.delete(body).status_code == 200


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_a_failing_post_start_kills_the_container(plugin: PluginProcess, policy: str) -> None:
    body = pod_body("badhook", [container(
        "c", ["sh", "-c", "echo run; exec sleep 600"],
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo hook failing; exit 7"]}}})],
        restart_policy=policy, terminationGracePeriodSeconds=2)
    plugin.create(body)
    if policy == "Never":
        status = plugin.wait_done(body, timeout=60)
        term = by_name(status)["c"]["state"]["terminated"]
        assert term["reason"] == "PostStartHookError" and term["exitCode"] != 0, term
        assert "exit 7" in term["message"]
        assert all_terminated(status)
    else:
        status = plugin.wait_status(body, lambda s: by_name(s)["c"]["restartCount"] >= 1, timeout=60)
        assert by_name(status)["c"]["lastState"]["terminated"]["reason"] == "PostStartHookError"
    assert plugin.delete(body).status_code == 200


def test_a_container_ignoring_sigterm_is_killed_after_the_grace_period(kit: HTCondorKit, plugin: PluginProcess,
                                                                        marks: Path) -> None:
    body = pod_body("stubborn", [container(
        "c", ["bash", "-c", f"trap 'echo TERM >> {marks}/ignored' TERM; while :; do sleep 0.2; done"],
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"echo pre > {marks}/pre"]}}})],
        terminationGracePeriodSeconds=3)
    job_id = plugin.create(body)["PodJID"]
    plugin.wait_status(body, lambda s: "running" in by_name(s)["c"]["state"], timeout=60)
    started = time.monotonic()
    assert plugin.delete(body).status_code == 200
    wait_for(lambda: job_status(kit, job_id) == "" and plugin.status(body) is None, 60, "the end of the job")
    took = time.monotonic() - started
    assert (marks / "pre").read_text() == "pre\n" and (marks / "ignored").read_text().startswith("TERM")
    assert 3 <= took < 30, took
