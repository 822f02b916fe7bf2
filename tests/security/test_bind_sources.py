"""Bind sources are checked when they are bound: attacks that swap a volume path for a symlink between
the pod's creation and a container's start.

An init container that mounts an emptyDir replaces the directory a later container binds with a
subPath by `ln -s / sub`; the runtime follows it when the next container starts and that container
gets the host's `/` read-write (as root with rootful podman). The same with a writable hostPath, and
with a hostPath (under AllowedHostPaths) that someone turns into a symlink to outside the allowed
prefix after the pod was accepted. The defence: right before each container start every component of
each bind source below its root (the job dir, or the allowed host path) is checked without following
a symlink; a symlink keeps the container waiting (CreateContainerConfigError, naming the volume and
subPath) and it never starts. A legitimate init container that recreates the directory still works.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_loginnode as login_kit
from tests.e2e.kits import PodmanKit
from tests.harness import PluginProcess, states
from tests.podfactory import container, pod_body

pytestmark = pytest.mark.e2e
login_node = login_kit.loginnode  # the login node (apptainer), started by the project's scripts

REASON = "CreateContainerConfigError"
SWAP = "rm -rf /vol/sub && ln -s / /vol/sub && echo swapped"


@pytest.fixture
def host_marker() -> Iterator[Path]:
    """Where an escaped container would write on the host (through the bound `/`)."""
    path = Path("/tmp") / f"il-sec-bind-{uuid.uuid4().hex[:12]}"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def podman_kit(tmp_path: Path, podman_ready: None) -> Iterator[PodmanKit]:
    kit = PodmanKit(tmp_path / "kit", remote=False)
    yield kit
    kit.close()


def escape_script(marker: Path) -> str:
    """What the main container does with the host's / at /x: read root-only files, write a marker."""
    return f"head -c 64 /x/etc/shadow; echo pwned > /x{marker} && echo WROTE-HOST; ls /x"


def subpath_attack_pod(marker: Path, *, swap: str = SWAP) -> dict[str, Any]:
    init = container("plant", ["sh", "-c", swap], volumeMounts=[{"name": "scratch", "mountPath": "/vol"}])
    main = container("victim", ["sh", "-c", escape_script(marker)],
                     volumeMounts=[{"name": "scratch", "mountPath": "/x", "subPath": "sub"}])
    return pod_body("subpath-swap", [main], init_containers=[init], volumes=[{"name": "scratch", "emptyDir": {}}])


def refused_waiting(plugin: PluginProcess, body: dict[str, Any], name: str, timeout: float = 90) -> dict[str, Any]:
    """The container's state once it waits with the refusal reason (it must never have started)."""

    def waiting(status: dict[str, Any]) -> bool:
        state = states(status).get(name, {})
        assert "running" not in state and "terminated" not in state, status
        return bool(state.get("waiting", {}).get("reason") == REASON)

    status = plugin.wait_status(body, waiting, timeout)
    return dict(states(status)[name]["waiting"])


def assert_not_escaped(plugin: PluginProcess, body: dict[str, Any], marker: Path) -> None:
    assert not marker.exists(), f"the container wrote {marker} on the host"
    log = plugin.logs(body, "victim")
    assert "WROTE-HOST" not in log.text and "root:" not in log.text, log.text


# ---------------------------------------------------------------------------------------------
# Podman backend (rootful podman, the plugin as root)


def test_podman_emptydir_subpath_swapped_for_a_symlink_is_not_bound(
    podman_kit: PodmanKit, host_marker: Path
) -> None:
    """Attack: the init container replaces the emptyDir's `sub` by `ln -s / sub`; the main container
    mounts the emptyDir with subPath `sub` and writes through it: today it got the host's / read-write
    as root. Defence: the main container waits with CreateContainerConfigError naming the volume and
    subPath, never starts, nothing reaches the host."""
    plugin = podman_kit.plugin()
    body = subpath_attack_pod(host_marker)
    plugin.create(body)
    waiting = refused_waiting(plugin, body, "victim")
    assert "volume 'scratch' subPath 'sub'" in waiting["message"], waiting
    assert "symlink" in waiting["message"] and "refused" in waiting["message"], waiting
    assert states(plugin.status(body) or {})["plant"]["terminated"]["exitCode"] == 0
    assert_not_escaped(plugin, body, host_marker)
    assert "not started" in plugin.log_path.read_text()


