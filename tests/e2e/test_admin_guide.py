"""docs/site-admin-guide.md: every ```bash block of every section run as written, by the test CLAIMED names.

Site-specific names (paths, hosts, ports) are substituted per test (tests/guidedoc.py), so that runs of
different sections never share a port or a directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink_plugins.core.records.state import SCHEMA_VERSION
from tests.guidedoc import GUIDE, PATH, ROOT, blocks_of, run_block, section_blocks, sections, substitute
from tests.harness import free_port
from tests.podfactory import container, log_request, pod_body, status_pod

pytestmark = pytest.mark.e2e

# section heading -> the test that runs ALL its ```bash blocks ("file" or "file::test"); each test asserts
# the number of blocks it runs, so a block added to a section fails it until the test runs that block too
CLAIMED = {
    "Install and first run (SLURM)": "tests/e2e/test_admin_guide.py::test_every_command_of_the_first_run",
    "HTCondor at a grid site": "tests/e2e/test_admin_guide.py::test_htcondor_grid_site_commands",
    "Podman on a GPU host": "tests/e2e/test_admin_guide.py::test_podman_gpu_host_commands",
    "Upgrade and rollback": "tests/e2e/test_admin_guide.py::test_upgrade_from_schema_1_and_rollback_keep_the_job",
    "Run it in a container": "tests/e2e/test_container_image.py",
    "Day-to-day": "tests/e2e/test_guide_kubernetes.py::test_day_to_day_commands",
    "Run it under systemd": "tests/e2e/test_systemd.py",
}

# the older release the upgrade starts from: the last commit whose state schema is 1
OLD_RELEASE = "1f0427a"  # the last commit with state schema 1
OLD_RELEASE_SOURCE = ROOT / "tests" / "fixtures" / f"release-schema1-{OLD_RELEASE}.tar.gz"


def test_every_section_with_commands_is_claimed_by_a_test() -> None:
    other_shells = re.findall(r"^```(sh|shell|console|zsh)\s*$", GUIDE.read_text(), re.M)
    assert not other_shells, "commands go in ```bash blocks (the only ones the tests run)"
    with_commands = {heading for heading, body in sections().items() if blocks_of(body)}
    assert with_commands, "the guide has no bash blocks at all?"
    unclaimed = sorted(with_commands - set(CLAIMED))
    assert not unclaimed, f"sections whose commands no test runs: {unclaimed} (add them to CLAIMED)"
    for heading in with_commands:
        path, _, name = CLAIMED[heading].partition("::")
        source = (ROOT / path).read_text()
        assert not name or re.search(rf"^def {name}\(", source, re.M), f"{CLAIMED[heading]} does not exist"


def test_section_blocks_reads_only_its_section() -> None:
    text = "intro\n## A\n```bash\necho a\n```\n```yaml\nx: 1\n```\n## B\n```bash\necho b1\n```\ntext\n```bash\necho b2\n```\n"
    assert [blocks_of(body) for body in sections(text).values()] == [["echo a\n"], ["echo b1\n", "echo b2\n"]]
    with pytest.raises(KeyError):
        section_blocks("No such section")


def test_every_command_of_the_first_run(slurm_cluster: dict[str, str]) -> None:
    blocks = section_blocks("Install and first run (SLURM)")
    assert len(blocks) == 4
    env = {"SLURM_CONF": slurm_cluster["SLURM_CONF"]}
    outputs = [run_block(block, {"/path/to/interlink-plugins": str(ROOT)}, env).stdout for block in blocks]
    check, render, ping = outputs[1], outputs[2], outputs[3]
    assert "[ok] backend slurm reachable" in check and "FAIL" not in check
    assert "--export-file=/dev/null" in render and "pod-runner.sh" in render
    answer = json.loads(ping.strip().splitlines()[-1])
    assert answer["status"] == "ok"
    Path("/etc/interlink/plugin-slurm.yaml").unlink()


# ---- HTCondor at a grid site -----------------------------------------------------------------


def _scratch(name: str, mode: int) -> Path:
    base = Path(f"/tmp/il-guide-{name}-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=mode)
    base.chmod(mode)
    return base


def test_htcondor_grid_site_commands(htcondor_pool: dict[str, str]) -> None:
    base = _scratch("htcondor", 0o711)  # under /tmp: the pool's shared filesystem; jobs (uid 2001) traverse
    port = free_port()
    subs = {
        "/path/to/interlink-plugins": str(ROOT),
        "/opt/interlink-plugins": str(base / "venv"),
        "/etc/interlink": str(base / "etc"),
        "/var/lib/interlink-plugin-htcondor": str(base / "state"),
        "/shared/interlink/jobs": str(base / "jobs"),
        "/var/log/interlink-plugin-htcondor.log": str(base / "plugin.log"),
        "/tmp/pod-htcondor.json": str(base / "pod.json"),
        # the central manager is the pool's container; its domain and the identity its jobs run as
        "condor_token_create": f"podman exec {htcondor_pool['name']} condor_token_create",
        "interlink@example.org": "condortest@il-pool",
        "ce01.example.org:9618": htcondor_pool["collector"],
        "example.org": "il-pool",
        "SidecarPort: 4000": f"SidecarPort: {port}",
        "127.0.0.1:4000": f"127.0.0.1:{port}",
    }
    blocks = section_blocks("HTCondor at a grid site")
    assert len(blocks) == 5
    try:
        outputs = [run_block(block, subs).stdout for block in blocks]
        check, render, served = outputs[2], outputs[3], outputs[4]
        assert "[ok] backend htcondor reachable: 8 CPUs, 16000 MiB" in check and "FAIL" not in check, check
        assert "request_cpus = 2\nrequest_memory = 1024\n" in render, render
        assert "accounting_group = group_physics.interlink" in render and "InterLinkPodUID" in render, render
        lines = [line for line in served.splitlines() if line.strip()]
        ping, created, status = json.loads(lines[0]), json.loads(lines[1]), json.loads(lines[2])
        assert ping["status"] == "ok" and ping["resources"]["cpu"] == "8", ping
        assert created["PodJID"].endswith(".0"), created
        assert status[0]["containers"][0]["state"]["terminated"]["exitCode"] == 0, status
        assert lines[3] == "hello from il-htcondor", served
        assert (base / "etc" / "condor.token").stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- Podman on a GPU host --------------------------------------------------------------------

STANDIN_SMI = """#!/bin/sh
# stand-in for the nvidia-smi the NVIDIA CDI spec mounts into a container (no GPU on this machine)
echo "GPU $NVIDIA_VISIBLE_DEVICES: stand-in device (UUID: GPU-il-guide-$NVIDIA_VISIBLE_DEVICES)"
"""


@pytest.fixture
def standin_cdi() -> Iterator[dict[str, Any]]:
    """A STAND-IN for `nvidia-ctk cdi generate`: two fake CDI devices with the edits a GPU spec makes
    (a device node, NVIDIA_VISIBLE_DEVICES, nvidia-smi bound in), under a kind of its own."""
    base = _scratch("podman", 0o755)
    kind = f"il-guide{os.getpid()}.example/gpu"
    smi = base / "nvidia-smi"
    smi.write_text(STANDIN_SMI)
    smi.chmod(0o755)
    nodes = [Path(f"/dev/il-guide-gpu{i}-{os.getpid()}") for i in range(2)]
    for node in nodes:
        if not node.exists():
            subprocess.run(["mknod", str(node), "c", "1", "3"], check=True, timeout=10)
    spec = Path(f"/etc/cdi/il-guide-standin-{os.getpid()}.json")
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"cdiVersion": "0.3.0", "kind": kind, "devices": [
        {"name": str(i), "containerEdits": {
            "deviceNodes": [{"path": str(node)}], "env": [f"NVIDIA_VISIBLE_DEVICES={i}"],
            "mounts": [{"hostPath": str(smi), "containerPath": "/usr/bin/nvidia-smi", "options": ["ro", "bind"]}]}}
        for i, node in enumerate(nodes)]}))
    yield {"base": base, "kind": kind, "spec": spec}
    left = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label=interlink.eu/instance=guide{os.getpid()}"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    if left:  # what a failed run left
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", *left], capture_output=True, timeout=120)
    spec.unlink(missing_ok=True)
    for node in nodes:
        node.unlink(missing_ok=True)
    shutil.rmtree(base, ignore_errors=True)


def test_podman_gpu_host_commands(podman_ready: None, standin_cdi: dict[str, Any]) -> None:
    base, kind = standin_cdi["base"], standin_cdi["kind"]
    port = free_port()
    instance = f"guide{os.getpid()}"
    subs = {
        "/path/to/interlink-plugins": str(ROOT),
        "/opt/interlink-plugins": str(base / "venv"),
        "/etc/interlink": str(base / "etc"),
        "/var/lib/interlink-plugin-podman": str(base / "state"),
        "/var/lib/interlink/jobs": str(base / "jobs"),
        "/var/log/interlink-plugin-podman.log": str(base / "plugin.log"),
        "/tmp/pod-gpu.json": str(base / "pod.json"),
        "nvidia.com/gpu=": f"{kind}=",  # the stand-in's device names; the resource stays nvidia.com/gpu
        "InstanceId: gpu01": f"InstanceId: {instance}",
        "interlink.eu/instance=gpu01": f"interlink.eu/instance={instance}",
        "il-gpu01-": f"il-{instance}-",
        "SidecarPort: 4000": f"SidecarPort: {port}",
        "127.0.0.1:4000": f"127.0.0.1:{port}",
    }
    blocks = section_blocks("Podman on a GPU host")
    assert len(blocks) == 4
    run_block(blocks[0], subs)
    # check fails while the map names devices no spec defines, and says what to run
    config = base / "etc" / "plugin-podman.yaml"
    unknown = subprocess.run(
        ["bash", "-c", substitute(blocks[1], {**subs, "nvidia.com/gpu=1": f"{kind}=7"})],
        capture_output=True, text=True, timeout=120, env={"PATH": PATH, "HOME": "/root"})
    assert unknown.returncode == 1 and f"[FAIL] GpuCdiMap nvidia.com/gpu: {kind}=7 not defined" in unknown.stdout
    assert "nvidia-ctk cdi generate" in unknown.stdout
    check = run_block(blocks[1], subs).stdout
    assert f"[ok] GpuCdiMap nvidia.com/gpu: 2 CDI devices defined ({standin_cdi['spec']})" in check, check
    assert "[ok] backend podman reachable" in check and "GPUs {'nvidia.com/gpu': 2}" in check and "FAIL" not in check
    render = run_block(blocks[2], subs).stdout
    assert '"--device=<1 x nvidia.com/gpu>"' in render and '"--cpus=2"' in render, render
    served = run_block(blocks[3], subs).stdout
    lines = [line for line in served.splitlines() if line.strip()]
    ping, created = json.loads(lines[0]), json.loads(lines[1])
    assert ping["resources"]["accelerators"] == [{"resourceType": "nvidia.com/gpu", "available": "2"}], ping
    assert created["PodUID"] == "7d1e3a90-5b2c-4f0e-8a41-2c9b6e0f3d55"
    assert re.fullmatch(r"GPU ([01]): stand-in device \(UUID: GPU-il-guide-\1\)", lines[2]), served
    holder = lines[3]
    assert holder.startswith(f"il-{instance}-7d1e3a90") and "interlink.eu/gpus:" in holder, served
    assert kind in holder and config.exists()
    left = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label=interlink.eu/instance={instance}"],
                          capture_output=True, text=True, timeout=60)
    assert left.returncode == 0 and left.stdout.strip() == "", "the guide's delete left the pod behind"


# ---- upgrade and rollback ---------------------------------------------------------------------


def _wheel(source: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("interlink_plugins-*.whl")
    return wheel


@pytest.fixture
def upgrade_site(slurm_cluster: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A scratch site (venv, config, state, data root, releases) under /tmp, traversable by `interlink`."""
    base = Path(f"/tmp/il-guide-upgrade-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    old_tree = base / "src-old"
    old_tree.mkdir()
    # the source of that release, kept in the tree (`git archive` of it) so a shallow clone tests the upgrade too
    subprocess.run(["tar", "-xzf", str(OLD_RELEASE_SOURCE), "-C", str(old_tree)], timeout=60, check=True)
    assert "SCHEMA_VERSION = 1\n" in (old_tree / "interlink_plugins/core/state.py").read_text()
    assert f"SCHEMA_VERSION = {SCHEMA_VERSION}\n" in (ROOT / "interlink_plugins/core/records/state.py").read_text()
    old = _wheel(old_tree, base / "releases" / "old")
    _wheel(ROOT, base / "releases" / "new")
    port = free_port()
    subs = {
        "/path/to/interlink-plugins": str(old),  # the first-run section installs the OLD release
        "/opt/interlink-plugins": str(base / "venv"),
        "/etc/interlink": str(base / "etc"),
        "/var/lib/interlink-plugin": str(base / "state"),
        "/srv/interlink/jobs": str(base / "jobs"),
        "/srv/releases": str(base / "releases"),
        "/run/interlink-plugin": str(base / "run"),
        "/var/log/interlink-plugin-slurm.log": str(base / "plugin.log"),
        "/var/backups/interlink-plugin": str(base / "backups"),
        "SidecarPort: 4000": f"SidecarPort: {port}",
        "127.0.0.1:4000": f"127.0.0.1:{port}",
    }
    site = {"base": base, "subs": subs, "env": {"SLURM_CONF": slurm_cluster["SLURM_CONF"]},
            "client": httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)}
    yield site
    site["client"].close()
    pid_file = base / "run" / "slurm.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 15)
    subprocess.run(["scancel", "-u", "interlink"], capture_output=True, timeout=30, env={"PATH": PATH, **site["env"]})
    shutil.rmtree(base, ignore_errors=True)


