"""Secrets never reach the batch script, an argv or an environment the job's other processes expose.

Attacks: (1) env values (resolved by interLink from Secrets) were `--env=NAME=VALUE` words of the
job's `podman run`: in the pod runner SLURM stores as the batch script, and in `ps` for every local
user; (2) `RegistryCredentials` were exported in pod-runner.sh (stored by SLURM) and every child of
the runner carried them in /proc/PID/environ, where a container of the same uid read them; (3) the
Podman backend's own `podman run` showed env values in its argv and kept them in pod.json.
Defences: env through private 0600 files (podman `--env-file`, podman secrets for what that file
cannot carry, NUL-separated files for the other runtimes); registry credentials in a private auth
file read only by the conversion step and removed right after it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_loginnode as login_kit
from tests.e2e.kits import PodmanKit
from tests.harness import PluginProcess, states
from tests.podfactory import BUSYBOX, container, pod_body, secret
from tests.security.conftest import open_path_to

pytestmark = pytest.mark.e2e


class Secrets:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.env = f"s3cr3t-env-{tag}"
        self.volume = f"s3cr3t-vol-{tag}"
        self.pem_core = f"MIIs3cr3t-pem-{tag}"
        self.pem = f"-----BEGIN KEY-----\n{self.pem_core}\n-----END KEY-----\n"
        self.registry = f"s3cr3t-registry-{tag}"
        self.marker = f"il-sec-container-{tag}"

    def values(self) -> list[bytes]:
        return [v.encode() for v in (self.env, self.volume, self.pem_core, self.registry)]


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


def secret_pod(s: Secrets, *, image: str = BUSYBOX, **extra: Any) -> dict[str, Any]:
    """Env values as interLink sends them after resolving secretKeyRef (one also in a Secret volume,
    one multi-line); the container prints what it got, then stays up for the scan."""
    script = ('printf "%s|%s|%s" "$SECRET_ENV" "$TOKEN" "$PEM" | base64 | tr -d "\\n"; echo; '
              "cat /etc/sec/token; echo; sleep 40; echo done")
    env = [{"name": "SECRET_ENV", "value": s.env}, {"name": "TOKEN", "value": s.volume},
           {"name": "PEM", "value": s.pem}]
    return pod_body(
        "sec", [container("c", ["sh", "-c", script, s.marker], env=env, image=image,
                          volumeMounts=[{"name": "sec", "mountPath": "/etc/sec", "readOnly": True}])],
        volumes=[{"name": "sec", "secret": {"secretName": "tok"}}],
        secrets=[secret("tok", {"token": s.volume.encode()})], **extra,
    )


def _processes() -> dict[int, tuple[int, bytes, bytes]]:
    """pid -> (ppid, cmdline, environ) of every process of the machine that we can read."""
    found: dict[int, tuple[int, bytes, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
            found[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes())
        except (OSError, ValueError, IndexError):
            continue
    return found


def assert_no_process_leaks(s: Secrets) -> int:
    """No process has a secret in its argv; only the container's own processes (the one started with
    the marker argument, and its children) have the pod's env in their environment. Returns how many
    container processes were seen."""
    procs = _processes()
    roots = {pid for pid, (_p, cmd, _e) in procs.items() if s.marker.encode() in cmd.split(b"\0")[1:]
             and cmd.split(b"\0")[0].rsplit(b"/", 1)[-1] == b"sh"}
    inside = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _c, _e) in procs.items():
            if ppid in inside and pid not in inside:
                inside.add(pid)
                changed = True
    for pid, (_ppid, cmdline, environ) in procs.items():
        for value in s.values():
            assert value not in cmdline, (pid, cmdline[:300])
            if pid not in inside:
                assert value not in environ, (pid, cmdline[:300])
    return len(roots)


def batch_script(job_id: str) -> bytes:
    result = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert b"pod-runner" in result.stdout  # the stored script is the runner
    return result.stdout


def check_container_saw(plugin: PluginProcess, body: dict[str, Any], s: Secrets) -> None:
    lines = plugin.logs(body, "c").text.splitlines()
    assert base64.b64decode(lines[0]) == f"{s.env}|{s.volume}|{s.pem}".encode()
    assert lines[1] == s.volume


def wait_marker(s: Secrets, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s.marker.encode() in cmd for _p, cmd, _e in _processes().values()):
            time.sleep(1)  # the container printed its env and sleeps
            return
        time.sleep(0.3)
    raise AssertionError("the container never started")


@pytest.mark.parametrize("runtime", ["podman", "none"])
def test_slurm_batch_script_argv_and_environ_hold_no_secret(
    plugin_factory: Callable[..., PluginProcess], job_user: Callable[[str, int], int], tmp_path: Path,
    secrets: Secrets, runtime: str,
) -> None:
    """Attack: read the pod's secrets from the batch script SLURM stores (scontrol write batch_script),
    from `ps` (argv of every process) and from /proc/PID/environ of the runner and its helpers.
    Runtime none runs as an unprivileged uid; runtime podman (rootful podman here) as root.
    Defence: the values are only in 0600 files of the job dir and in the container's own env."""
    config: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if runtime == "none":
        uid = job_user("ilsec-img", 47311)
        open_path_to(tmp_path)
        config = {"NamespacePolicy": {"default": {"Users": ["ilsec-img"]}}}
        extra = {"securityContext": {"runAsUser": uid}}
    plugin = plugin_factory(runtime=runtime, **config)
    body = secret_pod(secrets, **extra)
    job_id = plugin.create(body)["PodJID"]
    wait_marker(secrets)
    plugin.wait_status(body, lambda st: "running" in states(st).get("c", {}), timeout=60)
    script = batch_script(job_id)
    for value in secrets.values():
        assert value not in script
    assert assert_no_process_leaks(secrets) == 1
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    for path in job_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and any(v in path.read_bytes() for v in secrets.values()):
            rel = path.relative_to(job_dir)
            assert oct(path.stat().st_mode & 0o777) in ("0o600", "0o400", "0o644"), (rel, oct(path.stat().st_mode))
            assert rel.parts[0] in ("c", "volumes"), rel  # env files, the Secret volume (and the container's log)
    check_container_saw(plugin, body, secrets)
    assert plugin.delete(body).status_code == 200
    if runtime == "podman":  # the multi-line value was a podman secret for the run: gone with it
        uid = body["pod"]["metadata"]["uid"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and uid in podman_secret_names():
            time.sleep(0.5)
        assert uid not in podman_secret_names()


def podman_secret_names() -> str:
    return subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                          timeout=30).stdout