def test_podman_init_container_may_recreate_the_subpath_directory(podman_kit: PodmanKit, host_marker: Path) -> None:
    """Not an attack: an init container that removes and recreates the subPath directory (a new inode)
    and fills it; the main container binds it and reads the file (no false refusal)."""
    plugin = podman_kit.plugin()
    body = subpath_attack_pod(host_marker, swap="rm -rf /vol/sub && mkdir /vol/sub && echo fresh > /vol/sub/f")
    body["pod"]["spec"]["containers"][0]["command"] = ["sh", "-c", "cat /x/f"]
    plugin.create(body)
    status = plugin.wait_done(body, timeout=90)
    assert states(status)["victim"]["terminated"]["exitCode"] == 0, status
    assert plugin.logs(body, "victim").text == "fresh\n"


def hostpath_pod(host: Path, marker: Path, *, swap: str, sub_path: str | None) -> dict[str, Any]:
    init = container("plant", ["sh", "-c", swap], volumeMounts=[{"name": "host", "mountPath": "/vol"}])
    mount: dict[str, Any] = {"name": "host", "mountPath": "/x"}
    if sub_path:
        mount["subPath"] = sub_path
    main = container("victim", ["sh", "-c", escape_script(marker)], volumeMounts=[mount])
    volumes = [{"name": "host", "hostPath": {"path": str(host), "type": "Directory"}}]
    return pod_body("hostpath-swap", [main], init_containers=[init], volumes=volumes)


def test_podman_hostpath_subpath_swapped_for_a_symlink_is_not_bound(
    podman_kit: PodmanKit, tmp_path: Path, host_marker: Path
) -> None:
    """Attack: a writable hostPath under AllowedHostPaths; the init container replaces its `sub` (which
    existed when the pod was accepted) by `ln -s / sub`; the main container binds subPath `sub`.
    Defence: CreateContainerConfigError naming the volume and subPath; nothing reaches the host."""
    allowed = tmp_path / "allowed"
    (allowed / "data" / "sub").mkdir(parents=True)
    plugin = podman_kit.plugin(AllowedHostPaths=[str(allowed)])
    body = hostpath_pod(allowed / "data", host_marker, swap=SWAP, sub_path="sub")
    plugin.create(body)
    waiting = refused_waiting(plugin, body, "victim")
    assert "volume 'host' subPath 'sub'" in waiting["message"] and "symlink" in waiting["message"], waiting
    assert_not_escaped(plugin, body, host_marker)


def test_podman_hostpath_turned_into_a_symlink_out_of_the_allowed_prefix(
    podman_kit: PodmanKit, tmp_path: Path, host_marker: Path
) -> None:
    """Attack: a hostPath `allowed/late` (a directory when the pod is accepted) becomes a symlink to /
    (outside the AllowedHostPaths prefix) while the init container runs, e.g. by another local user who
    can write in the allowed prefix. Defence: the main container is refused, not bound to /. A hostPath
    that already is such a symlink is refused at create (403 naming the field)."""
    allowed = tmp_path / "allowed"
    late = allowed / "late"
    late.mkdir(parents=True)
    (allowed / "link").symlink_to("/")
    plugin = podman_kit.plugin(AllowedHostPaths=[str(allowed)])
    early = hostpath_pod(allowed / "link", host_marker, swap="true", sub_path=None)
    response = plugin.client.post("/create", json=early)
    assert response.status_code == 403 and response.json().get("field") == "spec.volumes[0].hostPath.path", \
        response.text
    body = hostpath_pod(late, host_marker, swap="sleep 6", sub_path=None)
    body["pod"]["spec"]["initContainers"][0]["volumeMounts"] = []
    plugin.create(body)
    plugin.wait_status(body, lambda s: "running" in states(s)["plant"], timeout=60)
    late.rename(allowed / "late.old")
    late.symlink_to("/")
    waiting = refused_waiting(plugin, body, "victim")
    assert "volume 'host'" in waiting["message"] and "symlink" in waiting["message"], waiting
    assert_not_escaped(plugin, body, host_marker)


