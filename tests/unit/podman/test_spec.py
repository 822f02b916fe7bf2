"""What the Podman backend runs for a pod: podman argv, labels, limits, GPUs, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.backends import parse_config
from interlink_plugins.core.commands.local import CommandResult
from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.core.policy.engine import AdminPolicy
from interlink_plugins.core.volumes.mounts import Mount
from interlink_plugins.podman.backend import PodmanBackend
from interlink_plugins.podman.parse import parse_time
from interlink_plugins.podman.spec import (
    HostFacts,
    PodSpec,
    build_pod_spec,
    container_devices,
    pod_create_argv,
    run_argv,
)
from interlink_plugins.podman.states import create_failure_reason, phase_of
from tests.podfactory import container, pod_body

ROOT = HostFacts(rootless=False, cgroup_v2=False)
ROOTLESS_V1 = HostFacts(rootless=True, cgroup_v2=False)
ROOTLESS_V2 = HostFacts(rootless=True, cgroup_v2=True)


def build(body: dict[str, Any], host: HostFacts = ROOT, gpu_map: dict[str, tuple[str, ...]] | None = None,
          mounts: dict[str, tuple[Mount, ...]] | None = None) -> PodSpec:
    pod = parse_create_body(body)
    return build_pod_spec(pod, mounts or {}, grace_cap=60, pull_override=None, host=host, gpu_map=gpu_map or {},
                          job_dir="/jobs/d", instance="i")


def test_run_argv_keeps_every_value_one_word_with_kubernetes_semantics() -> None:
    env = [{"name": "A", "value": "x y $(B) `id`\nz"}, {"name": "B", "value": "bee"}, {"name": "E", "value": ""}]
    body = pod_body("p", [container("c", ["sh", "-c", "echo $(B) $$(B)"], args=["--rm", "$(A)"], env=env,
                                    workingDir="/w d", securityContext={"runAsUser": 7, "runAsGroup": 8},
                                    imagePullPolicy="IfNotPresent")])
    mounts = {"c": (Mount("/jobs/x,y", "/data", read_only=True),)}
    spec = build(body, mounts=mounts)
    words = run_argv(spec, spec.containers[0], pod_id="P", instance="i", run=2, backoff=20, log_path="/l/log",
                     devices=["nvidia.com/gpu=0"])
    assert words[:6] == ["run", "-d", "--pod=P", f"--name=il-i-{spec.uid}-c-2", "--log-driver=k8s-file",
                         "--log-opt=path=/l/log"]
    assert "--label=interlink.eu/run=2" in words and "--label=interlink.eu/backoff=20" in words
    assert "--label=interlink.eu/kind=main" in words and "--device=nvidia.com/gpu=0" in words
    assert "--pull=missing" in words and '--mount=type=bind,"source=/jobs/x,y",destination=/data,ro=true' in words
    # env values never sit in the argv: a private env file, a podman secret for the multi-line value
    secret = f"il-i-{spec.uid}-c-env0"
    assert "--env-file=/jobs/d/c/c/podman.env" in words and f"--secret={secret},type=env,target=A" in words
    assert not any(w.startswith("--env=") or "`id`" in w for w in words[:-1])
    assert dict(spec.private_files) == {"/jobs/d/c/c/podman.env": b"B=bee\nE=\n",
                                        "/jobs/d/c/c/env-secret-0": b"x y $(B) `id`\nz"}
    assert spec.containers[0].secrets == ((secret, "/jobs/d/c/c/env-secret-0"),)
    assert "--workdir=/w d" in words and "--user=7:8" in words
    assert '--entrypoint=["sh", "-c", "echo bee $(B)"]' in words
    assert words[-4:] == ["--", "localhost/busybox:latest", "--rm", "x y $(B) `id`\nz"]
    assert "secrets" in spec.to_json()["containers"][0] and "private_files" not in spec.to_json()
    assert PodSpec.from_json(spec.to_json()).containers[0].secrets == spec.containers[0].secrets


def test_pod_create_argv_labels_hostname_and_published_host_ports() -> None:
    body = pod_body("my-pod.x", [container("c", ["true"], ports=[{"containerPort": 80, "hostPort": 8080},
                                                                 {"containerPort": 53, "protocol": "UDP"}])])
    pod = parse_create_body(body)
    spec = build(body)
    words = pod_create_argv(pod, spec, instance="site a", network="")
    assert words[:5] == ["pod", "create", f"--name=il-site-a-{pod.uid}", f"--infra-name=il-site-a-{pod.uid}-infra",
                         "--hostname=my-pod-x"]
    assert f"--label=interlink.eu/pod-uid={pod.uid}" in words and "--label=interlink.eu/instance=site a" in words
    assert "--label=interlink.eu/grace=2" in words and "--publish=8080:80/tcp" in words
    assert not any(w.startswith("--network") for w in words)
    with pytest.raises(PodSpecError, match=r"spec.containers\[0\].ports\[0\].hostPort"):
        pod_create_argv(pod, spec, instance="i", network="none")


def test_limits_requests_and_the_rootless_cgroup_v1_refusal() -> None:
    resources = {"limits": {"cpu": "1500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}
    body = pod_body("p", [container("ok", ["true"]), container("c", ["true"], resources=resources)])
    words = build(body).containers[1].options
    assert "--cpus=1.5" in words and f"--memory={64 * 2**20}b" in words and "--cpu-shares=256" in words
    assert not any(w.startswith(("--cpus", "--memory")) for w in build(body).containers[0].options)
    with pytest.raises(PodSpecError) as refused:
        build(body, host=ROOTLESS_V1)
    assert refused.value.status == 422 and refused.value.field == "spec.containers[1].resources.limits[cpu]"
    assert "cgroup v1" in refused.value.message
    assert "--memory=67108864b" in build(body, host=ROOTLESS_V2).containers[1].options
    # requests alone are weights, never refused; rootless v1 just cannot set them
    soft = pod_body("p", [container("c", ["true"], resources={"requests": {"cpu": "1", "memory": "1Gi"}})])
    assert not any(w.startswith("--cpu-shares") for w in build(soft, host=ROOTLESS_V1).containers[0].options)


def test_gpus_through_cdi_names_and_refusals() -> None:
    gpu_map = {"nvidia.com/gpu": ("nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=2")}
    body = pod_body(
        "p",
        [container("a", ["true"], resources={"limits": {"nvidia.com/gpu": "2"}}),
         container("b", ["true"], resources={"limits": {"nvidia.com/gpu": "1"}})],
        init_containers=[container("i", ["true"], resources={"limits": {"nvidia.com/gpu": "1"}})],
    )
    spec = build(body, gpu_map=gpu_map)
    assert spec.gpu_needs() == {"nvidia.com/gpu": 3}
    shares = container_devices(spec, {"nvidia.com/gpu": list(gpu_map["nvidia.com/gpu"])})
    assert shares == {"i": ["nvidia.com/gpu=0"], "a": ["nvidia.com/gpu=0", "nvidia.com/gpu=1"],
                      "b": ["nvidia.com/gpu=2"]}
    with pytest.raises(PodSpecError, match=r"resources\[nvidia.com/gpu\].*GpuCdiMap"):
        build(body, gpu_map={})
    with pytest.raises(PodSpecError, match="this host has 2"):
        build(body, gpu_map={"nvidia.com/gpu": ("g0", "g1")})
    fpga = pod_body("p", [container("c", ["true"], resources={"limits": {"xilinx.com/fpga": "1"}})])
    with pytest.raises(PodSpecError, match=r"spec.containers\[0\].resources\[xilinx.com/fpga\]"):
        build(fpga)
    storage = pod_body("p", [container("c", ["true"], resources={"limits": {"ephemeral-storage": "1Gi"}})])
    assert build(storage).gpu_needs() == {}


def test_kinds_restart_policies_and_the_json_round_trip() -> None:
    body = pod_body("p", [container("m", ["true"])], restart_policy="OnFailure",
                    init_containers=[container("side", ["true"], restartPolicy="Always"), container("i", ["true"])],
                    activeDeadlineSeconds=90, terminationGracePeriodSeconds=600)
    spec = build(body)
    assert [(c.name, c.kind, c.restart) for c in spec.containers] == [
        ("side", "sidecar", "Always"), ("i", "init", "OnFailure"), ("m", "main", "OnFailure")]
    assert spec.grace_seconds == 60 and spec.active_deadline == 90
    assert PodSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_states_errors_and_times() -> None:
    assert phase_of("Exited") == "ended" and phase_of("stopping") == "running" and phase_of("created") == "created"
    assert create_failure_reason("Error: localhost/x:1: image not known", True) == "ErrImageNeverPull"
    assert create_failure_reason("Error: initializing source docker://x: pinging", False) == "ErrImagePull"
    assert create_failure_reason("Error: invalid mount", False) == "CreateContainerError"
    assert parse_time("2026-11-25T17:00:45.838793919Z") == pytest.approx(1795626045.838794)
    assert parse_time("0001-01-01T00:00:00Z") is None


class _NoRunner:
    async def run(self, argv: Any, *, timeout: float, stdin: Any = None, env: Any = None) -> CommandResult:
        raise AssertionError(f"no command expected: {argv}")


def test_prepare_writes_the_job_dir_and_refuses_before_writing(tmp_path: Path) -> None:
    config, _ = parse_config({"Backend": "podman", "DataRootFolder": str(tmp_path), "InstanceId": "t"})
    backend = PodmanBackend(config, _NoRunner(), AdminPolicy())
    backend.host = ROOT
    body = pod_body("p", [container("c", ["true"], volumeMounts=[{"name": "v", "mountPath": "/v"}])],
                    volumes=[{"name": "v", "emptyDir": {}}])
    prepared = backend.prepare(parse_create_body(body))
    meta = json.loads((prepared.job_dir / "pod.json").read_text())
    assert meta["main_names"] == ["c"] and meta["podman"]["containers"][0]["name"] == "c"
    assert prepared.submit["argv"][:3] == ["podman", "pod", "create"]
    assert (prepared.job_dir / "emptydir" / "v").is_dir()
    backend.host = ROOTLESS_V1
    limited = pod_body("q", [container("c", ["true"], resources={"limits": {"memory": "1Gi"}})])
    with pytest.raises(PodSpecError):
        backend.prepare(parse_create_body(limited))
    assert not (tmp_path / f"default-{limited['pod']['metadata']['uid']}").exists()
    rendered = backend.prepare(parse_create_body(body), write=False)
    assert "podman-run (first run of each container)" in rendered.files


def test_privileged_and_capabilities_from_the_pod_are_never_granted() -> None:
    """The admin guide's threat model: a pod author cannot get a privileged container on the GPU host."""
    context = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]},
               "allowPrivilegeEscalation": True, "runAsUser": 0}
    body = pod_body("p", [container("c", ["true"], securityContext=context)], hostNetwork=True, hostPID=True,
                    hostIPC=True)
    spec = build(body)
    words = run_argv(spec, spec.containers[0], pod_id="P", instance="i", run=0, backoff=0, log_path="/l/log",
                     devices=[])
    pod_words = pod_create_argv(parse_create_body(body), spec, instance="i", network="")
    joined = " ".join(words + pod_words)
    assert "--user=0" in words  # runAsUser is honoured: root, but in an ordinary (unprivileged) container
    for word in ("--privileged", "--cap-add", "SYS_ADMIN", "--security-opt", "--pid=host", "--ipc=host",
                 "--network=host", "--net=host"):
        assert word not in joined, word


@pytest.mark.parametrize(("host_ip", "word"), [("127.0.0.1", "--publish=127.0.0.1:8080:80/tcp"),
                                               ("::1", "--publish=[::1]:8080:80/tcp")])
def test_host_ip_is_an_address(host_ip: str, word: str) -> None:
    ports = [{"containerPort": 80, "hostPort": 8080, "hostIP": host_ip}]
    body = pod_body("p", [container("c", ["true"], ports=ports)])
    assert word in pod_create_argv(parse_create_body(body), build(body), instance="i", network="")


def test_host_ip_that_is_not_an_address_is_refused() -> None:
    ports = [{"containerPort": 80, "hostPort": 8080, "hostIP": "0.0.0.0:9090:22/tcp,--x"}]
    body = pod_body("p", [container("c", ["true"], ports=ports)])
    with pytest.raises(PodSpecError) as info:
        pod_create_argv(parse_create_body(body), build(body), instance="i", network="")
    assert info.value.field == "spec.containers[0].ports[0].hostIP"