def test_registry_password_never_in_the_batch_script_and_gone_after_the_conversion(
    plugin_factory: Callable[..., PluginProcess], secrets: Secrets
) -> None:
    """Attack: RegistryCredentials exported in pod-runner.sh, which SLURM stores and every child of the
    runner inherits. Defence: the password is only in a 0600 auth file for the image step's conversion,
    removed once it succeeded and, whatever happened, when the runner ends. (No registry is reachable
    under this name and this host has no apptainer: the conversion fails and the container waits with
    ErrImagePull / ImagePullBackOff; the delete ends the runner, which must still remove the file.)"""
    plugin = plugin_factory(runtime="apptainer", RegistryCredentials={"reg.example.org": {
        "Username": "robot", "Password": secrets.registry}})
    body = pod_body("reg", [container("c", ["true"], image="reg.example.org/team/app:1")],
                    annotations={"slurm-job.vk.io/flags": "--begin=now+3600"})
    job_id = plugin.create(body)["PodJID"]
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    script = batch_script(job_id)  # pending: SLURM holds the script
    assert secrets.registry.encode() not in script
    auth = job_dir / "registry-auth" / "c.json"
    assert oct(auth.stat().st_mode & 0o777) == "0o600"
    holders = [p for p in job_dir.rglob("*") if p.is_file() and secrets.registry.encode() in p.read_bytes()]
    assert holders == []  # base64 in the auth file only: never in clear anywhere in the job dir
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)

    def pull_failed(status: dict[str, Any]) -> bool:
        waiting = status["containers"][0]["state"].get("waiting") or {}
        return waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff")

    status = plugin.wait_status(body, pull_failed, timeout=90)
    assert "running" not in status["containers"][0]["state"], status
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and auth.exists():
        time.sleep(0.5)
    assert not auth.exists()
    assert plugin.delete(body).status_code == 200