# ---------------------------------------------------------------------------------------------
# SLURM (local cluster): the pod runner's check before each start, runtimes podman and none


@pytest.mark.parametrize("runtime", ["podman", "none"])
def test_slurm_emptydir_subpath_swapped_for_a_symlink_is_not_bound(
    plugin_factory: Callable[..., PluginProcess], runtime: str, host_marker: Path
) -> None:
    """Attack: the same swap inside a SLURM job (root jobs on this cluster): the runner's runtime
    (podman run --mount, bwrap --bind) would follow `sub` -> / when the main container starts.
    Defence: the runner's check_binds refuses it: CreateContainerConfigError naming the volume and
    subPath, the main container never runs, nothing reaches the host."""
    plugin = plugin_factory(runtime=runtime)
    body = subpath_attack_pod(host_marker)
    plugin.create(body)
    waiting = refused_waiting(plugin, body, "victim", timeout=120)
    assert "volume 'scratch' subPath 'sub'" in waiting["message"], waiting
    assert "symlink" in waiting["message"] and "refused" in waiting["message"], waiting
    assert_not_escaped(plugin, body, host_marker)
    plugin.delete(body)


@pytest.mark.parametrize("runtime", ["podman", "none"])
def test_slurm_hostpath_subpath_swapped_for_a_symlink_is_not_bound(
    plugin_factory: Callable[..., PluginProcess], runtime: str, tmp_path: Path, host_marker: Path
) -> None:
    """Attack: a writable hostPath under AllowedHostPaths in a SLURM job; the init container replaces
    its `sub` by `ln -s / sub` and the main container binds subPath `sub`. Defence: the runner refuses
    it (CreateContainerConfigError naming the volume and subPath); nothing reaches the host."""
    allowed = tmp_path / "allowed"
    (allowed / "data" / "sub").mkdir(parents=True)
    plugin = plugin_factory(runtime=runtime, AllowedHostPaths=[str(allowed)])
    body = hostpath_pod(allowed / "data", host_marker, swap=SWAP, sub_path="sub")
    plugin.create(body)
    waiting = refused_waiting(plugin, body, "victim", timeout=120)
    assert "volume 'host' subPath 'sub'" in waiting["message"] and "symlink" in waiting["message"], waiting
    assert_not_escaped(plugin, body, host_marker)
    assert (allowed / "data" / "sub").is_symlink()  # the swap did happen
    plugin.delete(body)

# ---------------------------------------------------------------------------------------------
# apptainer on the login node (run under `flock /tmp/il-loginnode.lock`): jobs run as hpcuser


@pytest.fixture
def node_plugin(login_node: None, tmp_path: Path) -> Iterator[PluginProcess]:
    """The plugin on this host submitting over SSH as the unprivileged hpcuser (sftp job dirs)."""
    from tests.e2e.test_loginnode import apptainer_config, ssh_config

    workdir = tmp_path / "p"
    workdir.mkdir()
    plugin = PluginProcess(workdir, {**apptainer_config(InstanceId=f"sb-{tmp_path.name[-10:]}"), **ssh_config(),
                                     "DataTransfer": "sftp",
                                     "DataRootFolder": f"/home/hpcuser/il-sb-{uuid.uuid4().hex[:8]}"})
    plugin.start()
    yield plugin
    plugin.stop()


