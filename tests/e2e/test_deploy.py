"""deploy/: the systemd units as a site admin installs them, checked with systemd's own tools."""

from __future__ import annotations

import configparser
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import ROOT, PluginProcess, free_port
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e
UNITS = ROOT / "deploy" / "systemd"
INSTALL = Path("/opt/interlink-plugins/bin/interlink-plugin")


@pytest.fixture(scope="module")
def site_install() -> None:
    """The documented install: a venv of the system python under /opt/interlink-plugins, user `interlink`."""
    try:
        pwd.getpwnam("interlink")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "interlink"], check=True, timeout=30)
    if not INSTALL.exists():
        venv = INSTALL.parent.parent
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                       check=True, timeout=600, capture_output=True)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_units_verify_and_pass_the_security_threshold(site_install: None, tmp_path: Path) -> None:
    for name in ("interlink-plugin@.service", "interlink-plugin@.socket"):
        shutil.copy(UNITS / name, tmp_path / name.replace("@.", "@slurm."))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "interlink-plugin@slurm.service"),
                             str(tmp_path / "interlink-plugin@slurm.socket")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=30",
                               str(tmp_path / "interlink-plugin@slurm.service")], capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-2000:]
    assert "Overall exposure level" in security.stdout


def test_execstart_as_its_user_with_its_environment_file_answers_the_ping(
    site_install: None, tmp_path: Path, slurm_cluster: dict[str, str]
) -> None:
    service = unit("interlink-plugin@.service")["Service"]
    user = service["User"]
    instance = f"iltest{os.getpid()}"
    env_file = Path(service["EnvironmentFile"].lstrip("-").replace("%i", instance))
    config_path = Path("/etc/interlink") / f"plugin-{instance}.yaml"
    work = Path(tempfile.mkdtemp(prefix="il-site-"))  # pytest's tmp_path is private to root
    work.chmod(0o755)
    shutil.chown(work, user)
    port = free_port()
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(f"SLURM_CONF={slurm_cluster['SLURM_CONF']}\n")
    config_path.write_text(yaml.safe_dump({"Backend": "slurm", "ContainerRuntime": "none", "SidecarPort": port,
                                           "DataRootFolder": str(work / "jobs"), "StateDir": str(work / "state"),
                                           "AllowedClientUids": [0]}))  # the test's client runs as root
    argv = shlex.split(service["ExecStart"].replace("%i", instance))
    environment = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    proc = subprocess.Popen(["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in environment.items()], *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ping = httpx.request("GET", f"http://127.0.0.1:{port}/status", json=[], timeout=2)
                if ping.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the unit's ExecStart never answered")
        assert ping.json()["status"] == "ok"
        owner = pwd.getpwuid(os.stat(work / "state").st_uid).pw_name
        assert owner == user
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        config_path.unlink()
        env_file.unlink()
        shutil.rmtree(work, ignore_errors=True)


def test_socket_activation(site_install: None, tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    socket_path = tmp_path / "plugin.sock"
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({"Backend": "slurm", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"),
                                      "StateDir": str(tmp_path / "state")}))
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(socket_path), str(INSTALL), "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        transport = httpx.HTTPTransport(uds=str(socket_path))
        with httpx.Client(transport=transport, base_url="http://unix", timeout=30) as client:
            ping = client.request("GET", "/status", json=[])
            assert ping.status_code == 200 and ping.json()["status"] == "ok"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_unix_socket_mode(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    socket_path = tmp_path / "run" / "plugin.sock"
    plugin = PluginProcess(tmp_path, {"Backend": "slurm", "ContainerRuntime": "none", "Socket": f"unix://{socket_path}"},
                           env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    plugin.client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://unix", timeout=30)
    plugin.start()
    try:
        body = pod_body("sock", [container("c", ["echo", "over a unix socket"])])
        plugin.create(body)
        assert plugin.wait_done(body)["containers"][0]["state"]["terminated"]["exitCode"] == 0
        assert plugin.logs(body, "c").text == "over a unix socket\n"
    finally:
        plugin.stop()


def test_sighup_reloads_flavors_and_keeps_jobs(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    flavors = {"small": {"CPUDefault": 2, "MemoryDefault": "200M"}}
    plugin = PluginProcess(tmp_path, {"Backend": "slurm", "ContainerRuntime": "none", "Flavors": flavors},
                           env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]}).start()
    try:
        first = pod_body("f1", [container("c", ["sleep", "30"])], annotations={"slurm-job.vk.io/flavor": "small"})
        job1 = plugin.create(first)["PodJID"]
        plugin.config["Flavors"] = {"small": {"CPUDefault": 3, "MemoryDefault": "300M"}}
        plugin.config_path.write_text(yaml.safe_dump(plugin.config))
        assert plugin.proc is not None
        os.kill(plugin.proc.pid, signal.SIGHUP)
        time.sleep(1)
        second = pod_body("f2", [container("c", ["sleep", "30"])], annotations={"slurm-job.vk.io/flavor": "small"})
        job2 = plugin.create(second)["PodJID"]
        show = {j: subprocess.run(["scontrol", "show", "job", j], capture_output=True, text=True, timeout=10).stdout
                for j in (job1, job2)}
        assert "MinMemoryNode=200M" in show[job1] and "MinMemoryNode=300M" in show[job2]
        plugin.config_path.write_text("Backend: [broken")
        os.kill(plugin.proc.pid, signal.SIGHUP)
        time.sleep(1)
        assert plugin.ping()["status"] == "ok"  # a bad file is refused, the plugin keeps running
        plugin.kill(signal.SIGTERM)
        state = subprocess.run(["squeue", "-h", "-j", f"{job1},{job2}", "-o", "%T"], capture_output=True, text=True, timeout=10)
        assert set(state.stdout.split()) <= {"RUNNING", "PENDING", "CONFIGURING"} and state.stdout.strip()
        subprocess.run(["scancel", job1, job2], timeout=10, check=False)
    finally:
        plugin.stop()
