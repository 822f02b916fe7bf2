"""Modes and masking: what the plugin keeps is private, readable secret files are named, `render`
prints no secret. Real plugin process and real SLURM; `render` and `serve` as the CLI runs them."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT, PluginProcess
from tests.podfactory import container, pod_body, secret

SHORT_SECRET = "q9Z"  # shorter than the old mask's 4 characters
LONG_SECRET = "s3cr3t-l0ng-value"
PLAIN_ENV = "plainvalue-e4a1"
REGISTRY_USER, REGISTRY_PASSWORD = "regbob-7f1", "Rp7"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.e2e
def test_what_the_plugin_creates_is_not_group_or_world_readable(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    """Attack: another local user reads the plugin's state DB (every pod's spec summary and job ids), its
    job files or its SSH mirror, left 0755/0644 by the process umask or by an older version.
    Defence: umask 077 at start; StateDir is made 0700 and its DB 0600 at every start; the data root is
    traverse-only for the jobs' uids. The jobs themselves keep Kubernetes' umask (0022)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    instance = f"fm-{tmp_path.name[-8:]}"
    old_db = state / f"state-{instance}.sqlite"
    sqlite3.connect(old_db).close()  # an older version's DB, created under umask 022
    old_db.chmod(0o644)
    plugin = PluginProcess(tmp_path, {"Backend": "slurm", "ContainerRuntime": "none", "InstanceId": instance,
                                      "DataRootFolder": str(tmp_path / "site" / "jobs")},
                           env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]}).start()
    try:
        body = pod_body("modes", [container("c", ["sh", "-c", "umask; echo data > /tmp/ignored"])])
        plugin.create(body)
        plugin.wait_done(body)
        assert plugin.proc is not None
        umask = next(line for line in Path(f"/proc/{plugin.proc.pid}/status").read_text().splitlines()
                     if line.startswith("Umask:"))
        assert umask.split()[1] == "0077"
        assert mode(state) == 0o700
        made = list(state.rglob("*"))
        assert old_db in made and any(p.name.endswith("-wal") for p in made)
        for path in made:
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        data_root = tmp_path / "site" / "jobs"
        for created in (data_root, data_root.parent):  # made by the plugin: jobs of other uids traverse only
            assert mode(created) == 0o711, (created, oct(mode(created)))
        job_dir = next(path for path in data_root.iterdir() if path.name != "helpers")
        assert mode(job_dir) == 0o700
        # the shared static helpers: readable by every job's user by name, changed by nobody, listed by none
        assert mode(data_root / "helpers") == 0o711
        for copy in (data_root / "helpers").iterdir():
            assert mode(copy) == 0o511 and all(mode(path) == 0o555 for path in copy.iterdir())
        for path in job_dir.iterdir():
            if path.is_file() and path.name in ("pod-runner.sh", "pod.json", "ns-exec.sh"):
                assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        assert plugin.logs(body, "c").text.splitlines()[0] == "0022"
    finally:
        plugin.stop()


def _files(tmp_path: Path, file_mode: int, group: int = -1) -> dict[str, Path]:
    files = {"key": tmp_path / "id_ed25519", "token": tmp_path / "condor.token", "password": tmp_path / "registry.pw"}
    for path in files.values():
        path.write_text("not-a-real-secret\n")
        path.chmod(file_mode)
        os.chown(path, -1, group)
    return files


def _config(tmp_path: Path, files: dict[str, Path], file_mode: int, group: int = -1) -> Path:
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({
        "Backend": "slurm", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"),
        "StateDir": str(tmp_path / "state"), "DefaultUID": 65534, "SshKeyFile": str(files["key"]),
        "HTCondorTokenFile": str(files["token"]),
        "RegistryCredentials": {"reg.example.org": {"Username": "u", "PasswordFile": str(files["password"])}},
    }))
    config.chmod(file_mode)
    os.chown(config, -1, group)
    return config


def _render(pod: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interlink_plugins.cli", "render", str(pod), "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def _plain_pod(tmp_path: Path) -> Path:
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(pod_body("p", [container("c", ["true"])])))
    return pod


@pytest.mark.parametrize(("file_mode", "group"), [(0o644, -1), (0o604, -1), (0o640, 4338)])
def test_readable_key_password_and_config_files_are_warned_by_name(tmp_path: Path, file_mode: int, group: int) -> None:
    """Attack: a private key, token, registry password or the config file (which may hold passwords) is
    readable by other local users, who then act as the plugin. Defence: every start (and `render`,
    `check`) warns naming each such file."""
    files = _files(tmp_path, file_mode, group)
    config = _config(tmp_path, files, file_mode, group)
    rendered = _render(_plain_pod(tmp_path), config)
    assert rendered.returncode == 0, rendered.stderr
    for path in (*files.values(), config):
        assert any(str(path) in line and "readable" in line for line in rendered.stderr.splitlines()), \
            (path, rendered.stderr)