def test_apptainer_emptydir_subpath_swapped_for_a_symlink_is_not_bound(node_plugin: PluginProcess) -> None:
    """Attack: runtime apptainer in a SLURM job on the login node (as hpcuser): the init container
    replaces `sub` by `ln -s / sub`, the main container's `--bind <emptydir>/sub:/x` would bind the
    node's / and write to its /tmp. Defence: the runner refuses the bind: CreateContainerConfigError
    naming the volume and subPath; the main container never runs; nothing is written on the node."""
    from tests.e2e.test_loginnode import in_node

    marker = Path("/tmp") / f"il-sec-bind-{uuid.uuid4().hex[:12]}"
    body = subpath_attack_pod(marker)
    node_plugin.create(body)
    try:
        waiting = refused_waiting(node_plugin, body, "victim", timeout=180)
        assert "volume 'scratch' subPath 'sub'" in waiting["message"], waiting
        assert "symlink" in waiting["message"] and "refused" in waiting["message"], waiting
        assert in_node("test", "-e", str(marker)).returncode != 0, "the container wrote on the login node"
        assert "WROTE-HOST" not in node_plugin.logs(body, "victim").text
    finally:
        node_plugin.delete(body)
        in_node("rm", "-f", str(marker))


# ---------------------------------------------------------------------------------------------
# the race: a container running beside the one that starts swaps the directory after the check


def test_podman_pinned_source_wins_the_race_against_a_concurrent_swap(tmp_path: Path, podman_ready: None) -> None:
    """Attack: a sidecar (running beside the container that starts) swaps `sub` for `ln -s / sub` in the
    window between the check and podman's mount; placed there deterministically: the swap happens
    right after the Podman backend's start step checked the source. Defence (rootful plugin): the
    checked fd is bind-mounted on a private pin and podman binds the pin: the container sees the
    checked directory, not the host's /. Control: the same podman run with the plain path shows /.
    The pin is gone (unmounted, removed) after the start."""
    import asyncio

    from interlink_plugins.core.runtimes.containers import _csv_field
    from interlink_plugins.core.volumes.bindcheck import BindSource
    from interlink_plugins.podman.bindcheck import check_binds
    from interlink_plugins.podman.spec import ContainerSpec
    from tests.podfactory import BUSYBOX

    root = tmp_path / "job"
    sub = root / "emptydir" / "vol" / "sub"
    sub.mkdir(parents=True)
    (sub / "inside-the-volume").write_text("x")
    mount = "--mount=" + ",".join(_csv_field(f) for f in ("type=bind", f"source={sub}", "destination=/x"))
    spec = ContainerSpec(name="c", kind="main", index=0, restart="Never", options=(mount,), image=BUSYBOX,
                         args=("ls", "/x"), binds=(BindSource(str(root), str(sub), "volume 'vol' subPath 'sub'"),))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pin_dir = tmp_path / "pins"
    pins = asyncio.run(check_binds({}, "pod", spec, 0, run_dir, pin_dir=pin_dir, pin_key="uid"))
    assert pins is not None and list(pins.moved) == [str(sub)]
    sub.rename(sub.with_name("sub.real"))
    sub.symlink_to("/")  # the concurrent swap, after the check
    try:
        pinned = subprocess.run(["podman", *pins.argv(["run", "--rm", "--pull=never", *spec.options, "--", BUSYBOX,
                                                       "ls", "/x"])], capture_output=True, text=True, timeout=120)
    finally:
        asyncio.run(pins.release())
    assert pinned.returncode == 0 and pinned.stdout.split() == ["inside-the-volume"], pinned
    plain = subprocess.run(["podman", "run", "--rm", "--pull=never", *spec.options, "--", BUSYBOX, "ls", "/x"],
                           capture_output=True, text=True, timeout=120)
    assert "etc" in plain.stdout.split(), plain  # the race is real: the path alone binds the host's /
    assert list(pin_dir.iterdir()) == []
    assert str(pin_dir) not in Path("/proc/self/mountinfo").read_text()
