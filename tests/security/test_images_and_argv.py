"""An image (or image-root) is never an option: attacks on every runtime that puts one in an argv.

A pod author writes `image: "--volume=/:/host"` (or `--privileged`, `--pid=host`, `--cap-add=ALL`)
and the real image in `args[0]`: placed before the image in `podman run`, the first word becomes a
podman option and the container sees the host as uid 0. The same with `image-root` and apptainer
(`--bind=/etc:/...`). The defence: images and image-root are checked when the pod is parsed (422
naming the field), and every runtime ends its options with `--` before the image, so even an image
the check let through is only ever an image.
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
from tests.harness import PluginProcess
from tests.podfactory import BUSYBOX, container, pod_body

pytestmark = pytest.mark.e2e
login_node = login_kit.loginnode  # the login node (apptainer), started by the project's scripts

HOSTILE_IMAGES = ["--volume=/:/host", "--privileged", "--pid=host", "--cap-add=ALL"]
# what the container does when the attack works: print the host's marker file through /host
ESCAPE = ["sh", "-c", "cat /host{marker} 2>/dev/null; grep CapEff /proc/self/status; echo ran"]


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A file only the host has: an escaped container can print it through /host."""
    path = Path("/tmp") / f"il-sec-marker-{uuid.uuid4().hex[:12]}"
    path.write_text("HOST-ROOT-FS-VISIBLE\n")
    yield path
    path.unlink(missing_ok=True)


def attack_pod(image: str, marker: Path) -> dict[str, Any]:
    argv = [BUSYBOX, *(w.format(marker=marker) for w in ESCAPE)]
    return pod_body("escape", [container("c", None, argv, image=image)])


def refused(plugin: PluginProcess, body: dict[str, Any], field: str) -> dict[str, Any]:
    response = plugin.client.post("/create", json=body)
    assert response.status_code == 422, (response.status_code, response.text)
    answer = dict(response.json())
    assert answer.get("field") == field, answer
    return answer


def podman_containers_of(uid: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [name for name in out.split() if uid in name]


@pytest.fixture
def podman_kit(tmp_path: Path, podman_ready: None) -> Iterator[PodmanKit]:
    kit = PodmanKit(tmp_path / "kit", remote=False)
    yield kit
    kit.close()


def test_podman_backend_refuses_images_that_are_podman_options(podman_kit: PodmanKit, marker: Path) -> None:
    """Attack: Podman backend, `image: --volume=/:/host` (and --privileged, --pid=host, --cap-add=ALL)
    with busybox in args[0]: podman read the image as an option and the container saw the host's /.
    Defence: 422 naming spec.containers[0].image; no podman container is ever created."""
    plugin = podman_kit.plugin()
    for image in HOSTILE_IMAGES:
        body = attack_pod(image, marker)
        answer = refused(plugin, body, "spec.containers[0].image")
        assert "option" in answer["error"], answer
        assert podman_containers_of(body["pod"]["metadata"]["uid"]) == []


def test_slurm_runtime_podman_refuses_images_that_are_podman_options(
    plugin_factory: Callable[..., PluginProcess], marker: Path
) -> None:
    """Attack: SLURM with ContainerRuntime podman, the same four images with busybox in args[0]: the
    job's `podman run` took them as options (the host's / seen as uid 0). Defence: 422 naming the
    field, no job submitted."""
    plugin = plugin_factory(runtime="podman")
    for image in HOSTILE_IMAGES:
        body = attack_pod(image, marker)
        refused(plugin, body, "spec.containers[0].image")
        uid = body["pod"]["metadata"]["uid"]
        queue = subprocess.run(["squeue", "-h", "-o", "%k"], capture_output=True, text=True, timeout=30).stdout
        assert uid not in queue
        assert not (Path(plugin.config["DataRootFolder"]) / f"default-{uid}").exists()


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("busybox --privileged", "white space"),
        ("busybox\n--privileged", "control"),
        ("oci-archive:/root/secret.tar", "reference"),
        ("/etc", "reference"),
        ("dir:/", "reference"),
    ],
)
def test_podman_takes_only_references(podman_kit: PodmanKit, image: str, why: str) -> None:
    """Attack: an image podman (root, in the Podman backend) would open as a host path or archive
    (`oci-archive:/root/...`, `dir:/`), or two words in one. Defence: podman takes references only."""
    plugin = podman_kit.plugin()
    answer = refused(plugin, pod_body("img", [container("c", ["true"], image=image)]), "spec.containers[0].image")
    assert why in answer["error"], answer