def test_private_key_password_and_config_files_give_no_warning(tmp_path: Path) -> None:
    """The other side: 0600 files, and 0640 files whose group is the plugin's own, are not warned about."""
    for file_mode, group in ((0o600, -1), (0o640, os.getegid())):
        work = tmp_path / f"m{file_mode:o}"
        work.mkdir()
        files = _files(work, file_mode, group)
        config = _config(work, files, file_mode, group)
        rendered = _render(_plain_pod(work), config)
        assert rendered.returncode == 0, rendered.stderr
        assert "readable" not in rendered.stderr, rendered.stderr


def _secret_pod(tmp_path: Path) -> Path:
    """A pod as interLink sends it: env from secrets arrives resolved into plain values."""
    env = [{"name": "PLAIN", "value": PLAIN_ENV}, {"name": "FROM_SECRET", "value": LONG_SECRET},
           {"name": "SHORT", "value": SHORT_SECRET}]
    main = container("c", ["sh", "-c", "echo $(SHORT) $(PLAIN)"], env=env, image="reg.example.org/app:1",
                     volumeMounts=[{"name": "sv", "mountPath": "/s"}])
    body = pod_body("p", [main], secrets=[secret("s", {"short": SHORT_SECRET.encode(), "long": LONG_SECRET.encode()})],
                    volumes=[{"name": "sv", "secret": {"secretName": "s"}}])
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(body))
    return pod


@pytest.mark.parametrize(("backend", "runtime"), [("slurm", "apptainer"), ("slurm", "podman"), ("slurm", "none"),
                                                  ("podman", "podman")])
def test_render_prints_no_secret_and_env_as_name_and_length(tmp_path: Path, backend: str, runtime: str) -> None:
    """Attack: an admin pastes `render` output into a ticket; it held a 3-character secret, the env values
    interLink resolved from secrets, and the registry password in clear (the old mask skipped values
    shorter than 4 characters and knew nothing of env). Defence: render replaces every env value by its
    length, every secret and registry credential by a placeholder, before the job is rendered."""
    password_file = tmp_path / "registry.pw"
    password_file.write_text(REGISTRY_PASSWORD + "\n")
    password_file.chmod(0o600)
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({
        "Backend": backend, "ContainerRuntime": runtime, "DataRootFolder": str(tmp_path / "jobs"),
        "StateDir": str(tmp_path / "state"), "DefaultUID": 65534,
        "RegistryCredentials": {"reg.example.org": {"Username": REGISTRY_USER, "PasswordFile": str(password_file)}},
    }))
    config.chmod(0o600)
    rendered = _render(_secret_pod(tmp_path), config)
    assert rendered.returncode == 0, rendered.stderr
    output = rendered.stdout + rendered.stderr
    for value in (SHORT_SECRET, LONG_SECRET, PLAIN_ENV, REGISTRY_PASSWORD, REGISTRY_USER,
                  base64.b64encode(SHORT_SECRET.encode()).decode(), base64.b64encode(LONG_SECRET.encode()).decode()):
        assert value not in output, (value, [line for line in output.splitlines() if value in line])
    summary: dict[str, Any] = {}
    for line in rendered.stdout.splitlines():
        if line.startswith("# env "):
            summary[line.split()[2].rstrip(":")] = line
    assert f"PLAIN ({len(PLAIN_ENV)} bytes)" in summary["c"] and "SHORT (3 bytes)" in summary["c"], summary
    assert f"FROM_SECRET ({len(LONG_SECRET)} bytes)" in summary["c"]


@pytest.mark.e2e
def test_a_data_root_other_users_can_write_is_reported(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    """Attack: another local user creates entries in a world-writable data root, where job directories go
    (a planted directory or symlink under a future job's name). Defence: `check` fails and `serve` warns,
    naming the directory; one the plugin makes is 0711."""
    data_root = tmp_path / "jobs"
    data_root.mkdir(mode=0o777)
    data_root.chmod(0o777)
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({"Backend": "slurm", "ContainerRuntime": "none", "DataRootFolder": str(data_root),
                                      "StateDir": str(tmp_path / "state")}))
    config.chmod(0o600)
    check = subprocess.run([sys.executable, "-m", "interlink_plugins.cli", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                           env={**os.environ, "SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    assert check.returncode == 1 and f"[FAIL] DataRootFolder {data_root} (mode 0777) is writable" in check.stdout, \
        check.stdout
    data_root.chmod(0o711)
    check = subprocess.run([sys.executable, "-m", "interlink_plugins.cli", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                           env={**os.environ, "SLURM_CONF": slurm_cluster["SLURM_CONF"]})
    assert check.returncode == 0 and "FAIL" not in check.stdout, check.stdout
