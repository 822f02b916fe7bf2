"""Packaging: the sdist and the wheel built with `python -m build`, the wheel installed into a fresh venv
WITHOUT the htcondor extra, and its `--version`, `check` and `render` run from there (check against the
REAL local cluster)."""

from __future__ import annotations

import email
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from interlink_plugins import __version__
from interlink_plugins.exitcodes import ExitCode
from tests.harness import ROOT

pytestmark = pytest.mark.e2e


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def test_build_install_and_run_from_a_fresh_venv(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = dist.glob("interlink_plugins-*.tar.gz")
    (wheel,) = dist.glob("interlink_plugins-*-py3-none-any.whl")
    assert sdist.name == f"interlink_plugins-{__version__}.tar.gz"

    # the sdist is a source tree a site installs from: units, container recipe, guide, licence, changelog
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "docs/site-admin-guide.md",
                   "deploy/systemd/interlink-plugin@.service", "deploy/systemd/root.conf",
                   "deploy/container/Containerfile", "interlink_plugins/templates/pod_runner.sh"):
        assert needed in names, needed
    assert not any("__pycache__" in name for name in names)

    # the wheel's metadata
    with zipfile.ZipFile(wheel) as archive:
        info = f"interlink_plugins-{__version__}.dist-info"
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        assert f"{info}/licenses/LICENSE" in archive.namelist()
        assert "interlink_plugins/py.typed" in archive.namelist()
    assert metadata["Version"] == __version__ and metadata["License-Expression"] == "Apache-2.0"
    requires = metadata.get_all("Requires-Dist")
    assert [r for r in requires if r.startswith("htcondor")] == ['htcondor<26,>=24.0; extra == "htcondor"'], requires
    assert {"htcondor", "tracing"} <= set(metadata.get_all("Provides-Extra"))
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier")
    assert any(url.startswith("Documentation, ") for url in metadata.get_all("Project-URL"))
    assert metadata["Description-Content-Type"] == "text/markdown" and "interLink" in metadata.get_payload()

    # a fresh venv, the wheel without extras
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    installed = run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)])
    assert installed.returncode == 0, installed.stderr[-3000:]
    binary = str(venv / "bin" / "interlink-plugin")
    version = run([binary, "--version"])
    assert (version.returncode, version.stdout) == (0, f"interlink-plugin {__version__}\n")
    assert run([str(venv / "bin" / "python"), "-c", "import htcondor2"]).returncode != 0  # not without the extra

    config = tmp_path / "plugin.yaml"
    config.write_text(json.dumps({"Backend": "slurm", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "jobs"),
                                  "StateDir": str(tmp_path / "state"), "LogFormat": "text", "DefaultUID": 65534}))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": slurm_cluster["SLURM_CONF"]}
    check = run([binary, "check", "--config", str(config)], env=env)
    assert check.returncode == 0 and "[ok] backend slurm reachable" in check.stdout, check.stdout + check.stderr
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"metadata": {"name": "p", "namespace": "default", "uid": "0e5c1d4e-5b7a-4a47-9d1e-1f0e0c0b0a09"},
                               "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["echo", "hi"]}]}}))
    render = run([binary, "render", str(pod), "--config", str(config)], env=env)
    assert render.returncode == 0 and "pod-runner.sh" in render.stdout and "--export-file=/dev/null" in render.stdout

    # Backend htcondor without the extra: one line saying what to install
    htcondor = tmp_path / "htcondor.yaml"
    htcondor.write_text(json.dumps({"Backend": "htcondor", "ContainerRuntime": "none", "LogFormat": "text",
                                    "DataRootFolder": str(tmp_path / "jobs"), "StateDir": str(tmp_path / "state")}))
    htcondor.chmod(0o600)  # private, as a site keeps it (else a warning line of its own)
    for command in (["check", "--config", str(htcondor)], ["serve", "--config", str(htcondor)]):
        refused = run([binary, *command], env=env, timeout=60)
        assert refused.returncode == ExitCode.CONFIG, refused.stdout + refused.stderr
        assert refused.stderr.strip().splitlines() == [
            "interlink-plugin: config error: Backend htcondor needs the HTCondor bindings: "
            "pip install 'interlink-plugins[htcondor]'"
        ], refused.stderr
