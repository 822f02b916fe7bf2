"""Real image pulls from a local registry with htpasswd auth and TLS (Debian's docker-registry).

tests/registry/registry-up.sh starts the registry and makes podman and the system trust its CA;
the stand-in images are pushed to it under names unique to each test run, and removed from the
local store before a test, so every pull the tests expect really goes over the wire.

Credentials reach podman the way a site gives them: an auth file (``podman login --authfile``)
named by REGISTRY_AUTH_FILE in the plugin's environment.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kits import PodmanKit
from tests.harness import PluginProcess
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _push(registry: dict[str, str], source: str, target: str) -> str:
    ref = f"{registry['REGISTRY']}/{target}"
    pushed = subprocess.run(["podman", "push", "-q", "--authfile", registry["REGISTRY_AUTH_FILE"], source, ref],
                            capture_output=True, text=True, timeout=300)
    assert pushed.returncode == 0, pushed.stderr
    subprocess.run(["podman", "rmi", "-f", ref], capture_output=True, timeout=60)  # the test must pull it
    return ref


def _authfile(tmp: Path, registry: dict[str, str], password: str) -> Path:
    path = tmp / "auth.json"
    login = subprocess.run(["podman", "login", "--authfile", str(path), "-u", registry["REGISTRY_USER"],
                            "--password-stdin", registry["REGISTRY"]], input=password, capture_output=True,
                           text=True, timeout=60)
    if password == registry["password"]:
        assert login.returncode == 0, login.stderr
    else:  # a wrong password cannot log in: write the auth file a mistyped secret would give
        import base64

        token = base64.b64encode(f"{registry['REGISTRY_USER']}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {registry["REGISTRY"]: {"auth": token}}}))
    path.chmod(0o600)
    return path


@pytest.fixture
def podman_kit(tmp_path: Path, podman_ready: None) -> Iterator[PodmanKit]:
    kit = PodmanKit(tmp_path / "kit", remote=False)
    yield kit
    kit.close()


def _plugin(kit: PodmanKit, authfile: Path) -> PluginProcess:
    """A podman-backend plugin whose podman reads ``authfile`` (cleaned up with the kit's pods)."""
    workdir = kit.workdir / f"pull-plugin-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    plugin = PluginProcess(workdir, {"Backend": "podman", "InstanceId": f"pull-{workdir.name[-6:]}",
                                     "PodmanPath": kit.podman_path, "LogFormat": "text"},
                           env={"REGISTRY_AUTH_FILE": str(authfile)})
    kit._plugins.append(plugin)
    return plugin.start()


def _state(status: dict[str, Any], name: str = "c") -> dict[str, Any]:
    return next(c for c in status["containers"] if c["name"] == name)["state"]


def _run(cmd: str) -> list[str]:
    return ["/bin/sh", "-c", cmd]


def test_podman_pulls_with_always_ifnotpresent_and_never(tmp_path: Path, registry: dict[str, str],
                                                          podman_kit: PodmanKit) -> None:
    tag = uuid.uuid4().hex[:10]
    images = {policy: _push(registry, "docker.io/library/busybox:1.36", f"il/pull-{policy.lower()}:{tag}")
              for policy in ("Always", "IfNotPresent", "Never")}
    plugin = _plugin(podman_kit, _authfile(tmp_path, registry, registry["password"]))
    bodies = {policy: pod_body(f"pull-{policy.lower()}", [container(
        "c", _run(f"echo pulled-with-{policy}"), image=image, imagePullPolicy=policy)])
        for policy, image in images.items()}
    for body in bodies.values():
        plugin.create(body)
    for policy in ("Always", "IfNotPresent"):
        done = plugin.wait_done(bodies[policy], timeout=120)
        assert _state(done)["terminated"]["exitCode"] == 0, done
        assert plugin.logs(bodies[policy], "c").text.strip() == f"pulled-with-{policy}"
    never = plugin.wait_status(bodies["Never"], lambda s: "waiting" in _state(s)
                               and _state(s)["waiting"].get("reason") == "ErrImageNeverPull", timeout=60)
    assert images["Never"] in _state(never)["waiting"]["message"]
    # IfNotPresent does not go to the registry for an image it has: with no credentials at all it still runs
    again = pod_body("pull-present", [container("c", _run("echo present"), image=images["IfNotPresent"],
                                                imagePullPolicy="IfNotPresent")])
    no_auth = tmp_path / "no-auth.json"
    no_auth.write_text('{"auths": {}}')
    bare = _plugin(podman_kit, no_auth)
    bare.create(again)
    assert _state(bare.wait_done(again, timeout=60))["terminated"]["exitCode"] == 0


@pytest.mark.parametrize("problem", ["wrong-password", "missing-image"])
def test_podman_pull_failure_is_a_waiting_container_with_the_registry_message(
    tmp_path: Path, registry: dict[str, str], podman_kit: PodmanKit, problem: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    image = _push(registry, "docker.io/library/busybox:1.36", f"il/pull-fail:{tag}")
    password = registry["password"] if problem == "missing-image" else "not-the-password"
    if problem == "missing-image":
        image = f"{registry['REGISTRY']}/il/never-pushed:{tag}"
    plugin = _plugin(podman_kit, _authfile(tmp_path, registry, password))
    body = pod_body("pull-fail", [container("c", _run("echo should-not-run"), image=image, imagePullPolicy="Always")])
    plugin.create(body)
    want = "unauthorized" if problem == "wrong-password" else "manifest unknown"
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = plugin.status(body)
        assert status is not None
        state = _state(status)
        seen.append(state)
        assert "running" not in state and "terminated" not in state, seen
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and want in waiting.get("message", ""):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"never waiting ErrImagePull with {want!r}: {seen[-3:]}")
    assert image in waiting["message"]
    logs = plugin.logs(body, "c")
    assert logs.status_code == 400 and "waiting to start" in logs.text


