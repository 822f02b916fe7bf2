"""Only the right local process can call the plugin's API.

interLink sends no credentials, so the plugin identifies its caller by the kernel: SO_PEERCRED on the
unix socket, the owner uid of the connecting socket in the kernel's socket table on loopback TCP. Every
attack here is made by a real local user (`nobody`, and an unprivileged account made for the test), with
a real client run under that uid (setpriv), against the real plugin process and a real SLURM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import ROOT, PluginProcess, free_port
from tests.podfactory import container, log_request, pod_body, status_pod
from tests.security.conftest import open_path_to

pytestmark = pytest.mark.e2e

CLIENT = Path(__file__).with_name("apiclient.py")
ATTACKER, ALLOWED, GROUP_MEMBER = ("ilsec-api-x", 4331), ("ilsec-api-ok", 4332), ("ilsec-api-grp", 4333)
CALLERS_GROUP, SOCKET_GROUP = ("ilsec-api-callers", 4338), ("ilsec-api-sock", 4339)


def ensure_group(name: str, gid: int, members: list[str]) -> int:
    if subprocess.run(["getent", "group", name], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["groupadd", "-g", str(gid), name], check=True, timeout=30)
    for member in members:
        subprocess.run(["usermod", "-aG", name, member], check=True, timeout=30)
    return int(subprocess.run(["getent", "group", name], capture_output=True, text=True, check=True,
                              timeout=30).stdout.split(":")[2])


@pytest.fixture(scope="module")
def users(job_user: Callable[[str, int], int]) -> dict[str, int]:
    """An attacker, an allowed user, a member of an allowed group; `nobody` exists already."""
    ids = {name: job_user(name, uid) for name, uid in (ATTACKER, ALLOWED, GROUP_MEMBER)}
    ids["nobody"] = 65534
    ids[CALLERS_GROUP[0]] = ensure_group(*CALLERS_GROUP, [GROUP_MEMBER[0]])
    ids[SOCKET_GROUP[0]] = ensure_group(*SOCKET_GROUP, [ATTACKER[0], ALLOWED[0], GROUP_MEMBER[0]])
    return ids


def as_user(user: str, target: str, requests: list[list[Any]]) -> list[dict[str, Any]]:
    """Run the client as `user` (its own groups only), for real: setpriv drops to that uid."""
    run = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={'nogroup' if user == 'nobody' else user}", "--init-groups",
         "/usr/bin/python3", str(CLIENT), target],
        input=json.dumps(requests), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return list(json.loads(run.stdout))


def every_call(victim: dict[str, Any], planted: dict[str, Any]) -> list[list[Any]]:
    """interLink's calls (ping, create, getLogs, delete, status) and the metrics endpoint."""
    return [
        ["GET", "/status", []],
        ["POST", "/create", planted],
        ["GET", "/getLogs", log_request(victim, "c")],
        ["POST", "/delete", status_pod(victim)],
        ["GET", "/status", [status_pod(victim)]],
        ["GET", "/metrics", None],
    ]


def refused(answer: dict[str, Any]) -> bool:
    return "refused" in answer or answer["status"] == 403