def _run_logged(argv: list[str], log: Path, timeout: float = 120) -> tuple[int, str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode == 0:
        cid = result.stdout.strip().splitlines()[-1]
        subprocess.run(["podman", "wait", cid], capture_output=True, timeout=timeout)
    text = log.read_text() if log.exists() else ""
    return result.returncode, text + result.stderr


def test_podman_backend_argv_ends_options_before_the_image(tmp_path: Path, podman_ready: None, marker: Path) -> None:
    """Attack (defence in depth): a hostile image that got past the parse-time check, run by the
    Podman backend's own `podman run` argv on real podman. Defence: `--` before the image, so
    podman refuses `--volume=/:/host` as an image and never starts the container."""
    from interlink_plugins.podman.spec import ContainerSpec, PodSpec, run_argv

    pod = f"il-sec-{uuid.uuid4().hex[:10]}"
    subprocess.run(["podman", "pod", "create", f"--name={pod}"], capture_output=True, check=True, timeout=60)
    try:
        for index, image in enumerate(["--volume=/:/host", "--privileged"]):
            spec_c = ContainerSpec(name="c", kind="main", index=0, restart="Never", options=("--pull=never",),
                                   image=image, args=(BUSYBOX, *(w.format(marker=marker) for w in ESCAPE)))
            spec = PodSpec(uid=f"{pod}-{index}", namespace="default", name="escape", containers=(spec_c,),
                           grace_seconds=1)
            log = tmp_path / f"log{index}"
            argv = run_argv(spec, spec_c, pod_id=pod, instance="sec", run=0, backoff=0, log_path=str(log), devices=[])
            rc, text = _run_logged(["podman", *argv], log)
            assert "HOST-ROOT-FS-VISIBLE" not in text and "ran" not in text, text
            assert rc != 0 and "invalid reference format" in text, (rc, text)
    finally:
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", pod], capture_output=True, timeout=120)


def test_slurm_runtime_podman_argv_ends_options_before_the_image(
    tmp_path: Path, podman_ready: None, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (defence in depth): the runtime podman's argv for a hostile image, with the image check
    switched off as if a form slipped through, run on real podman. Defence: `--` before the image."""
    from interlink_plugins.core.model.pod import Container, ContainerResources
    from interlink_plugins.core.runtimes import containers as runtimes

    monkeypatch.setattr(runtimes, "check_podman_image", lambda text, field: None, raising=False)
    job = tmp_path / "job"
    job.mkdir()
    args = (BUSYBOX, *(w.format(marker=marker) for w in ESCAPE))
    c = Container(name="c", kind="main", image="--volume=/:/host", command=None, args=args, env=(), working_dir="",
                  volume_mounts=(), resources=ContainerResources(), image_pull_policy="Never", restart_policy=None,
                  run_as_user=None, run_as_group=None, ports=(), probes={}, lifecycle={})
    ctx = runtimes.RuntimeContext(container=c, mounts=(), env=(), job_dir=str(job), pod_uid=uuid.uuid4().hex[:12],
                                  pod_namespace="default", pod_name="escape", instance="sec")
    spec = runtimes.runtime_for("podman").argv(ctx)
    for path, content in spec.files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    result = subprocess.run(list(spec.argv), capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert "HOST-ROOT-FS-VISIBLE" not in text and "ran" not in result.stdout, text
    assert result.returncode != 0 and "invalid reference format" in text, (result.returncode, text)


# ---------------------------------------------------------------------------------------------
# apptainer on the login node (run under `flock /tmp/il-loginnode.lock`)


@pytest.fixture
def node_plugin(login_node: None, tmp_path: Path) -> Iterator[PluginProcess]:
    """The plugin on this host submitting over SSH as the unprivileged hpcuser (sftp job dirs)."""
    from tests.e2e.test_loginnode import apptainer_config, ssh_config

    workdir = tmp_path / "p"
    workdir.mkdir()
    plugin = PluginProcess(workdir, {**apptainer_config(InstanceId=f"sec-{tmp_path.name[-10:]}"), **ssh_config(),
                                     "DataTransfer": "sftp",
                                     "DataRootFolder": f"/home/hpcuser/il-sec-{uuid.uuid4().hex[:8]}"})
    plugin.start()
    yield plugin
    plugin.stop()


def test_apptainer_image_root_is_never_an_option(node_plugin: PluginProcess) -> None:
    """Attack: `slurm-job.vk.io/image-root: --bind=/etc:/` with `image: x` and the SIF as command[0]:
    the prefixed image `--bind=/etc:/x` became an apptainer option (past the singularity-options
    allow-list and AllowedHostPaths) and the container read the node's /etc at /x. Defence: image-root
    is `scheme://...` or an absolute directory (422 naming the annotation); an absolute directory
    still works."""
    from tests.e2e.test_loginnode import SHARED, SIF

    for key, root in (("slurm-job.vk.io/image-root", "--bind=/etc:/"), ("job.vk.io/image-root", "-B/etc:/")):
        body = pod_body("root", [container("c", [str(SIF), "cat", "/x/hostname"], image="x")],
                        annotations={key: root})
        refused(node_plugin, body, f"metadata.annotations[{key}]")
    good = pod_body("root-ok", [container("c", ["cat", "/etc/passwd"], image=SIF.name)],
                    annotations={"slurm-job.vk.io/image-root": f"{SHARED}/"})
    node_plugin.create(good)
    status = node_plugin.wait_done(good, timeout=120)
    assert status["containers"][0]["state"]["terminated"]["exitCode"] == 0, status
    assert node_plugin.logs(good, "c").text.startswith("root:x:0:0"), node_plugin.logs(good, "c").text


def test_apptainer_refuses_images_that_are_options(node_plugin: PluginProcess) -> None:
    """Attack: `image: --bind=/etc:/x` (or `--writable`, `-B/etc:/x`) with the SIF as command[0] on
    runtime apptainer. Defence: 422 naming spec.containers[0].image."""
    from tests.e2e.test_loginnode import SIF

    for image in ("--bind=/etc:/x", "--writable", "-B/etc:/x"):
        body = pod_body("img", [container("c", [str(SIF), "cat", "/x/hostname"], image=image)])
        refused(node_plugin, body, "spec.containers[0].image")


def test_apptainer_helper_ends_options_before_the_image(login_node: None) -> None:
    """Attack (defence in depth): the job's apptainer.sh given `--bind=/etc:/x` as the image, as if a
    form slipped past the checks, with the SIF as the first program word, run as hpcuser on the real
    apptainer. Defence: `--` before the image: apptainer looks for an image named `--bind=/etc:/x`."""
    from interlink_plugins.core.runtimes.containers import APPTAINER_HELPER_NAME, helper_files
    from tests.e2e.test_loginnode import SHARED, SIF, in_node

    helper = SHARED / f"sec-{uuid.uuid4().hex[:8]}-{APPTAINER_HELPER_NAME}"
    helper.write_text(helper_files()[APPTAINER_HELPER_NAME])
    helper.chmod(0o644)
    try:
        result = in_node("bash", str(helper), "apptainer", "", "", "", "--bind=/etc:/x", "exec", "--no-eval", "--",
                         str(SIF), "cat", "/x/hostname", user="hpcuser", timeout=120)
    finally:
        helper.unlink()
    assert "login01" not in result.stdout, result.stdout
    assert result.returncode != 0 and "--bind=/etc:/x" in result.stderr, result.stderr


def test_enroot_is_refused_at_start(tmp_path: Path) -> None:
    """Attack: enroot's prepare steps went through an eval word by word, putting the pod's image in an
    eval context, and no enroot can be tested here. Defence: the runtime is gone; a config naming it
    stops the plugin at start with the runtimes that exist."""
    plugin = PluginProcess(tmp_path, {"Backend": "slurm", "ContainerRuntime": "enroot"})
    with pytest.raises(RuntimeError) as info:
        plugin.start(timeout=20)
    plugin.stop()
    assert "'enroot' is not supported" in str(info.value)
    assert "apptainer, singularity, podman, none" in str(info.value)