def _status(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.request("GET", "/status", json=[status_pod(body)])
    assert answer.status_code == 200, answer.text
    items = answer.json()
    assert items, f"the plugin does not know pod {body['pod']['metadata']['uid']}"
    return dict(items[0])


def _wait(client: httpx.Client, body: dict[str, Any], state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = _status(client, body)
        if all(state in c["state"] for c in last["containers"]):
            return last
        time.sleep(0.5)
    raise AssertionError(f"never {state} within {timeout}s: {last}")


def _log(client: httpx.Client, body: dict[str, Any]) -> str:
    answer = client.request("GET", "/getLogs", json=log_request(body))
    assert answer.status_code == 200, answer.text
    return answer.text


def _schemas(verify_output: str) -> set[str]:
    """The schema the current version's `check` reports in its state line."""
    return set(re.findall(r"state \S+/state-\S+\.sqlite: schema (\d+)", verify_output))


def _stored_schemas(state_dir: Path) -> set[str]:
    """The schema in the state files themselves (the old release's `check` does not report it)."""
    found = set()
    for path in state_dir.glob("state-*.sqlite"):
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        found.add(db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
        db.close()
    return found


def test_upgrade_from_schema_1_and_rollback_keep_the_job(upgrade_site: dict[str, Any]) -> None:
    subs, env, client = upgrade_site["subs"], upgrade_site["env"], upgrade_site["client"]
    first_run = section_blocks("Install and first run (SLURM)")
    start, stop_backup, upgrade, verify, rollback = section_blocks("Upgrade and rollback")
    assert "serve" in start and "tar -czf" in stop_backup and "/new/" in upgrade and " check " in verify
    assert "/old/" in rollback and "tar -xzf" in rollback

    # the OLD release, installed and configured by the guide's own first-run commands, serving
    run_block(first_run[0], subs, env)
    assert "[ok] backend slurm reachable" in run_block(first_run[1], subs, env).stdout
    with (upgrade_site["base"] / "etc" / "plugin-slurm.yaml").open("a") as config:
        config.write("AllowedClientUids: [0]\n")  # this test's client runs as root (the old release ignores it)
    run_block(start, subs, env)
    before = run_block(verify, subs, env).stdout
    assert _stored_schemas(upgrade_site["base"] / "state") == {"1"} and not _schemas(before), before
    job = pod_body("survivor", [container("c", ["sh", "-c", "echo before; sleep 75; echo after"])])
    created = client.post("/create", json=job)
    assert created.status_code == 200, created.text
    job_id = created.json()["PodJID"]
    assert _wait(client, job, "running", 60)

    # upgrade exactly as the guide says
    run_block(stop_backup, subs, env)
    assert (upgrade_site["base"] / "backups" / "state.tgz").stat().st_size > 0
    run_block(upgrade, subs, env)
    run_block(start, subs, env)
    after = run_block(verify, subs, env).stdout
    assert _schemas(after) == {str(SCHEMA_VERSION)} and "[ok] backend slurm reachable" in after and "FAIL" not in after, after
    assert _stored_schemas(upgrade_site["base"] / "state") == {str(SCHEMA_VERSION)}
    assert re.search(rf"^{job_id} RUNNING il:{job['pod']['metadata']['uid']}@", after, re.M), after
    _wait(client, job, "running", 30)
    assert "before" in _log(client, job)
    # a pod created under the new version, which the rollback's state does not know
    later = pod_body("later", [container("c", ["sh", "-c", "echo later; sleep 40"])])
    assert client.post("/create", json=later).status_code == 200
    _wait(client, later, "running", 60)

    # rollback
    run_block(rollback, subs, env)
    run_block(start, subs, env)
    back = run_block(verify, subs, env).stdout
    assert _stored_schemas(upgrade_site["base"] / "state") == {"1"} and "[ok] backend slurm reachable" in back, back
    done = _wait(client, job, "terminated", 120)
    assert done["containers"][0]["state"]["terminated"]["exitCode"] == 0, done
    assert _log(client, job).split() == ["before", "after"]
    # adopted again from the scheduler by its comment and pod.json
    assert _wait(client, later, "terminated", 60)["containers"][0]["state"]["terminated"]["exitCode"] == 0
    assert _log(client, later).split() == ["later"]