def start(tmp_path: Path, slurm_cluster: dict[str, str], *, name: str = "plugin", **config: Any) -> PluginProcess:
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    open_path_to(work)  # other uids may reach the socket's directory: only its own mode keeps them out
    process = PluginProcess(work, {"Backend": "slurm", "ContainerRuntime": "none",
                                   "InstanceId": f"sa-{name}-{tmp_path.name[-8:]}", **config},
                            env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    if "Socket" in config:
        process.client = httpx.Client(transport=httpx.HTTPTransport(uds=config["Socket"].removeprefix("unix://")),
                                      base_url="http://unix", timeout=30)
    elif ":" in config.get("BindAddress", ""):
        process.client = httpx.Client(base_url=f"http://[{config['BindAddress']}]:{process.port}", timeout=30)
    return process.start()


@pytest.fixture
def plugins() -> Iterator[list[PluginProcess]]:
    started: list[PluginProcess] = []
    yield started
    for process in started:
        process.stop()


def victim_and_plant(plugin: PluginProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    """A running pod of a legitimate caller, and a pod an attacker would create to run as the plugin."""
    victim = pod_body("victim", [container("c", ["sh", "-c", "echo victim-log; sleep 300"])])
    plugin.create(victim)
    plugin.wait_status(victim, lambda s: "running" in s["containers"][0]["state"])
    planted = pod_body("planted", [container("c", ["sh", "-c", "id > /tmp/ilsec-api-planted"])])
    return victim, planted


def assert_nothing_happened(plugin: PluginProcess, victim: dict[str, Any], planted: dict[str, Any]) -> None:
    assert "running" in (plugin.status(victim) or {}).get("containers", [{}])[0].get("state", {})
    assert plugin.status(planted) is None
    assert not any(planted["pod"]["metadata"]["uid"] in p.name for p in (plugin.workdir / "jobs").iterdir())
    assert plugin.delete(victim).status_code == 200


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_local_users_cannot_call_the_api_over_the_unix_socket(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int], plugins: list[PluginProcess]
) -> None:
    """Attack: any local user connects to the plugin's unix socket (it was 0666 in a 0755 dir) and pings,
    creates a job that runs as the plugin's account, reads a pod's logs, deletes it, reads the metrics.
    Defence: the socket's dir is 0700, the socket 0600: only the plugin's uid can connect."""
    sock = tmp_path / "plugin" / "run" / "plugin.sock"
    plugin = start(tmp_path, slurm_cluster, Socket=f"unix://{sock}")
    plugins.append(plugin)
    victim, planted = victim_and_plant(plugin)
    for user in ("nobody", ATTACKER[0]):
        answers = as_user(user, f"unix:{sock}", every_call(victim, planted))
        assert all(refused(a) for a in answers), (user, answers)
    assert stat.S_ISSOCK(os.lstat(sock).st_mode) and mode(sock) == 0o600
    assert mode(sock.parent) == 0o700 and os.stat(sock.parent).st_uid == os.geteuid()
    assert_nothing_happened(plugin, victim, planted)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_local_users_cannot_call_the_api_over_loopback_tcp(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int], plugins: list[PluginProcess], address: str
) -> None:
    """Attack: on a login node, 127.0.0.1 is every logged-in user: any of them calls the plugin's port.
    Defence: the owner uid of the connecting socket (the kernel's socket table) is checked once per
    connection; a refused caller gets 403 and the plugin logs its uid."""
    plugin = start(tmp_path, slurm_cluster, BindAddress=address)
    plugins.append(plugin)
    victim, planted = victim_and_plant(plugin)
    target = f"tcp:[{address}]:{plugin.port}" if ":" in address else f"tcp:{address}:{plugin.port}"
    for user in ("nobody", ATTACKER[0]):
        answers = as_user(user, target, every_call(victim, planted))
        assert all(a.get("status") == 403 for a in answers), (user, answers)
        assert "not allowed" in answers[0]["body"]
    log = plugin.log_path.read_text()
    for uid in (65534, users[ATTACKER[0]]):
        assert re.search(rf"refused API caller uid {uid}\b", log), log[-3000:]
    assert plugin.ping()["status"] == "ok"  # the plugin's own uid gets through
    assert_nothing_happened(plugin, victim, planted)


HIT_AND_RUN = """
import json, socket, sys
port, body = int(sys.argv[1]), sys.stdin.read().encode()
request = (b"POST /create HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
           b"Content-Length: %d\\r\\n\\r\\n" % len(body)) + body
for _ in range(int(sys.argv[2])):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request)
    sock.close()
"""


def test_a_caller_gone_before_the_check_is_not_taken_for_root(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int], plugins: list[PluginProcess]
) -> None:
    """Attack: connect, send a whole create, close at once. The kernel keeps the closed socket (FIN_WAIT)
    in its table with uid 0 and no inode: a root plugin reading the table would take the caller for root
    and run the planted pod as root. Defence: a socket no process holds any more identifies nobody."""
    plugin = start(tmp_path, slurm_cluster)
    plugins.append(plugin)
    planted = pod_body("planted", [container("c", ["sh", "-c", "id > /tmp/ilsec-api-planted"])])
    run = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
                          "-c", HIT_AND_RUN, str(plugin.port), "40"],
                         input=json.dumps(planted), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    time.sleep(2)
    assert plugin.status(planted) is None
    jobs = plugin.workdir / "jobs"
    assert not any(planted["pod"]["metadata"]["uid"] in p.name for p in (jobs.iterdir() if jobs.exists() else ()))
    assert re.search(r"refused (an unidentified caller|API caller uid 65534)", plugin.log_path.read_text())


