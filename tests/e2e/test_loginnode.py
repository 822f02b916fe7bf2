"""Leonardo-style offloading, end to end on a REAL login node.

The login node is the project's own image (slurm/loginnode/: Debian sid, slurm 26.05, munge,
OpenSSH, apptainer 1.4.5) started by loginnode-up.sh as a privileged podman container. Every
container of every pod runs under the real apptainer, from a SIF built here from a busybox rootfs
(no registry). Two topologies, both driven over HTTP as interLink does:

(a) the plugin runs ON the login node (as the cluster user) and serves a unix socket, which
    interLink would reach through its SSH tunnel; here the socket dir is the shared dir;
(b) the plugin runs on this host and submits over SSH (paramiko pool): with a data root only the
    login node sees (DataTransfer: sftp) and with a shared one (DataTransfer: shared).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import PluginProcess, all_terminated, exit_codes, states
from tests.podfactory import config_map, container, pod_body, secret

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "slurm" / "loginnode"
NAME = "il-loginnode-e2e"
HERE = Path("/tmp/il-loginnode-e2e")
SHARED = Path("/tmp/il-loginnode-e2e-shared")
SSH_PORT = 2223
KEYS = HERE / "ssh"
SIF = SHARED / "bb.sif"
SANDBOX = SHARED / "rootfs-bb"
ARCHIVE = SHARED / "bb.tar"
IMAGE = "localhost/busybox:latest"

TRICKY_ENV = {
    "PLAIN": "hello",
    "SHELLISH": "$HOME ${PATH} $(touch /tmp/il-canary) `touch /tmp/il-canary` ; rm -rf / && echo pwned",
    "QUOTES": "it's \"double\" \\ back\\slash",
    "NEWLINES": "line1\nline2\n",
    "JSON": '{"a": [1, 2], "b": "c d"}',
    "EMPTY": "",
    "UNICODE": "héllo ✓ 😀",
    "PWD": "/not/the/cwd",
    "IFS": "x",
}
TRICKY_ARGS = ["two words", "$(touch /tmp/il-canary)", "'", "", "--no-eval", "a\nb", "*"]


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def in_node(*argv: str, user: str = "root", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return podman("exec", "-u", user, NAME, *argv, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def loginnode() -> Iterator[None]:
    """The login node started by the project's scripts, a SIF, a sandbox dir and an image archive."""
    setup = subprocess.run(["bash", str(ROOT / "podman" / "podman-setup.sh")], capture_output=True, text=True,
                           timeout=900)
    assert setup.returncode == 0, setup.stderr
    env = {**os.environ, "LOGINNODE_NAME": NAME, "LOGINNODE_DIR": str(HERE), "LOGINNODE_SHARED": str(SHARED),
           "SSH_PORT": str(SSH_PORT), "SLURMCTLD_PORT": "7827", "SLURMD_PORT": "7828", "LOGINNODE_SRC": str(ROOT)}
    up = subprocess.run(["bash", str(KIT / "loginnode-up.sh")], capture_output=True, text=True, timeout=1200, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        _make_images()
        yield
    finally:
        subprocess.run(["bash", str(KIT / "loginnode-down.sh")], capture_output=True, timeout=60, env=env)


def _make_images() -> None:
    if not SIF.exists():
        if SANDBOX.exists():
            shutil.rmtree(SANDBOX)
        for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/tmp", "home"):
            (SANDBOX / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy("/bin/busybox", SANDBOX / "bin" / "busybox")
        names = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
        for name in names:
            if name != "busybox":
                (SANDBOX / "bin" / name).symlink_to("busybox")
        (SANDBOX / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (SANDBOX / "etc" / "group").write_text("root:x:0:\n")
        (SANDBOX / "tmp").chmod(0o1777)
        built = in_node("apptainer", "-q", "build", "-F", f"{SIF}.tmp", str(SANDBOX), timeout=300)
        assert built.returncode == 0, built.stderr
        os.replace(f"{SIF}.tmp", SIF)
    if not ARCHIVE.exists():
        podman("save", "--format", "docker-archive", "-o", f"{ARCHIVE}.tmp", IMAGE, timeout=120)
        os.replace(f"{ARCHIVE}.tmp", ARCHIVE)
        ARCHIVE.chmod(0o644)


def accepted_logins() -> int:
    log = in_node("cat", "/var/log/sshd/sshd.log").stdout
    return len(re.findall(r"Accepted publickey", log))


def ssh_config(user: str = "hpcuser", **extra: Any) -> dict[str, Any]:
    return {"SshHost": "127.0.0.1", "SshPort": SSH_PORT, "SshUser": user, "SshKeyFile": str(KEYS / "id_ed25519"),
            "SshKnownHosts": str(KEYS / "known_hosts"), **extra}


def apptainer_config(**extra: Any) -> dict[str, Any]:
    return {"Backend": "slurm", "ContainerRuntime": "apptainer", "ImageOverrides": {IMAGE: str(SIF)},
            "PollInterval": 1, "CommandTimeout": 15, **extra}


# ---------------------------------------------------------------------------------------------
# the pod every topology runs


def b64_lines(words: list[str]) -> list[str]:
    return [base64.b64encode(w.encode()).decode() for w in words]


PRINT_B64 = 'for v in "$@"; do printf %s "$v" | base64 | tr -d "\\n"; echo; done'


def full_pod(name: str, *, long_lines: int = 0) -> dict[str, Any]:
    """configMap, secret (0400 item), emptyDir shared with an init container, tricky env and args,
    two parallel containers (one from the SIF, one from a sandbox dir), one of them printing for a while."""
    env = [{"name": k, "value": v} for k, v in TRICKY_ENV.items()]
    printer = (
        f'i=0; while [ $i -lt {long_lines} ]; do echo "tick $i"; i=$((i+1)); sleep 0.5; done; echo ticks-done'
    )
    return pod_body(
        name,
        [
            # the environ the shell started with (/proc/$$/environ, $$ escaped for Kubernetes expansion), then the args
            container("main", ["sh", "-c", f"base64 -w 0 /proc/$$$$/environ; echo; {PRINT_B64}", "sh"],
                      args=TRICKY_ARGS, env=env,
                      volumeMounts=[{"name": "cm", "mountPath": "/etc/cm", "readOnly": True},
                                    {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                                    {"name": "work", "mountPath": "/work"}]),
            container("side", ["sh", "-c", 'cat /etc/cm/app.conf; cat /etc/sec/token; echo; cat /work/from-init; '
                               'touch /etc/cm/x 2>/dev/null || echo read-only-ok; ' + printer],
                      image=str(SANDBOX),
                      volumeMounts=[{"name": "cm", "mountPath": "/etc/cm", "readOnly": True},
                                    {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                                    {"name": "work", "mountPath": "/work"}]),
        ],
        init_containers=[container("init", ["sh", "-c", "echo written-by-init > /work/from-init; echo init-ok"],
                                   volumeMounts=[{"name": "work", "mountPath": "/work"}])],
        volumes=[{"name": "cm", "configMap": {"name": "app"}},
                 {"name": "sec", "secret": {"secretName": "tok", "defaultMode": 0o400}},
                 {"name": "work", "emptyDir": {}}],
        config_maps=[config_map("app", {"app.conf": "setting = 1\n"})],
        secrets=[secret("tok", {"token": b"s3cr3t-t0ken"})],
    )


def check_full_pod(plugin: PluginProcess, body: dict[str, Any], *, long_lines: int = 0) -> None:
    status = plugin.wait_done(body, timeout=120)
    assert exit_codes(status) == {"init": 0, "main": 0, "side": 0}, status
    for entry in status["containers"] + status["initContainers"]:
        assert "login01" in entry["state"]["terminated"]["message"]
    main = plugin.logs(body, "main").text.splitlines()
    environ = dict(item.split(b"=", 1) for item in base64.b64decode(main[0]).split(b"\0") if item)
    for name, value in TRICKY_ENV.items():
        assert environ.get(name.encode()) == value.encode(), (name, environ.get(name.encode()))
    assert main[1:] == b64_lines(TRICKY_ARGS), main
    side = plugin.logs(body, "side").text
    assert side.startswith("setting = 1\ns3cr3t-t0ken\nwritten-by-init\nread-only-ok\n"), side
    assert side.endswith("ticks-done\n") and side.count("tick ") == long_lines
    assert plugin.logs(body, "init").text == "init-ok\n"
    assert plugin.logs(body, "side", Tail=1).text == "ticks-done\n"
    assert in_node("ls", "/tmp/il-canary").returncode != 0  # nothing was evaluated


def follow(plugin: PluginProcess, body: dict[str, Any], container_name: str, out: list[bytes]) -> threading.Thread:
    def run() -> None:
        pod = body["pod"]["metadata"]
        request = {"Namespace": pod["namespace"], "PodUID": pod["uid"], "PodName": pod["name"],
                   "ContainerName": container_name,
                   "Opts": {"Tail": 0, "Bytes": 0, "Timestamps": False, "Follow": True, "Previous": False,
                            "SinceSeconds": 0, "SinceTime": "0001-01-01T00:00:00Z"}}
        with plugin.client.stream("GET", "/getLogs", json=request, timeout=120) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_bytes():
                out.append(chunk)
        out.append(b"<closed>")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_running(plugin: PluginProcess, body: dict[str, Any], name: str, timeout: float = 90) -> None:
    plugin.wait_status(body, lambda s: "running" in states(s).get(name, {}), timeout=timeout)


# ---------------------------------------------------------------------------------------------
# (b) plugin on this host, SSH runner


@pytest.fixture
def ssh_plugin(loginnode: None, tmp_path: Path) -> Iterator[PluginProcess]:
    plugins: list[PluginProcess] = []

    def make(**config: Any) -> PluginProcess:
        workdir = tmp_path / f"p{len(plugins)}"
        workdir.mkdir()
        plugin = PluginProcess(workdir, {**apptainer_config(InstanceId=f"ln{len(plugins)}-{tmp_path.name[-10:]}"),
                                         **config})
        plugins.append(plugin)
        return plugin.start()

    yield make  # type: ignore[misc]
    for plugin in plugins:
        plugin.stop()


def kill_ssh_sessions(user: str) -> int:
    """Kill the sshd processes serving USER's sessions (by pid): every open connection drops."""
    listing = in_node("ps", "-eo", "pid=,args=").stdout
    pids = [line.split()[0] for line in listing.splitlines()
            if re.search(rf"sshd(-session)?: {user}\b", line)]
    for pid in pids:
        in_node("kill", "-9", pid)
    return len(pids)


def test_sftp_topology_full_pod_follow_kill_and_delete(ssh_plugin: Any) -> None:
    """(b) DataTransfer sftp: the job dir exists only on the login node; SSH killed mid-run."""
    data_root = f"/home/hpcuser/il-jobs-{os.getpid()}"
    plugin = ssh_plugin(**ssh_config(), DataTransfer="sftp", DataRootFolder=data_root)
    body = full_pod("sftp-pod", long_lines=16)
    uid = body["pod"]["metadata"]["uid"]
    job_dir = f"{data_root}/default-{uid}"
    plugin.create(body)
    assert not Path(job_dir).exists()  # never written on this host
    wait_running(plugin, body, "side")
    # the secret arrived with its mode in a private job dir
    modes = in_node("stat", "-c", "%a %U", job_dir, f"{job_dir}/volumes/sec/token", user="hpcuser").stdout.split()
    assert modes == ["700", "hpcuser", "400", "hpcuser"], modes
    chunks: list[bytes] = []
    follower = follow(plugin, body, "side", chunks)
    time.sleep(2)
    logins = accepted_logins()
    assert kill_ssh_sessions("hpcuser") >= 1
    time.sleep(1.5)
    follower.join(timeout=90)
    assert not follower.is_alive()
    streamed = b"".join(chunks)
    assert streamed.endswith(b"ticks-done\n<closed>"), streamed
    assert streamed.count(b"tick ") == 16  # resumed at the offset: no line lost or repeated
    check_full_pod(plugin, body, long_lines=16)
    assert accepted_logins() > logins  # the pool and the follow logged in again
    assert plugin.delete(body).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and in_node("test", "-e", job_dir).returncode == 0:
        time.sleep(0.5)
    assert in_node("test", "-e", job_dir).returncode != 0, "job dir not removed"
    assert plugin.status(body) is None


def test_shared_topology_as_root(ssh_plugin: Any) -> None:
    """(b) DataTransfer shared: the job dir is written here and read there at the same path."""
    data_root = SHARED / f"jobs-{os.getpid()}"
    plugin = ssh_plugin(**ssh_config(user="root"), DataTransfer="shared", DataRootFolder=str(data_root))
    body = full_pod("shared-pod", long_lines=2)
    plugin.create(body)
    check_full_pod(plugin, body, long_lines=2)
    assert (data_root / f"default-{body['pod']['metadata']['uid']}" / "c" / "main" / "exit").read_text() == "0\n"
    plugin.delete(body)


def test_two_pods_one_conversion_and_login_budget(ssh_plugin: Any) -> None:
    """Pods started together with an image that needs a conversion build it once (cache + lock);
    100 pods cost sshd a handful of logins."""
    cache = f"/home/hpcuser/il-cache-{os.getpid()}"
    before = accepted_logins()  # from before the plugin starts: every login it makes counts
    plugin = ssh_plugin(**ssh_config(), DataTransfer="sftp", DataRootFolder=f"/home/hpcuser/il-jobs-c{os.getpid()}",
                        ApptainerCacheDir=cache, PollInterval=2)
    image = f"docker-archive:{ARCHIVE}"
    converting = [pod_body(f"conv{i}", [container("c", ["sh", "-c", "cat /etc/passwd | head -1"], image=image)])
                  for i in range(2)]
    for body in converting:
        plugin.create(body)
    bodies = [pod_body(f"many{i}", [container("c", ["true"])]) for i in range(98)]
    for body in bodies:
        plugin.create(body)
    for body in converting:
        assert exit_codes(plugin.wait_done(body, timeout=240)) == {"c": 0}
        assert plugin.logs(body, "c").text == "root:x:0:0:root:/root:/bin/sh\n"
    # converted once, into hpcuser's private dir of the shared cache
    assert in_node("stat", "-c", "%U %a", f"{cache}/uid-1500").stdout.split() == ["hpcuser", "700"]
    builds = in_node("cat", f"{cache}/uid-1500/builds.log").stdout.splitlines()
    assert len(builds) == 1 and image in builds[0], builds
    deadline = time.monotonic() + 240
    pending = list(bodies)
    while pending and time.monotonic() < deadline:
        pending = [b for b in pending if not (plugin.status(b) and all_terminated(plugin.status(b) or {}))]
        time.sleep(2)
    assert not pending, f"{len(pending)} pods not finished"
    assert all(exit_codes(plugin.status(b) or {}) == {"c": 0} for b in bodies[:10])
    logins = accepted_logins() - before
    print(f"\n100 pods: {logins} SSH logins")
    assert logins <= 4, f"{logins} SSH logins for 100 pods"


def test_unreachable_login_node(ssh_plugin: Any, tmp_path: Path) -> None:
    """Wrong host key: nothing runs, /create answers 200 and waits, /getLogs answers 503 naming host
    and command, the ping stays 200 with the backend-unavailable taint."""
    bad = tmp_path / "known_hosts"
    other = (KEYS / "user_ca.pub").read_text().split()
    bad.write_text(f"[127.0.0.1]:{SSH_PORT} {other[0]} {other[1]}\n")
    plugin = ssh_plugin(**ssh_config(SshKnownHosts=str(bad)), DataTransfer="sftp",
                        DataRootFolder="/home/hpcuser/il-never")
    body = pod_body("never", [container("c", ["true"])])
    assert plugin.create(body)["PodJID"].startswith("pending-")
    status = plugin.status(body)
    assert status is not None and "waiting" in status["containers"][0]["state"], status
    log = plugin.log_path.read_text()
    assert "host key mismatch for [127.0.0.1]:2223" in log and "SHA256:" in log
    ping = plugin.ping()
    assert {"key": "interlink.eu/backend-unavailable", "value": "true", "effect": "NoSchedule"} in ping["taints"]
    assert in_node("test", "-e", "/home/hpcuser/il-never").returncode != 0
    # a pod the plugin knows, on a node it cannot reach: the logs are the only 503
    good = ssh_plugin(**ssh_config(), DataTransfer="sftp", DataRootFolder=f"/home/hpcuser/il-jobs-u{os.getpid()}")
    pod = pod_body("reach", [container("c", ["sh", "-c", "echo up; sleep 30"])])
    good.create(pod)
    wait_running(good, pod, "c")
    good.stop()
    kept = {k: v for k, v in good.config.items() if k != "SidecarPort"}  # same StateDir: it knows the pod
    good = ssh_plugin(**{**kept, "SshKnownHosts": str(bad)})
    response = good.logs(pod, "c")
    assert response.status_code == 503, response.text
    assert "127.0.0.1:2223" in response.text and "host key mismatch" in response.text
    response = good.logs(pod, "c", Follow=True)
    assert response.status_code == 503 and "tail -F" in response.text
    assert good.delete(pod).status_code == 200


# ---------------------------------------------------------------------------------------------
# (a) plugin ON the login node, unix socket


class NodePlugin(PluginProcess):
    """The plugin started inside the login node as hpcuser (il-plugin-run), served on a unix socket."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir, config)
        self.socket = workdir / "plugin.sock"
        del self.config["SidecarPort"]
        # AllowedClientUids: the test's client is root; through a real SSH tunnel it is the tunnel's user
        self.config.update(Socket=f"unix://{self.socket}", StateDir=f"/home/hpcuser/il-state-{workdir.name}",
                           DataRootFolder=f"/home/hpcuser/il-jobs-{workdir.name}", AllowedClientUids=[0])
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://plugin",
                                   timeout=30)
        self.pid_file = workdir / "plugin.pid"

    def start(self, timeout: float = 30) -> PluginProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        for path in (self.workdir, self.config_path):
            os.chown(path, 1500, 1500)
        podman("exec", "-d", "-u", "hpcuser", NAME, "il-plugin-run", str(self.config_path), str(self.log_path),
               str(self.pid_file))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        log = self.log_path.read_text() if self.log_path.exists() else ""
        raise RuntimeError(f"plugin on the login node did not answer: {log[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.pid_file.exists():
            in_node("kill", f"-{sig}", self.pid_file.read_text().strip())

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self.client.close()


def test_plugin_on_the_login_node_over_a_unix_socket(loginnode: None) -> None:
    """(a) interLink -> SSH tunnel -> unix socket -> the plugin on the login node -> local sbatch."""
    workdir = SHARED / f"node-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    plugin = NodePlugin(workdir, apptainer_config(InstanceId="onnode", LogFormat="text"))
    plugin.start()
    try:
        body = full_pod("node-pod", long_lines=6)
        plugin.create(body)
        wait_running(plugin, body, "side")
        chunks: list[bytes] = []
        follower = follow(plugin, body, "side", chunks)
        follower.join(timeout=90)
        assert b"".join(chunks).endswith(b"ticks-done\n<closed>")
        check_full_pod(plugin, body, long_lines=6)
        owner = in_node("stat", "-c", "%U", f"{plugin.config['DataRootFolder']}/default-{body['pod']['metadata']['uid']}")
        assert owner.stdout.strip() == "hpcuser"
        assert plugin.delete(body).status_code == 200
        assert plugin.ping()["status"] == "ok"
    finally:
        plugin.stop()


def test_certificate_and_jump_host(loginnode: None, tmp_path: Path) -> None:
    """A key only an OpenSSH certificate authorises (re-read on reconnect), through a bastion (here the
    node's own sshd, forwarding to itself)."""
    import asyncio

    from interlink_plugins.core.commands.ssh import SshRunner, SshTarget

    bastion = SshTarget(host="127.0.0.1", port=SSH_PORT, user="hpcuser", key_file=str(KEYS / "id_ed25519"),
                        known_hosts=str(KEYS / "known_hosts"))
    target = SshTarget(host="127.0.0.1", port=SSH_PORT, user="hpcuser", key_file=str(KEYS / "id_cert"),
                       certificate_file=str(KEYS / "id_cert-cert.pub"), known_hosts=str(KEYS / "known_hosts"),
                       jump=bastion)

    async def run() -> tuple[bytes, str]:
        runner = SshRunner(target)
        ok = await runner.run(["id", "-un"], timeout=20)
        alone = tmp_path / "id_cert"  # the same key without its certificate beside it
        shutil.copy(KEYS / "id_cert", alone)
        bare = SshRunner(SshTarget(host="127.0.0.1", port=SSH_PORT, user="hpcuser", key_file=str(alone),
                                   known_hosts=str(KEYS / "known_hosts")))
        try:
            await bare.run(["true"], timeout=20)
            refused = ""
        except Exception as exc:  # without its certificate the key is not authorised
            refused = str(exc)
        await runner.close()
        await bare.close()
        return ok.stdout, refused

    out, refused = asyncio.run(run())
    assert out == b"hpcuser\n"
    assert "ssh hpcuser@127.0.0.1:2223" in refused


# ---------------------------------------------------------------------------------------------
# real image pulls: apptainer docker:// conversion from the local registry with RegistryCredentials


@pytest.fixture
def registry_image(loginnode: None, registry: dict[str, str],
                   tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The small busybox image pushed to the test registry under a name of its own; the login node trusts
    the registry's CA (apptainer, a Go program, reads the system bundle)."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    podman("cp", registry["REGISTRY_CA"], f"{NAME}:/tmp/il-registry-ca.crt")
    trusted = in_node("sh", "-c", f'mkdir -p /etc/ssl/certs; grep -qF "$(sed -n 2p /tmp/il-registry-ca.crt)" {bundle} '
                      f"2>/dev/null || cat /tmp/il-registry-ca.crt >> {bundle}")
    assert trusted.returncode == 0, trusted.stderr
    ref = f"{registry['REGISTRY']}/il/bb-{os.getpid()}-{time.time_ns()}:1"
    # a layer of its own: apptainer caches conversions by content, and an earlier test converted the plain
    # image, so without it this conversion could be a cache hit too quick to be seen waiting; 64 MiB of
    # incompressible data keep the conversion (mksquashfs) busy for seconds, several of the plugin's polls
    context = tmp_path / "unique"
    context.mkdir()
    (context / "il-unique").write_text(ref + "\n")
    (context / "il-ballast").write_bytes(os.urandom(64 << 20))
    (context / "Containerfile").write_text(f"FROM {IMAGE}\nCOPY il-unique il-ballast /\n")
    podman("build", "-q", "--pull=never", "-t", ref, str(context), timeout=120)
    try:
        podman("push", "-q", "--authfile", registry["REGISTRY_AUTH_FILE"], ref, timeout=120)
        yield ref, registry
    finally:
        podman("rmi", "-f", ref, check=False)


@pytest.mark.parametrize("password", ["right", "wrong"])
def test_apptainer_converts_from_a_registry_with_credentials(ssh_plugin: Any, registry_image: Any,
                                                             password: str) -> None:
    """While apptainer converts docker://IMAGE the container waits ContainerCreating naming the image (the plugin
    log shows it); a wrong password leaves it waiting ErrImagePull / ImagePullBackOff with the registry's
    message, never running with an empty log."""
    ref, registry = registry_image
    secret_password = registry["password"] if password == "right" else "not-the-password"
    plugin = ssh_plugin(**ssh_config(), DataTransfer="sftp", DataRootFolder=f"/home/hpcuser/il-jobs-r{os.getpid()}",
                        RegistryCredentials={registry["REGISTRY"]: {"Username": registry["REGISTRY_USER"],
                                                                    "Password": secret_password}})
    body = pod_body(f"pull-{password}", [container("c", ["sh", "-c", "echo converted-and-ran"], image=ref)])
    plugin.create(body)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = plugin.status(body)
        assert status is not None
        state = states(status)["c"]
        seen.append(state)
        if "terminated" in state:
            break
        waiting = state.get("waiting") or {}
        if password == "wrong":
            assert "running" not in state, seen
            if waiting.get("reason") == "ImagePullBackOff":
                break
        time.sleep(0.3)
    pulling = [s["waiting"] for s in seen if "pulling image" in (s.get("waiting") or {}).get("message", "")]
    assert pulling and all(ref in w["message"] for w in pulling), seen[:6]
    log = plugin.log_path.read_text()
    if password == "right":
        assert seen[-1]["terminated"]["exitCode"] == 0, seen[-3:]
        assert plugin.logs(body, "c").text == "converted-and-ran\n"
        assert re.search(rf"container c: ContainerCreating: pulling image {re.escape(ref)}", log), log[-2000:]
    else:
        failed = [s["waiting"] for s in seen if (s.get("waiting") or {}).get("reason") in ("ErrImagePull",
                                                                                          "ImagePullBackOff")]
        assert failed, seen[-4:]
        assert "unauthorized" in failed[-1]["message"] or "authentication" in failed[-1]["message"], failed[-1]
        assert plugin.logs(body, "c").status_code == 400
        assert secret_password not in log
    assert plugin.delete(body).status_code == 200