def test_podman_shows_container_creating_while_the_image_is_pulled(tmp_path: Path, registry: dict[str, str],
                                                                  podman_kit: PodmanKit) -> None:
    """A large layer makes the pull take seconds: meanwhile the container waits, ContainerCreating, naming it."""
    tag = uuid.uuid4().hex[:10]
    build = tmp_path / "big"
    build.mkdir()
    (build / "Containerfile").write_text(
        f"FROM docker.io/library/busybox:1.36\nRUN echo {tag} > /id && head -c 400000000 /dev/urandom > /blob\n")
    local = f"localhost/il-pull-big:{tag}"
    built = subprocess.run(["podman", "build", "-q", "--pull=never", "--no-cache", "--layers=false", "-t", local,
                            str(build)], capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    try:
        image = _push(registry, local, f"il/big:{tag}")
    finally:
        subprocess.run(["podman", "rmi", "-f", local], capture_output=True, timeout=60)
    plugin = _plugin(podman_kit, _authfile(tmp_path, registry, registry["password"]))
    body = pod_body("pull-big", [container("c", _run("echo big"), image=image, imagePullPolicy="IfNotPresent")])
    plugin.create(body)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = plugin.status(body)
        assert status is not None
        state = _state(status)
        seen.append(state)
        if "terminated" in state:
            break
        time.sleep(0.1)
    creating = [s["waiting"] for s in seen if s.get("waiting", {}).get("reason") == "ContainerCreating"]
    assert creating, seen[:5]
    assert any(image in w.get("message", "") for w in creating), creating[:3]
    assert seen[-1]["terminated"]["exitCode"] == 0
    log = plugin.log_path.read_text()
    assert f"pulling image {image}" in log and f"pulled image {image}" in log


# --- SLURM, runtime podman: the pod runner's image step ------------------------------------------


@pytest.fixture
def root_podman_login(registry: dict[str, str]) -> Iterator[None]:
    """The registry login of the node's root podman (the SLURM jobs' podman reads the default auth file)."""
    authfile = "/run/containers/0/auth.json"
    login = subprocess.run(["podman", "login", "--authfile", authfile, "-u", registry["REGISTRY_USER"],
                            "--password-stdin", registry["REGISTRY"]], input=registry["password"],
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    yield
    subprocess.run(["podman", "logout", "--authfile", authfile, registry["REGISTRY"]], capture_output=True, timeout=60)


def test_slurm_runtime_podman_pulls_per_policy_and_reports_the_image_step(
    tmp_path: Path, registry: dict[str, str], root_podman_login: None, plugin_factory: Any
) -> None:
    tag = uuid.uuid4().hex[:10]
    images = {policy: _push(registry, "docker.io/library/busybox:1.36", f"il/slurm-{policy.lower()}:{tag}")
              for policy in ("Always", "IfNotPresent", "Never")}
    missing = f"{registry['REGISTRY']}/il/never-pushed:{tag}"
    plugin = plugin_factory(runtime="podman")
    bodies = {policy: pod_body(f"slurm-{policy.lower()}", [container(
        "c", _run(f"echo pulled-with-{policy}"), image=image, imagePullPolicy=policy)])
        for policy, image in images.items()}
    bodies["missing"] = pod_body("slurm-missing", [container("c", _run("echo no"), image=missing,
                                                             imagePullPolicy="IfNotPresent")])
    for body in bodies.values():
        plugin.create(body)
    for policy in ("Always", "IfNotPresent"):
        done = plugin.wait_done(bodies[policy], timeout=120)
        assert _state(done)["terminated"]["exitCode"] == 0, done
        assert plugin.logs(bodies[policy], "c").text.strip() == f"pulled-with-{policy}"
    for key, reasons, text in (("Never", ("ErrImageNeverPull",), "Never"),
                               ("missing", ("ErrImagePull", "ImagePullBackOff"), "manifest unknown")):
        status = plugin.wait_status(bodies[key], lambda s, reasons=reasons: _state(s).get("waiting", {}).get(
            "reason") in reasons, timeout=90)
        message = _state(status)["waiting"]["message"]
        assert text in message and (images.get(key) or missing) in message, message
        # never a running container: the log is not there yet
        logs = plugin.logs(bodies[key], "c")
        assert logs.status_code == 400, logs.text
    backoff = plugin.wait_status(bodies["missing"], lambda s: _state(s).get("waiting", {}).get(
        "reason") == "ImagePullBackOff", timeout=60)
    assert "manifest unknown" in _state(backoff)["waiting"]["message"]
    log = plugin.log_path.read_text()  # the plugin log shows the image step of the job's containers
    assert re.search(rf"container c: (ErrImagePull|ImagePullBackOff): .*pulling image {re.escape(missing)}", log)
    for body in bodies.values():
        assert plugin.delete(body).status_code == 200