@pytest.fixture
def podman_kit(tmp_path: Path, podman_ready: None) -> Iterator[PodmanKit]:
    kit = PodmanKit(tmp_path / "kit", remote=False)
    yield kit
    kit.close()


def test_podman_backend_argv_and_pod_json_hold_no_secret(podman_kit: PodmanKit, secrets: Secrets) -> None:
    """Attack: `ps` on the host showed the Podman backend's `podman run --env=NAME=VALUE` (run as root,
    cmdline world-readable), and pod.json kept the values. Defence: a 0600 --env-file, and a podman
    secret (type env) for the multi-line value; the container still gets every byte."""
    plugin = podman_kit.plugin()
    body = secret_pod(secrets)
    plugin.create(body)
    wait_marker(secrets)
    assert assert_no_process_leaks(secrets) == 1
    job_dir = Path(plugin.config["DataRootFolder"]) / f"default-{body['pod']['metadata']['uid']}"
    assert all(v not in (job_dir / "pod.json").read_bytes() for v in secrets.values())
    env_file = job_dir / "c" / "c" / "podman.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    check_container_saw(plugin, body, secrets)
    names = subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    uid = body["pod"]["metadata"]["uid"]
    assert [n for n in names if uid in n]  # the multi-line value is a podman secret while the pod lives
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job_dir.exists():
        time.sleep(0.5)
    names = subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    assert not [n for n in names if uid in n]  # and gone with it


def test_process_scan_sees_a_leak(secrets: Secrets) -> None:
    """Positive control of the scan itself: a process with a secret in its argv or environ is caught."""
    leaker = subprocess.Popen(["sh", "-c", "sleep 30; true", secrets.env], env={**os.environ, "X": secrets.registry})
    try:
        time.sleep(0.2)
        with pytest.raises(AssertionError):
            assert_no_process_leaks(secrets)
    finally:
        leaker.kill()
        leaker.wait()


login_node = login_kit.loginnode  # the login node (apptainer), started by the project's scripts


def test_real_apptainer_converts_with_the_auth_file_and_the_file_is_gone(login_node: None, secrets: Secrets) -> None:
    """The conversion step on the real apptainer 1.4.5 (as hpcuser): `build --authfile FILE -- SIF
    IMAGE` is accepted and the auth file is removed as soon as the step ends; the password is in no
    log. (The source is a local docker-archive: no registry is reachable here.)"""
    from interlink_plugins.core.runtimes.containers import APPTAINER_HELPER_NAME, helper_files, registry_auth_json

    work = login_kit.SHARED / f"sec-conv-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    os.chown(work, 1500, 1500)
    helper = work / APPTAINER_HELPER_NAME
    helper.write_text(helper_files()[APPTAINER_HELPER_NAME])
    auth = work / "auth.json"
    auth.write_bytes(registry_auth_json("docker.io", "robot", secrets.registry))
    for path in (helper, auth):
        os.chown(path, 1500, 1500)
    auth.chmod(0o600)
    sif = work / "img.sif"
    try:
        result = login_kit.in_node("bash", str(helper), "--convert", "apptainer", "", str(auth), str(sif),
                                   f"docker-archive:{login_kit.ARCHIVE}", user="hpcuser", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sif.stat().st_size > 0 and not auth.exists()
        for path in work.rglob("*"):
            if path.is_file():
                assert secrets.registry.encode() not in path.read_bytes(), path
    finally:
        login_kit.in_node("rm", "-rf", str(work))
