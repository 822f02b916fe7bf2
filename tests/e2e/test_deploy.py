"""deploy/: the systemd units and drop-ins checked offline with systemd's own tools and against the guide's
paths (tests/e2e/test_systemd.py runs them under a real systemd), and the serve modes they rely on."""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import ROOT, PluginProcess
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


def _installed(tmp_path: Path) -> list[Path]:
    """The units as the site-admin guide installs them: instances slurm and htcondor with their drop-ins,
    the socket, the podman instance (systemd-analyze reads drop-in dirs next to a unit)."""
    for instance, drop_in in (("slurm", "root.conf"), ("htcondor", "htcondor.conf")):
        shutil.copy(UNITS / "interlink-plugin@.service", tmp_path / f"interlink-plugin@{instance}.service")
        (tmp_path / f"interlink-plugin@{instance}.service.d").mkdir()
        shutil.copy(UNITS / drop_in, tmp_path / f"interlink-plugin@{instance}.service.d" / drop_in)
    shutil.copy(UNITS / "interlink-plugin@.socket", tmp_path / "interlink-plugin@slurm.socket")
    shutil.copy(UNITS / "interlink-plugin-podman@.service", tmp_path / "interlink-plugin-podman@podman.service")
    return sorted(path for path in tmp_path.iterdir() if path.is_file())


def test_units_and_drop_ins_verify_cleanly_and_pass_the_security_threshold(site_install: None, tmp_path: Path) -> None:
    """systemd's own checks, offline; tests/e2e/test_systemd.py runs them under a real systemd."""
    units = _installed(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr  # unknown keys would be warnings
    # the sandboxed instances; the podman unit is not sandboxed on purpose (its restrictions would be every
    # pod's: see its comments)
    for name in ("interlink-plugin@slurm.service", "interlink-plugin@htcondor.service"):
        security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=30", str(tmp_path / name)],
                                  capture_output=True, text=True, timeout=60)
        assert security.returncode == 0, security.stdout[-2000:]
        assert "Overall exposure level" in security.stdout


def test_units_name_the_guides_paths() -> None:
    """Every path the units read or write is one the site-admin guide creates or names."""
    guide = (ROOT / "docs" / "site-admin-guide.md").read_text()
    service = unit("interlink-plugin@.service")["Service"]
    assert service["ReadWritePaths"] == "-/srv/interlink/jobs" and "DataRootFolder: /srv/interlink/jobs" in guide
    assert service["StateDirectory"] == "interlink-plugin" and "StateDir: /var/lib/interlink-plugin\n" in guide
    assert service["ExecStart"].startswith("/opt/interlink-plugins/bin/interlink-plugin serve --config /etc/interlink/plugin-%i.yaml")
    assert "python3 -m venv /opt/interlink-plugins" in guide
    htcondor = unit("htcondor.conf")["Service"]
    assert htcondor["ReadWritePaths"] == "-/shared/interlink/jobs" and "DataRootFolder: /shared/interlink/jobs" in guide
    assert htcondor["StateDirectory"] == "interlink-plugin-htcondor"
    assert "StateDir: /var/lib/interlink-plugin-htcondor" in guide
    podman = unit("interlink-plugin-podman@.service")["Service"]
    assert podman["StateDirectory"] == "interlink-plugin-podman" and "StateDir: /var/lib/interlink-plugin-podman" in guide
    assert "User" not in podman  # rootful, as the guide's podman section
    assert unit("interlink-plugin@.socket")["Socket"]["ListenStream"] == "/run/interlink/plugin-%i.sock"
    assert "unix:///run/interlink/plugin-slurm.sock" in guide
    env = (UNITS / "plugin.env").read_text()
    assert "--export=NIL" not in env and "--export-file=/dev/null" in env


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