def test_allowed_uid_and_gid_get_through_and_a_socket_group_member_does_not(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int], plugins: list[PluginProcess]
) -> None:
    """Attack: the socket's group lets its members connect(); one of them is not an allowed caller.
    Defence: SO_PEERCRED (uid, gid, supplementary groups) is checked against AllowedClientUids/Gids; the
    socket is 0660 and its dir 0750 with the configured SocketGroup. Over TCP the same lists apply (the
    groups of the caller's account)."""
    allowed = {"AllowedClientUids": [ALLOWED[0]], "AllowedClientGids": [CALLERS_GROUP[0]]}
    sock = tmp_path / "unix" / "run" / "plugin.sock"
    over_unix = start(tmp_path, slurm_cluster, name="unix", Socket=f"unix://{sock}", SocketGroup=SOCKET_GROUP[0],
                      **allowed)
    over_tcp = start(tmp_path, slurm_cluster, name="tcp", **allowed)
    plugins.extend([over_unix, over_tcp])
    assert mode(sock) == 0o660 and os.stat(sock).st_gid == users[SOCKET_GROUP[0]]
    assert mode(sock.parent) == 0o750 and os.stat(sock.parent).st_gid == users[SOCKET_GROUP[0]]
    for plugin, target in ((over_unix, f"unix:{sock}"), (over_tcp, f"tcp:127.0.0.1:{over_tcp.port}")):
        for user in (ALLOWED[0], GROUP_MEMBER[0]):
            answer = as_user(user, target, [["GET", "/status", []]])[0]
            assert answer.get("status") == 200 and json.loads(answer["body"])["status"] == "ok", (user, answer)
        answer = as_user(ATTACKER[0], target, [["GET", "/status", []], ["GET", "/metrics", None]])
        assert [a.get("status") for a in answer] == [403, 403], (answer)
        assert re.search(rf"refused API caller uid {users[ATTACKER[0]]}\b", plugin.log_path.read_text())
    log = over_unix.log_path.read_text()
    assert re.search(rf"API callers allowed: .*uid {os.geteuid()}\b.*uid {users[ALLOWED[0]]}\b"
                     rf".*gid {users[CALLERS_GROUP[0]]}\b", log), log[-2000:]


@pytest.mark.parametrize("dir_mode", [0o777, 0o1777, 0o775])
def test_a_group_or_world_writable_socket_parent_is_refused_at_start(
    tmp_path: Path, slurm_cluster: dict[str, str], dir_mode: int
) -> None:
    """Attack: a user who can write the socket's directory replaces the socket with their own and
    receives interLink's requests (pods, secrets), or removes it. Defence: the plugin refuses to start."""
    parent = tmp_path / "plugin" / "shared"
    parent.mkdir(parents=True)
    parent.chmod(dir_mode)
    with pytest.raises(RuntimeError, match="plugin exited") as info:
        start(tmp_path, slurm_cluster, Socket=f"unix://{parent}/plugin.sock")
    assert str(parent) in str(info.value) and "writable" in str(info.value)
    assert not (parent / "plugin.sock").exists()


def test_a_socket_dir_owned_by_another_user_is_refused_at_start(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int]
) -> None:
    """Attack: another user owns the directory the socket goes in: they can swap the socket at will.
    Defence: the plugin refuses to start."""
    parent = tmp_path / "plugin" / "theirs"
    parent.mkdir(parents=True)
    parent.chmod(0o755)
    os.chown(parent, users[ATTACKER[0]], -1)
    with pytest.raises(RuntimeError, match="plugin exited") as info:
        start(tmp_path, slurm_cluster, Socket=f"unix://{parent}/plugin.sock")
    assert str(parent) in str(info.value) and f"uid {users[ATTACKER[0]]}" in str(info.value)


