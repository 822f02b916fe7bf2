"""deploy/systemd/ under a REAL systemd: docs/site-admin-guide.md's "Run it under systemd", every command run as
written inside a Debian 12 container whose PID 1 is systemd (podman --systemd=always; tests/e2e/systemd_host/).

The SLURM host shares this machine's network, its munge socket (read-only: a munge package in the image must
never touch the host's /run/munge) and the local cluster's slurm.conf, and mounts the data root at the path
the compute node (this machine) sees, so that its jobs run on the real local cluster. The site's directory
service is played by the test: the container's `interlink` and job users get this machine's uids.

The container has CAP_SYS_ADMIN because systemd needs it to build a unit's mount namespace. Without it,
systemd 252 logs "Failed to set up namespace, assuming containerized execution and ignoring" (at debug
level) and runs the unit WITHOUT ProtectSystem, PrivateTmp, ReadWritePaths & co.; the test checks that the
sandbox really is applied to the plugin's process (CAP_SYS_PTRACE: for the test's own look into the
process's mount namespace with nsenter; the unit's bounding set has none of these). One piece of it cannot be, here: the device ACL
(DevicePolicy=closed, implied by PrivateDevices= and ProtectClock=) is a devices-cgroup setting, and on this
cgroup-v1 host podman gives the container's systemd no writable devices hierarchy ("Failed to reset
devices.allow/devices.deny"); the private /dev of PrivateDevices= is applied, so the plugin still sees no
real device node. On a host whose PID 1 is systemd (or on cgroup v2, where it is a BPF program) it applies.

The Podman host is privileged (its podman creates cgroups and containers) with its own network and podman
storage. The HTCondor instance runs against the real pool (htcondor_pool: run it under
`flock /tmp/il-htcondor.lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.guidedoc import PATH, ROOT, section_blocks, substitute
from tests.harness import PluginProcess, exit_codes, free_port, states
from tests.podfactory import container, log_request, pod_body, status_pod

pytestmark = pytest.mark.e2e

SECTION = "Run it under systemd"
BUILD = ROOT / "tests" / "e2e" / "systemd_host" / "build.sh"
SRC, DIST = "/mnt/src", "/mnt/dist"  # where the source tree and the built wheels are in the containers
DATA_ROOT = Path("/srv/interlink/jobs")  # the guide's, on this machine (the compute node) and in the container
JOB_USERS = ("il-sd-job1", "il-sd-job2")  # the site accounts of the root (--uid) setup
# which test runs which of the section's blocks (every block by one of them, in the section's order)
SLURM_BLOCKS = range(0, 8)  # install, start, reload, restart, stop, journal, root, socket
HTCONDOR_BLOCKS = (0, 8)
PODMAN_BLOCKS = (0, 9)
SOCKET_PASSED = "passed by systemd"  # the start-up line of a socket-activated plugin


def test_every_block_of_the_section_is_run_by_a_test_here() -> None:
    blocks = section_blocks(SECTION)
    assert len(blocks) == 10
    assert set(SLURM_BLOCKS) | set(HTCONDOR_BLOCKS) | set(PODMAN_BLOCKS) == set(range(len(blocks)))
    assert "enable --now interlink-plugin@slurm.service" in blocks[1] and "systemctl reload" in blocks[2]
    assert "root.conf" in blocks[6] and "interlink-plugin@slurm.socket" in blocks[7]
    assert "htcondor.conf" in blocks[8] and "interlink-plugin-podman@" in blocks[9]


# ---- the containers ---------------------------------------------------------------------------


def podman(*args: str, timeout: float = 120, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, input=stdin)
    assert not check or result.returncode == 0, f"podman {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass
class SystemdHost:
    """A running systemd container and the guide's names substituted for it."""

    name: str
    subs: dict[str, str] = field(default_factory=dict)
    # pip offline, from the built wheels (the site-specific part of the install commands)
    env: dict[str, str] = field(default_factory=lambda: {
        "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": DIST, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})

    def sh(self, script: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command of the test's own (not the guide's) inside the container, as root."""
        result = subprocess.run(["podman", "exec", self.name, "bash", "-c", script], capture_output=True, text=True,
                                timeout=timeout)
        assert not check or result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        return result

    def guide(self, block: str, timeout: float = 300) -> str:
        """One block of the guide, as written (site names substituted), under bash -euo pipefail, as root."""
        script = substitute(block, self.subs)
        env = [f"--env={key}={value}" for key, value in {"PATH": PATH, "HOME": "/root", **self.env}.items()]
        result = subprocess.run(["podman", "exec", *env, self.name, "bash", "-euo", "pipefail", "-c", script],
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        return result.stdout

    def show(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show -p {prop} --value {unit}").stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID"))

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -u {unit} -o cat --no-pager").stdout

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        subprocess.run(["podman", "exec", "-i", self.name, "bash", "-c", f"umask 077; cat > {path}; chmod {mode} {path}"],
                       input=text, text=True, check=True, timeout=60)

    def wait_healthz(self, url: str = "http://127.0.0.1:4000") -> None:
        self.sh(f"for _ in $(seq 1 60); do curl -sf -o /dev/null {url}/healthz && exit 0; sleep 0.5; done; exit 1")


def _user(name: str) -> pwd.struct_passwd:
    """A system account on this machine (the site's directory service), created as the guide creates them."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--create-home", name], capture_output=True, timeout=30)
    return pwd.getpwnam(name)  # (created meanwhile by a concurrent run: fine)


def _same_accounts(host: SystemdHost, names: tuple[str, ...]) -> None:
    """The container knows the machine's accounts with their uids and gids (as sssd/LDAP would give them)."""
    for name in names:
        entry = _user(name)
        host.sh(f"getent group {entry.pw_gid} >/dev/null || groupadd --system --gid {entry.pw_gid} {name}; "
                f"id {name} >/dev/null 2>&1 || useradd --system --create-home --uid {entry.pw_uid} "
                f"--gid {entry.pw_gid} {name}")


@pytest.fixture(scope="module")
def systemd_image() -> str:
    built = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dist() -> Iterator[Path]:
    """The built wheel and its dependencies' wheels (with the htcondor extra): what /path/to/dist holds."""
    out = Path(tempfile.mkdtemp(prefix="il-systemd-dist-"))
    out.chmod(0o755)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(out),
                            f"{ROOT}[htcondor]"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert len(list(out.glob("interlink_plugins-*.whl"))) == 1
    yield out
    shutil.rmtree(out, ignore_errors=True)


def _start(name: str, image: str, *options: str) -> SystemdHost:
    podman("rm", "-f", "-t", "0", name, check=False)
    podman("run", "-d", "--name", name, "--systemd=always", *options, image)
    host = SystemdHost(name)
    # "degraded" is fine: the container has no use for a few of Debian's units
    deadline, state = time.monotonic() + 120, ""
    while state not in ("running", "degraded") and time.monotonic() < deadline:
        # (no answer at all while PID 1 is not up yet)
        state = host.sh("systemctl is-system-running --wait", check=False, timeout=120).stdout.strip()
        time.sleep(0.2)
    if state not in ("running", "degraded"):
        failed = host.sh("systemctl --failed --no-pager", check=False).stdout
        _remove(host)
        pytest.fail(f"systemd in {name} never came up ({state!r}): {failed}")
    return host


def _remove(host: SystemdHost) -> None:
    journal = host.sh("journalctl --no-pager -o short -n 300", check=False).stdout
    podman("rm", "-f", "-t", "10", host.name, check=False, timeout=180)
    print(journal[-6000:])  # shown by pytest when the test failed


def _ports(subs: dict[str, str]) -> int:
    port = free_port()
    subs.update({"SidecarPort: 4000": f"SidecarPort: {port}", "127.0.0.1:4000": f"127.0.0.1:{port}"})
    return port


@pytest.fixture
def slurm_host(systemd_image: str, dist: Path, slurm_cluster: dict[str, str]) -> Iterator[SystemdHost]:
    """The SLURM submit host of the guide: this machine's network, munge and cluster; the guide's data root."""
    _user("interlink")
    subprocess.run(["install", "-d", "-o", "interlink", "-m", "0755", str(DATA_ROOT)], check=True, timeout=30)
    state = slurm_cluster["state"]
    host = _start(f"il-systemd-slurm-{os.getpid()}", systemd_image,
                  "--network=host", "--cap-add=SYS_ADMIN", "--cap-add=SYS_PTRACE",
                  "-v", "/run/munge:/run/munge:ro", "-v", f"{state}:{state}:ro",
                  "-v", f"{slurm_cluster['SLURM_CONF']}:/etc/slurm/slurm.conf:ro",
                  "-v", f"{DATA_ROOT}:{DATA_ROOT}", "-v", f"{dist}:{DIST}:ro", "-v", f"{ROOT}:{SRC}:ro")
    try:
        host.subs.update({"/path/to/interlink-plugins": SRC, "/path/to/dist": DIST})
        _same_accounts(host, ("interlink", *JOB_USERS))
        yield host
    finally:
        _remove(host)


# ---- helpers on what the plugin's process gets --------------------------------------------------


def _mounts(host: SystemdHost, pid: int) -> dict[str, tuple[str, str]]:
    """Mount point -> (per-mount options, source root) as the process sees them (the last mount wins)."""
    mounts: dict[str, tuple[str, str]] = {}
    for line in host.sh(f"cat /proc/{pid}/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = (fields[5], fields[3])
    return mounts


def _status_field(host: SystemdHost, pid: int, name: str) -> str:
    text = host.sh(f"cat /proc/{pid}/status").stdout
    match = re.search(rf"^{name}:\s*(\S+)", text, re.M)
    assert match, text
    return match.group(1)


def _cap_mask(*names: str) -> str:
    numbers = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_SETGID": 6, "CAP_SETUID": 7}
    return f"{sum(1 << numbers[name] for name in names):016x}"


def _assert_sandboxed(host: SystemdHost, unit: str, writable: tuple[str, ...]) -> int:
    pid = host.main_pid(unit)
    assert _status_field(host, pid, "NoNewPrivs") == "1"
    assert _status_field(host, pid, "Seccomp") == "2"  # SystemCallFilter & co.
    mounts = _mounts(host, pid)
    assert "ro" in mounts["/"][0].split(","), mounts["/"]  # ProtectSystem=strict
    for path in writable:
        assert "rw" in mounts[path][0].split(","), (path, mounts.get(path))  # ReadWritePaths, StateDirectory
    assert "systemd-private-" in mounts["/tmp"][1], mounts["/tmp"]  # PrivateTmp
    assert "ro" in mounts["/proc/sys"][0].split(",")  # ProtectKernelTunables
    # as the process sees it: only what is listed is writable
    probe = host.sh(f"nsenter -t {pid} -m sh -c 'touch /etc/il-probe' 2>&1", check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stdout, probe.stdout
    for path in writable:
        host.sh(f"nsenter -t {pid} -m sh -c 'touch {path}/.il-probe && rm {path}/.il-probe'")
    devices = host.sh(f"nsenter -t {pid} -m ls /dev").stdout.split()
    assert "null" in devices and "vda" not in devices and "kmsg" not in devices, devices  # PrivateDevices
    journal = host.journal(unit)
    assert "assuming containerized execution" not in journal and "namespace setup is prohibited" not in journal
    return pid


def _wait_running(plugin: PluginProcess, body: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    return plugin.wait_status(body, lambda s: all("running" in c["state"] for c in s["containers"]), timeout)


def _squeue(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T %k"], capture_output=True, text=True,
                          timeout=30, env={"PATH": PATH, "SLURM_CONF": os.environ["SLURM_CONF"]}).stdout.strip()


def _append_yaml(host: SystemdHost, path: str, text: str) -> None:
    current = host.sh(f"cat {path}").stdout
    host.write(path, current + text)


# ---- SLURM: install, start, reload, restart, stop, journal, root, socket ---------------------------


def test_slurm_instance_as_the_guide_says(slurm_host: SystemdHost) -> None:
    host = slurm_host
    blocks = section_blocks(SECTION)
    install, start, reload, restart, stop, journal, root, socket = (blocks[i] for i in SLURM_BLOCKS)
    port = _ports(host.subs)
    uid1, uid2 = (pwd.getpwnam(name).pw_uid for name in JOB_USERS)
    host.subs.update({"DefaultUID: 5001": f"DefaultUID: {uid1}", "Users: [5002]": f"Users: [{uid2}]",
                      # the test plays interLink from the host, as root: its uid is allowed too
                      "AllowedClientUids: [interlink-api]": "AllowedClientUids: [interlink-api, 0]"})
    plugin = PluginProcess(Path(tempfile.gettempdir()), {})  # not started: its client, on the unit's port
    plugin.client.base_url = f"http://127.0.0.1:{port}"  # type: ignore[assignment]
    unit = "interlink-plugin@slurm.service"
    created: list[dict[str, Any]] = []
    try:
        # install from the wheel, enable and start: the ping answers from the real cluster
        host.guide(install)
        ping = json.loads(host.guide(start).strip().splitlines()[-1])
        assert ping["status"] == "ok" and int(ping["resources"]["cpu"]) > 0 and not ping["taints"], ping
        assert host.show(unit, "UnitFileState") == "enabled" and host.show(unit, "ActiveState") == "active"
        pid = _assert_sandboxed(host, unit, (str(DATA_ROOT), "/var/lib/interlink-plugin"))
        assert host.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "interlink"
        assert _status_field(host, pid, "CapBnd") == _cap_mask()

        # a pod on the real cluster; it runs through the reload, the restart, the stop and the start below
        long = pod_body("sd-long", [container("c", ["sh", "-c", "echo before; sleep 45; echo after; exit 3"])])
        created.append(long)
        job_id = plugin.create(long)["PodJID"]
        _wait_running(plugin, long)

        # reload: a SIGHUP, the file re-read (a flavor the running config did not have), the same process
        flavored = pod_body("sd-flavor", [container("c", ["true"])], annotations={"slurm-job.vk.io/flavor": "small"})
        assert plugin.client.post("/create", json=flavored).status_code == 422  # no such flavor yet
        _append_yaml(host, "/etc/interlink/plugin-slurm.yaml", "Flavors:\n  small: {CPUDefault: 2, MemoryDefault: 300M}\n")
        host.guide(reload)
        deadline = time.monotonic() + 20
        while "reloaded flavors" not in host.journal(unit) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "reloaded flavors" in host.journal(unit)
        assert host.main_pid(unit) == pid
        created.append(flavored)
        flavored_job = plugin.create(flavored)["PodJID"]
        shown = subprocess.run(["scontrol", "show", "job", flavored_job], capture_output=True, text=True, timeout=30,
                               env={"PATH": PATH, "SLURM_CONF": os.environ["SLURM_CONF"]}).stdout
        assert "MinMemoryNode=300M" in shown and "NumCPUs=2" in shown, shown

        # restart: a new process, the job untouched and still the pod's
        host.guide(restart)
        assert host.main_pid(unit) not in (0, pid)
        host.wait_healthz(f"http://127.0.0.1:{port}")
        assert states(_wait_running(plugin, long, 30))["c"]["running"]
        assert _squeue(job_id).startswith(f"{job_id} RUNNING il:{long['pod']['metadata']['uid']}@")

        # stop: the job runs on while the plugin is down; started again, the plugin follows it to its end
        stopped = host.guide(stop)
        assert re.search(rf"^{job_id} RUNNING il:{long['pod']['metadata']['uid']}@", stopped, re.M), stopped
        host.wait_healthz(f"http://127.0.0.1:{port}")
        done = plugin.wait_done(long, timeout=120)
        assert exit_codes(done) == {"c": 3} and done["JID"] == job_id
        assert plugin.logs(long, "c").text == "before\nafter\n"

        # the journal: one JSON object per line
        lines = [line for line in host.guide(journal).splitlines() if line.strip()]
        assert len(lines) == 5, lines
        assert all(json.loads(line)["message"] for line in lines), lines
        assert any('"serving slurm backend on http://127.0.0.1:' in line for line in host.journal(unit).splitlines())

        # root, for sbatch --uid: only the capabilities it needs; jobs as the site's users, never as root
        host.guide(root)
        host.wait_healthz(f"http://127.0.0.1:{port}")
        pid = _assert_sandboxed(host, unit, (str(DATA_ROOT), "/var/lib/interlink-plugin"))
        assert host.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "root"
        assert _status_field(host, pid, "CapBnd") == _cap_mask(
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID")
        default_user = pod_body("sd-uid", [container("c", ["id", "-u"])])
        asked_for = pod_body("sd-uid2", [container("c", ["id", "-u"])], namespace="physics",
                             securityContext={"runAsUser": uid2})
        not_listed = pod_body("sd-uid1", [container("c", ["id", "-u"])], namespace="physics",
                              securityContext={"runAsUser": uid1})
        for body in (default_user, asked_for):
            created.append(body)
            plugin.create(body)
        refused = plugin.client.post("/create", json=not_listed)
        assert refused.status_code == 403 and "runAsUser" in refused.text, refused.text
        for body, uid in ((default_user, uid1), (asked_for, uid2)):
            assert exit_codes(plugin.wait_done(body, timeout=90)) == {"c": 0}
            assert plugin.logs(body, "c").text == f"{uid}\n"
        deleted = []
        while created:  # (over TCP, while it is served)
            deleted.append(created.pop())
            assert plugin.delete(deleted[-1]).status_code == 200
        job_dirs = [DATA_ROOT / f"{b['pod']['metadata']['namespace']}-{b['pod']['metadata']['uid']}" for b in deleted]
        deadline = time.monotonic() + 60
        while any(path.exists() for path in job_dirs) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(path.exists() for path in job_dirs), job_dirs

        # unix socket: systemd listens, the first connection starts the plugin, which serves only the socket
        answer = json.loads(host.guide(socket).strip().splitlines()[-1])
        assert answer["status"] == "ok", answer
        assert host.show("interlink-plugin@slurm.socket", "ActiveState") == "active"
        host.sh(f"systemctl stop {unit}")  # the socket stays: the next connection starts it again
        assert host.show(unit, "ActiveState") == "inactive"
        ping_socket = ("curl -sf --unix-socket /run/interlink/plugin-slurm.sock -X GET "
                       "-H 'Content-Type: application/json' http://localhost/status -d '[]'")
        assert json.loads(host.sh(ping_socket).stdout)["status"] == "ok"
        assert host.show(unit, "ActiveState") == "active"
        assert host.journal(unit).count(SOCKET_PASSED) == 2
        assert host.sh(f"curl -s -o /dev/null http://127.0.0.1:{port}/healthz", check=False).returncode == 7
        assert host.sh("stat -c '%U %G %a' /run/interlink/plugin-slurm.sock").stdout.split() == [
            "interlink", "interlink", "660"]
    finally:
        for body in created:  # what a failure left: its jobs and job dirs
            with contextlib.suppress(Exception):
                plugin.delete(body)
        plugin.client.close()


# ---- HTCondor: the guide's HTCondor instance with the htcondor.conf drop-in -------------------------


def _heredoc(section: str, path: str) -> str:
    """The text a block of a guide section writes to ``path`` with `cat > path <<'YAML'`."""
    for block in section_blocks(section):
        match = re.search(rf"^cat > {re.escape(path)} <<'YAML'\n(.*?)^YAML$", block, re.S | re.M)
        if match:
            return match.group(1)
    raise AssertionError(f"no block of {section!r} writes {path}")


@pytest.fixture
def htcondor_host(systemd_image: str, dist: Path, htcondor_pool: dict[str, str]) -> Iterator[SystemdHost]:
    host = _start(f"il-systemd-htcondor-{os.getpid()}", systemd_image, "--network=host", "--cap-add=SYS_ADMIN",
                  "--cap-add=SYS_PTRACE", "-v", f"{dist}:{DIST}:ro", "-v", f"{ROOT}:{SRC}:ro")
    try:
        host.subs.update({"/path/to/interlink-plugins": SRC, "/path/to/dist": DIST})
        _same_accounts(host, ("interlink",))
        yield host
    finally:
        _remove(host)


def test_htcondor_instance_with_its_drop_in(htcondor_host: SystemdHost, htcondor_pool: dict[str, str]) -> None:
    host = htcondor_host
    blocks = section_blocks(SECTION)
    install, drop_in = (blocks[i] for i in HTCONDOR_BLOCKS)
    port = _ports(host.subs)
    unit = "interlink-plugin@htcondor.service"
    host.guide(install)
    # what "HTCondor at a grid site" sets up: its configuration (the pool's names), token and data root
    config = substitute(_heredoc("HTCondor at a grid site", "/etc/interlink/plugin-htcondor.yaml"), {
        "ce01.example.org:9618": htcondor_pool["collector"], "example.org": "il-pool",
        "SidecarPort: 4000": f"SidecarPort: {port}"})
    host.write("/etc/interlink/plugin-htcondor.yaml", config)
    token = podman("exec", htcondor_pool["name"], "condor_token_create", "-identity", "condortest@il-pool")
    host.write("/etc/interlink/condor.token", token, mode="0600")
    host.sh("install -d -m 0711 /shared/interlink/jobs")
    host.guide(drop_in)
    host.wait_healthz(f"http://127.0.0.1:{port}")
    pid = _assert_sandboxed(host, unit, ("/shared/interlink/jobs", "/var/lib/interlink-plugin-htcondor"))
    assert host.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "root"
    assert _status_field(host, pid, "CapBnd") == _cap_mask("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
                                                          "CAP_SETUID", "CAP_SETGID")
    assert "CONDOR_CONFIG=/dev/null" in host.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    # its StateDir is writable under the unit: the state is there
    assert "state-ce01.sqlite" in host.sh("ls /var/lib/interlink-plugin-htcondor").stdout.split()
    ping = json.loads(host.sh(f"curl -sf -X GET -H 'Content-Type: application/json' "
                              f"http://127.0.0.1:{port}/status -d '[]'").stdout)
    assert ping["status"] == "ok" and ping["resources"]["cpu"] == "8" and not ping["taints"], ping


# ---- Podman: the rootful unit; restarts and stops leave the pods running and monitored -------------


class ExecApi:
    """interLink's calls to the plugin inside the Podman host (its port is on the container's own loopback)."""

    def __init__(self, host: SystemdHost) -> None:
        self.host = host

    def call(self, method: str, path: str, body: Any) -> tuple[int, str]:
        result = subprocess.run(
            ["podman", "exec", "-i", self.host.name, "curl", "-s", "-w", "\n%{http_code}", "-X", method,
             "-H", "Content-Type: application/json", f"http://127.0.0.1:4000{path}", "--data-binary", "@-"],
            input=json.dumps(body), capture_output=True, text=True, timeout=60)
        text, _, code = result.stdout.rpartition("\n")
        return int(code), text

    def status(self, body: dict[str, Any]) -> dict[str, Any]:
        code, text = self.call("GET", "/status", [status_pod(body)])
        assert code == 200, text
        return dict(json.loads(text)[0])

    def wait(self, body: dict[str, Any], state: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(body)
            if all(state in c["state"] for c in last["containers"]):
                return last
            time.sleep(0.5)
        raise AssertionError(f"never {state} within {timeout}s: {last}")


@pytest.fixture
def podman_host(systemd_image: str, dist: Path, podman_ready: None) -> Iterator[SystemdHost]:
    storage = Path(tempfile.mkdtemp(prefix="il-systemd-storage-"))
    try:
        host = _start(f"il-systemd-podman-{os.getpid()}", systemd_image, "--privileged",
                      "-v", f"{storage}:/var/lib/containers", "-v", f"{dist}:{DIST}:ro", "-v", f"{ROOT}:{SRC}:ro")
        try:
            host.subs.update({"/path/to/interlink-plugins": SRC, "/path/to/dist": DIST})
            archive = storage.parent / f"{storage.name}.tar"
            podman("save", "-q", "-o", str(archive), "localhost/busybox:latest", timeout=120)
            podman("cp", str(archive), f"{host.name}:/tmp/busybox.tar")
            archive.unlink()
            host.sh("podman load -q -i /tmp/busybox.tar && rm /tmp/busybox.tar", timeout=120)
            yield host
        finally:
            _remove(host)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(storage)], timeout=120, check=False)


def _conmons(host: SystemdHost) -> dict[int, str]:
    """conmon pid -> its cgroup (name=systemd hierarchy) inside the Podman host."""
    found: dict[int, str] = {}
    for pid in host.sh("pgrep -x conmon", check=False).stdout.split():
        text = host.sh(f"cat /proc/{pid}/cgroup", check=False).stdout
        match = re.search(r"^\d+:name=systemd:(.*)$", text, re.M) or re.search(r"^0::(.*)$", text, re.M)
        found[int(pid)] = match.group(1) if match else text
    return found


def test_podman_instance_restart_and_stop_keep_its_pods(podman_host: SystemdHost) -> None:
    host = podman_host
    blocks = section_blocks(SECTION)
    install, enable = (blocks[i] for i in PODMAN_BLOCKS)
    unit = "interlink-plugin-podman@podman.service"
    host.guide(install)
    # the configuration of "Podman on a GPU host" (its GPU map names CDI devices this host does not have:
    # only a GPU pod would need them)
    config_path = "/etc/interlink/plugin-podman.yaml"
    host.write(config_path, _heredoc("Podman on a GPU host", config_path))
    host.sh("install -d -m 0700 /var/lib/interlink/jobs")
    ping = json.loads(host.guide(enable).strip().splitlines()[-1])
    assert ping["status"] == "ok" and int(ping["resources"]["cpu"]) > 0, ping
    pid = host.main_pid(unit)
    assert host.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "root"  # rootful, as the guide says

    api = ExecApi(host)
    body = pod_body("sd-podman", [container("c", ["sh", "-c", "echo started; sleep 25; echo done; exit 3"])])
    code, text = api.call("POST", "/create", body)
    assert code == 200, text
    api.wait(body, "running")
    conmons = _conmons(host)
    assert len(conmons) == 2, conmons  # the pod's infra container and its one container
    assert not any(unit in cgroup for cgroup in conmons.values()), conmons  # out of the unit's reach

    # a restart: a new plugin process, the same conmons, the pod running on
    host.sh(f"systemctl restart {unit}")
    assert host.main_pid(unit) not in (0, pid)
    host.wait_healthz()
    assert _conmons(host) == conmons
    assert "running" in api.wait(body, "running", 30)["containers"][0]["state"]
    # a stop: the pod runs on without the plugin
    host.sh(f"systemctl stop {unit}")
    uid = body["pod"]["metadata"]["uid"]
    listed = host.sh(f"podman ps --filter label=interlink.eu/pod-uid={uid} --format '{{{{.Status}}}}'").stdout
    assert listed.count("Up") == 2 and _conmons(host) == conmons, listed
    host.sh(f"systemctl start {unit}")
    host.wait_healthz()
    # the conmons recorded the exit: the plugin reports it
    done = api.wait(body, "terminated", 60)
    assert done["containers"][0]["state"]["terminated"]["exitCode"] == 3, done
    code, logs = api.call("GET", "/getLogs", log_request(body))
    assert (code, logs) == (200, "started\ndone\n")
    code, text = api.call("POST", "/delete", status_pod(body))
    assert code == 200, text
    host.sh(f"for _ in $(seq 1 60); do [ -z \"$(podman ps -aq --filter label=interlink.eu/pod-uid={uid})\" ] "
            "&& exit 0; sleep 1; done; exit 1")
