"""Shared fixtures: the REAL local backends, started by the project's own scripts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PluginProcess

ROOT = Path(__file__).resolve().parent.parent
SLURM_STATE = Path(os.environ.get("IL_SLURM_STATE", "/tmp/il-slurm"))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A real single-node slurmctld + slurmd (slurm/slurm-up.sh); SLURM_CONF exported for the plugin."""
    # MinJobAge=10: finished jobs leave slurmctld within ~30 s, so the accounting fallback
    # (sacct -c over jobcomp/filetxt) is exercised by the suite, not only in theory
    result = subprocess.run(
        ["bash", str(ROOT / "slurm" / "slurm-up.sh"), str(SLURM_STATE)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SLURM_MIN_JOB_AGE": os.environ.get("SLURM_MIN_JOB_AGE", "10")},
    )
    assert result.returncode == 0, result.stderr
    conf = str(SLURM_STATE / "slurm.conf")
    os.environ["SLURM_CONF"] = conf
    yield {"SLURM_CONF": conf, "state": str(SLURM_STATE)}


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """Real podman configured for this machine, with the locally built images."""
    result = subprocess.run(
        ["bash", str(ROOT / "podman" / "podman-setup.sh")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def plugin_factory(tmp_path: Path, slurm_cluster: dict[str, str], podman_ready: None) -> Iterator[Callable[..., PluginProcess]]:
    started: list[PluginProcess] = []

    def make(runtime: str = "none", workdir: Path | None = None, **config: Any) -> PluginProcess:
        workdir = workdir or tmp_path / f"plugin{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = PluginProcess(
            workdir,
            {"Backend": "slurm", "ContainerRuntime": runtime, "InstanceId": f"t{len(started)}-{tmp_path.name[-12:]}",
             **config},
            env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]},
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def plugin(plugin_factory: Callable[..., PluginProcess]) -> PluginProcess:
    return plugin_factory()


@pytest.fixture(scope="session")
def htcondor_pool(podman_ready: None) -> Iterator[dict[str, str]]:
    """A real personal HTCondor pool (Debian 13's htcondor) in a podman container: htcondor/ scripts.

    The image is built once per recipe (content-hash tag); the host's /tmp is the pool's shared
    filesystem. Tokens and the client config go to HTCONDOR_DIR.
    """
    built = subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-build.sh")], capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    image = built.stdout.strip().splitlines()[-1]
    env = {**os.environ, "HTCONDOR_NAME": "il-htcondor", "HTCONDOR_DIR": "/tmp/il-htcondor", "HTCONDOR_SHARED": "/tmp"}
    up = subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-up.sh"), image], capture_output=True, text=True,
                        timeout=180, env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    yield {"name": "il-htcondor", "image": image, "collector": "127.0.0.1:9618", "dir": "/tmp/il-htcondor"}
    subprocess.run(["bash", str(ROOT / "htcondor" / "htcondor-down.sh")], capture_output=True, timeout=60, env=env)


@pytest.fixture(scope="session")
def kubelet_images(podman_ready: None) -> dict[str, str]:
    """The kubelet-parity stand-in images (tests/kubelet/images/build.sh): name -> id, built once per recipe."""
    built = subprocess.run(["bash", str(ROOT / "tests" / "kubelet" / "images" / "build.sh")], capture_output=True,
                           text=True, timeout=1500)
    assert built.returncode == 0, built.stderr[-3000:]
    return dict(line.split() for line in built.stdout.splitlines() if line.strip())


@pytest.fixture(scope="session")
def registry(kubelet_images: dict[str, str]) -> Iterator[dict[str, str]]:
    """A local OCI registry with htpasswd auth and TLS (tests/registry/registry-up.sh), trusted by podman
    and the system store; the images tests pull from it are removed from podman's store at the end."""
    up = subprocess.run(["bash", str(ROOT / "tests" / "registry" / "registry-up.sh"), "/tmp/il-registry"],
                        capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    info = dict(word.split("=", 1) for word in up.stdout.split())
    info["password"] = Path(info["REGISTRY_PASSWORD_FILE"]).read_text().strip()
    yield info
    pulled = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, timeout=60).stdout.split()
    mine = [ref for ref in pulled if ref.startswith(f"{info['REGISTRY']}/il/")]
    if mine:
        subprocess.run(["podman", "rmi", "-f", *mine], capture_output=True, timeout=120)
    subprocess.run(["bash", str(ROOT / "tests" / "registry" / "registry-down.sh"), "/tmp/il-registry"],
                   capture_output=True, timeout=60)
