"""A user error on the command line is one line naming the problem and a documented exit code, never a traceback
(the real CLI in a subprocess, as an admin runs it)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from interlink_plugins.core.records.state import SCHEMA_VERSION
from interlink_plugins.exitcodes import MEANINGS, ExitCode

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interlink_plugins.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def config(tmp_path: Path, **extra: object) -> Path:
    values = {"Backend": "slurm", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"),
              "StateDir": str(tmp_path / "state"), **extra}
    path = tmp_path / "plugin.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))
    path.chmod(0o600)  # private, as a site keeps it (a readable config is a warning of its own)
    return path


def one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interlink-plugin: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A path that cannot become a directory, even for root: a regular file is in the way."""
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "below"


def test_config_problems_exit_78(tmp_path: Path) -> None:
    one_line_error(cli("check", "--config", str(tmp_path / "absent.yaml")), ExitCode.CONFIG,
                   "absent.yaml", "No such file or directory")
    broken = tmp_path / "broken.yaml"
    broken.write_text("Backend: slurm\nFlavors: {a: [\n")
    one_line_error(cli("serve", "--config", str(broken)), ExitCode.CONFIG, "not valid YAML", "line 3")
    one_line_error(cli("render", "x.json", "--config", str(config(tmp_path, PollInterval="soon"))),
                   ExitCode.CONFIG, "PollInterval", "'soon'")
    one_line_error(cli("serve", "--config", str(config(tmp_path, MetricsAddress="9464"))),
                   ExitCode.CONFIG, "MetricsAddress", "host:port")


def test_directories_that_cannot_be_made_exit_73_and_check_reports_them(tmp_path: Path, blocked: Path) -> None:
    one_line_error(cli("serve", "--config", str(config(tmp_path, DataRootFolder=str(blocked)))), ExitCode.CANTCREAT,
                   f"DataRootFolder {blocked} cannot be created", "Not a directory")
    one_line_error(cli("serve", "--config", str(config(tmp_path, StateDir=str(blocked)))), ExitCode.CANTCREAT,
                   f"StateDir {blocked} cannot be created")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state-default.sqlite").write_text("not a database, " * 100)
    one_line_error(cli("pods", "--config", str(config(tmp_path))), ExitCode.CANTCREAT, "cannot be read")
    nothing = cli("pods", "--config", str(config(tmp_path, StateDir=str(blocked))))  # read-only: creates nothing
    assert nothing.returncode == 0 and nothing.stdout.startswith("NAMESPACE/NAME") and "no state" in nothing.stderr
    checked = cli("check", "--config", str(config(tmp_path, DataRootFolder=str(blocked))))
    assert checked.returncode == ExitCode.CHECK_FAILED and "Traceback" not in checked.stderr
    assert f"[FAIL] DataRootFolder {blocked} cannot be created: Not a directory" in checked.stdout


def test_render_input_problems_exit_66_and_65(tmp_path: Path) -> None:
    path = config(tmp_path)
    one_line_error(cli("render", str(tmp_path / "pod.yaml"), "--config", str(path)), ExitCode.NOINPUT,
                   "pod.yaml", "No such file or directory")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}\n")
    one_line_error(cli("render", str(manifest), "--config", str(path)), ExitCode.DATAERR, "neither JSON nor YAML")
    manifest.write_text("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}]\n"
                        "  volumes: [{name: v, configMap: {name: absent}}]\n")
    one_line_error(cli("render", str(manifest), "--config", str(path)), ExitCode.DATAERR,
                   "ConfigMap 'absent' is not in the manifest")
    manifest.write_text("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x, command: ['true'],"
                        " resources: {limits: {vendor.example/fpga: '1'}}}]\n")
    one_line_error(cli("render", str(manifest), "--config", str(path)), ExitCode.DATAERR, "refused:",
                   "vendor.example/fpga")


def test_a_newer_state_exits_65_and_a_busy_metrics_address_69(tmp_path: Path) -> None:
    path = config(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)  # private, as the plugin keeps it (else it says it tightened it)
    (tmp_path / "state" / "state-default.sqlite").touch(mode=0o600)
    db = sqlite3.connect(tmp_path / "state" / "state-default.sqlite")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL, job_id TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    for command in ("serve", "pods"):
        one_line_error(cli(command, "--config", str(path)), ExitCode.DATAERR,
                       f"has schema {SCHEMA_VERSION + 1}, newer than this plugin")
    checked = cli("check", "--config", str(path))
    assert checked.returncode == ExitCode.CHECK_FAILED and "Traceback" not in checked.stderr
    assert f"schema {SCHEMA_VERSION + 1}, newer than this plugin ({SCHEMA_VERSION}): install" in checked.stdout
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        one_line_error(cli("serve", "--config", str(config(tmp_path, StateDir=str(tmp_path / "state2"),
                                                         MetricsAddress=f"127.0.0.1:{port}"))),
                       ExitCode.UNAVAILABLE, f"MetricsAddress 127.0.0.1:{port}", "in use")


def test_help_documents_every_exit_code() -> None:
    shown = cli("--help")
    assert shown.returncode == 0
    for code, meaning in MEANINGS.items():
        assert f"{int(code):>3}  {meaning}" in shown.stdout
    usage = cli("render")
    assert usage.returncode == ExitCode.USAGE and "Traceback" not in usage.stderr
