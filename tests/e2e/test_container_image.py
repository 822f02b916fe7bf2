"""deploy/container/: the plugin's image, built registry-free, serving pods on the REAL backends.

The SLURM flavour is driven by the commands of the admin guide's "Run it in a container" section, run
as written (paths, port and container name swapped for the test's own), against the real local
cluster; the HTCondor flavour against the real personal pool.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from interlink_plugins import __version__
from tests.e2e.kits import HTCondorKit
from tests.guidedoc import GUIDE, section_blocks
from tests.harness import ROOT, PluginProcess, exit_codes, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e
BUILD = ROOT / "deploy" / "container" / "build.sh"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def guide_blocks() -> list[str]:
    return section_blocks("Run it in a container")


def build(flavour: str, **env: str) -> tuple[str, str]:
    """build.sh's image name (its last stdout line) and its stderr (podman build's output: empty when skipped)."""
    result = subprocess.run(["bash", str(BUILD), flavour], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1], result.stderr


def remove_container(name: str) -> str:
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60)
    subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True, timeout=60)
    return logs.stdout + logs.stderr


def test_the_guide_section_has_the_commands_we_test() -> None:
    blocks = guide_blocks()
    assert len(blocks) == 2
    assert "deploy/container/build.sh slurm" in blocks[0] and "podman run" in blocks[1]
    section = GUIDE.read_text().split("\n## Run it in a container\n", 1)[1]
    assert section.split("\n## ", 1)[1].startswith("Threat model")  # placed just before the threat model


def test_build_is_content_addressed_and_skipped_when_unchanged(tmp_path: Path) -> None:
    image, _ = build("slurm")
    again, log = build("slurm")
    assert again == image and image.startswith("localhost/interlink-plugin-slurm:")
    assert log == "", f"an unchanged tree was built again: {log[-2000:]}"
    # a build shows its progress (another uid: a new image, built now from the cached layers)
    fresh_image, fresh_log = build("slurm", PLUGIN_UID="4243")
    assert re.search(r"STEP 1/\d+: FROM", fresh_log) and "Successfully tagged" in fresh_log, fresh_log[-2000:]
    assert build("slurm") == (image, "")  # the version tag back on the default build
    subprocess.run(["podman", "rmi", fresh_image], capture_output=True, timeout=120)
    other = subprocess.run(["bash", str(BUILD), "nonsense"], capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "unknown flavour" in other.stderr
    inspect = subprocess.run(["podman", "image", "inspect", "-f", "{{.Config.User}} {{json .Config.ExposedPorts}}",
                              image], capture_output=True, text=True, timeout=60)
    assert inspect.stdout.split(" ", 1) == ["interlink", '{"4000/tcp":{}}\n']
    # the version tag, the OCI labels and the health check
    (details,) = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True,
                                           timeout=60).stdout)
    labels = details["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "interlink-plugin-slurm"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"])
    assert details["Healthcheck"]["Test"] == ["CMD", "/opt/interlink-plugins/bin/python",
                                              "/opt/interlink-plugins/healthcheck.py"]
    version_tag = subprocess.run(["podman", "image", "inspect", "-f", "{{.Id}}",
                                  f"localhost/interlink-plugin-slurm:{__version__}", image],
                                 capture_output=True, text=True, timeout=60)
    tagged, built = version_tag.stdout.split()
    assert tagged == built, "the version tag does not name the latest build"
    probe = subprocess.run(["podman", "run", "--rm", "--entrypoint", "sh", image, "-c",
                            "id -un; dpkg-query -W slurm-client munge; ls /run/secrets"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    user, munge, slurm, *secrets = probe.stdout.splitlines()
    assert user == "interlink" and munge.startswith("munge\t"), probe.stdout
    assert slurm.startswith("slurm-client\t22.05."), probe.stdout  # bookworm's, as the site's slurmctld
    assert secrets == []  # the CA bundle was a build secret: nothing of it in the image


def test_the_tag_follows_every_input(tmp_path: Path) -> None:
    """A copy of the tree names the same image; a changed source file or uid names another one."""
    for part in ("deploy", "interlink_plugins", "pyproject.toml", "README.md", "LICENSE"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, tmp_path / part)

    def name(tree: Path, **env: str) -> str:
        result = subprocess.run(["bash", str(tree / "deploy" / "container" / "build.sh"), "slurm", "--name-only"],
                                capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    original = name(ROOT)
    assert name(tmp_path) == original
    assert name(tmp_path, PLUGIN_UID="4242") != original
    with (tmp_path / "interlink_plugins" / "__init__.py").open("a") as handle:
        handle.write("# changed\n")
    assert name(tmp_path) != original


@pytest.fixture
def site_dir() -> Iterator[Path]:
    """Stands in for the host's /srv, /var/lib and /etc/interlink: a dir the plugin's user can traverse."""
    work = Path(tempfile.mkdtemp(prefix="il-image-"))  # pytest's tmp_path is private to root
    work.chmod(0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_slurm_image_from_the_guide_runs_a_pod_on_slurm(slurm_cluster: dict[str, str], site_dir: Path) -> None:
    name = "image-plugin-slurm"
    plugin = PluginProcess(site_dir, {})  # not started: only its client, on the port the container serves
    slurm_dir = str(Path(slurm_cluster["SLURM_CONF"]).parent)
    script = "\n".join(guide_blocks())
    for old, new in (("/path/to/interlink-plugins", str(ROOT)), ("/srv/interlink/jobs", f"{site_dir}/jobs"),
                     ("/var/lib/interlink-plugin", f"{site_dir}/state"),
                     ("/etc/interlink/plugin-container.yaml", f"{site_dir}/plugin.yaml"),
                     ("/etc/slurm", slurm_dir), ("il-plugin-slurm", name), ("4000", str(plugin.port))):
        assert old in script, old
        script = script.replace(old, new)
    remove_container(name)
    started = time.monotonic()
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                                timeout=900, env={"PATH": HOST_PATH, "HOME": "/root"})
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        *before, last = result.stdout.strip().splitlines()
        ping = json.loads(last)
        assert ping["status"] == "ok" and int(ping["resources"]["cpu"]) > 0 and not ping["taints"], ping
        assert before[-1] == "healthy", result.stdout  # the image's HEALTHCHECK, run by podman
        body = pod_body("boxed", [container("c", ["sh", "-c", "echo hello from $(id -un); exit 7"])])
        job_id = plugin.create(body)["PodJID"]
        assert job_id.isdigit(), job_id
        status = plugin.wait_done(body, timeout=90)
        assert exit_codes(status) == {"c": 7}
        assert f"job {job_id} on node" in states(status)["c"]["terminated"]["message"]
        assert plugin.logs(body, "c").text == "hello from interlink\n"
        user = pwd.getpwnam("interlink")
        job_dir = site_dir / "jobs" / f"default-{body['pod']['metadata']['uid']}"
        assert (job_dir.stat().st_uid, job_dir.stat().st_gid) == (user.pw_uid, user.pw_gid)  # the site user
        accounting = subprocess.run(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,UID,WorkDir"],
                                    capture_output=True, text=True, timeout=30).stdout
        squeue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i|%U"], capture_output=True, text=True,
                                timeout=30).stdout
        assert f"{job_id}|{user.pw_uid}" in squeue + accounting, (squeue, accounting)
        assert plugin.delete(body).status_code == 200
        print(f"slurm container: guide commands + pod {time.monotonic() - started:.1f} s")
    finally:
        plugin.stop()
        logs = remove_container(name)
    assert "Traceback" not in logs, logs[-3000:]


@pytest.fixture
def htcondor_kit(tmp_path: Path, htcondor_pool: dict[str, str]) -> Iterator[HTCondorKit]:
    kit = HTCondorKit(tmp_path / "kit", htcondor_pool)
    yield kit
    kit.close()


def test_htcondor_image_runs_a_pod_on_the_pool(htcondor_kit: HTCondorKit) -> None:
    image, _ = build("htcondor")
    name = "image-plugin-htcondor"
    work = htcondor_kit.workdir / "container"
    work.mkdir(mode=0o755)
    os.chown(work, 2001, 2001)  # the jobs' uid (condortest): the container runs as it, no chown needed
    # the test's client runs as root; the plugin as 2001 lets only its own uid call unless told
    settings: dict[str, Any] = {**htcondor_kit.base_config(), "ContainerRuntime": "none", "PollInterval": 1,
                                "AllowedClientUids": [0],
                                "InstanceId": f"img-{work.parent.parent.name[-10:]}",
                                "DataRootFolder": str(work / "jobs"), "StateDir": str(work / "state")}
    settings.pop("HTCondorJobUser")
    settings.pop("HTCondorTailCommand")  # podman exec is a host tool; shared mode reads the files
    plugin = PluginProcess(work, settings)
    settings["SidecarPort"] = plugin.port
    (work / "plugin.yaml").write_text(yaml.safe_dump(settings))
    remove_container(name)
    run = subprocess.run(
        ["podman", "run", "-d", "--name", name, "--network", "host", "--user", "2001:2001",
         "-e", "CONDOR_CONFIG=/dev/null", "-v", f"{work / 'plugin.yaml'}:/etc/interlink/plugin.yaml:ro",
         "-v", f"{work}:{work}", image], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ping = plugin.ping()
                break
            except Exception:
                time.sleep(0.3)
        else:
            pytest.fail(f"the container never answered: {remove_container(name)[-3000:]}")
        assert ping["status"] == "ok" and not ping.get("taints"), ping
        body = pod_body("boxed", [container("c", ["sh", "-c", "echo hello from $(id -u)"])])
        job_id = plugin.create(body)["PodJID"]
        assert job_id.endswith(".0"), job_id
        status = plugin.wait_done(body, timeout=90)
        assert exit_codes(status) == {"c": 0}
        assert f"htcondor job {job_id} on node" in states(status)["c"]["terminated"]["message"]
        assert plugin.logs(body, "c").text == "hello from 2001\n"
        assert plugin.delete(body).status_code == 200
    finally:
        plugin.stop()
        logs = remove_container(name)
    assert "Traceback" not in logs, logs[-3000:]