def test_a_network_bind_needs_allow_network_bind(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int], plugins: list[PluginProcess]
) -> None:
    """Attack: the admin binds the plugin to the host's address; every host that reaches it can run jobs.
    Defence: a non-loopback BindAddress stops start-up unless AllowNetworkBind: true, which warns at every
    start; local callers are still checked by uid."""
    with pytest.raises(RuntimeError, match="plugin exited") as info:
        start(tmp_path, slurm_cluster, name="refused", BindAddress="0.0.0.0")
    assert "BindAddress" in str(info.value) and "AllowNetworkBind" in str(info.value)
    plugin = start(tmp_path, slurm_cluster, name="allowed", BindAddress="0.0.0.0", AllowNetworkBind=True)
    plugins.append(plugin)
    lines = [json.loads(line) for line in plugin.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(line["level"] == "warning" and "0.0.0.0" in line["message"] and "AllowNetworkBind" in line["message"]
               for line in lines), lines
    answer = as_user(ATTACKER[0], f"tcp:127.0.0.1:{plugin.port}", [["GET", "/status", []]])[0]
    assert answer.get("status") == 403, answer
    assert plugin.ping()["status"] == "ok"


def _socket_activated(tmp_path: Path, slurm_cluster: dict[str, str], listen: str,
                      **config: Any) -> subprocess.Popen[bytes]:
    """The plugin started by systemd-socket-activate: the listening socket is passed in as fd 3 when the
    first connection comes. Returns once the activator listens (its socket set up, mode included)."""
    work = tmp_path / "activated"
    work.mkdir(exist_ok=True)
    config_path = work / "plugin.yaml"
    config_path.write_text(yaml.safe_dump({"Backend": "slurm", "ContainerRuntime": "none",
                                           "DataRootFolder": str(work / "jobs"), "StateDir": str(work / "state"),
                                           "InstanceId": f"sa-act-{tmp_path.name[-8:]}", "AllowRootJobs": True,
                                           **config}))
    log_path = work / "plugin.log"
    seen = log_path.read_text().count("Listening on") if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(["systemd-socket-activate", "-l", listen, sys.executable, "-m",
                                 "interlink_plugins.cli", "serve", "--config", str(config_path)],
                                stdout=log, stderr=log, cwd=str(ROOT), start_new_session=True,
                                env={**os.environ, "SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    deadline = time.monotonic() + 20
    while log_path.read_text().count("Listening on") == seen:
        assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()[-2000:]
        time.sleep(0.05)
    return proc


def test_socket_activation_keeps_the_caller_checks(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int]
) -> None:
    """Attack: with systemd socket activation the socket's mode comes from the unit (SocketMode=, 0666 by
    default): any local user connects. Defence: the passed-in socket gets the same per-connection checks
    (SO_PEERCRED; loopback TCP by the socket table), and a passed non-loopback TCP socket is refused."""
    run_dir = tmp_path / "activated" / "run"
    run_dir.mkdir(parents=True)
    open_path_to(run_dir)
    sock = run_dir / "plugin.sock"
    port = free_port()
    for listen, target in ((str(sock), f"unix:{sock}"), (f"127.0.0.1:{port}", f"tcp:127.0.0.1:{port}")):
        proc = _socket_activated(tmp_path, slurm_cluster, listen)
        try:
            if listen == str(sock):
                sock.chmod(0o666)  # SocketMode=0666: the kernel lets everyone connect()
            answer = as_user(ATTACKER[0], target, [["GET", "/status", []], ["POST", "/create", {}]])
            assert [a.get("status") for a in answer] == [403, 403], (answer)
            mine = as_user("root", target, [["GET", "/status", []]])[0]
            assert mine.get("status") == 200, mine
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        log = (tmp_path / "activated" / "plugin.log").read_text()
        assert re.search(rf"refused API caller uid {users[ATTACKER[0]]}\b", log), log[-2000:]
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        wide = probe.getsockname()[1]
    proc = _socket_activated(tmp_path, slurm_cluster, f"0.0.0.0:{wide}")
    try:
        with socket.create_connection(("127.0.0.1", wide), timeout=5):  # the first connection starts the plugin
            assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    log = (tmp_path / "activated" / "plugin.log").read_text()
    assert "AllowNetworkBind" in log and "0.0.0.0" in log, log[-2000:]


def test_check_and_render_say_who_may_call_and_how_exposed_the_api_is(
    tmp_path: Path, slurm_cluster: dict[str, str], users: dict[str, int]
) -> None:
    """The admin sees the exposure before serving: `check` and `render` name who may call, the socket's
    modes, and a network bind; `check` fails a socket directory others can write."""
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(pod_body("p", [container("c", ["true"])])))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    cases = {
        "socket": ({"Socket": f"unix://{tmp_path}/run/plugin.sock", "SocketGroup": SOCKET_GROUP[0],
                    "AllowedClientUids": [ALLOWED[0]]},
                   ["0660 in a 0750 directory", f"uid {users[ALLOWED[0]]} ({ALLOWED[0]})"]),
        "network": ({"BindAddress": "0.0.0.0", "AllowNetworkBind": True}, ["NOT loopback", "AllowNetworkBind"]),
        "unsafe": ({"Socket": f"unix://{shared}/plugin.sock"}, ["[FAIL] API on unix socket", "writable by group"]),
    }
    for name, (settings, expected) in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"Backend": "slurm", "ContainerRuntime": "none",
                                          "DataRootFolder": str(tmp_path / "jobs"),
                                          "StateDir": str(tmp_path / "state"), "DefaultUID": 65534, **settings}))
        for command in (["check"], ["render", str(pod)]):
            run = subprocess.run([sys.executable, "-m", "interlink_plugins.cli", *command, "--config", str(config)],
                                 capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                                 env={**os.environ, "SLURM_CONF": slurm_cluster["SLURM_CONF"]})
            for text in expected:
                wanted = text.replace("[FAIL] ", "") if command[0] == "render" else text
                assert wanted in run.stdout, (name, command[0], run.stdout[:3000], run.stderr[-2000:])
            assert f"API callers allowed: uid {os.geteuid()}" in run.stdout
            if command[0] == "check":
                assert run.returncode == (1 if name == "unsafe" else 0), (name, run.stdout)
