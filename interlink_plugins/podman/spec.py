"""A pod turned into what the Podman backend runs: one podman pod, one ``podman run`` per container run.

Everything that does not change between runs of a container (image, env, mounts, limits, user,
entrypoint) is computed once here and kept in ``pod.json`` in the job directory, so the plugin can
start init containers, main containers and restarts later, also after a restart that lost its
state. What changes per run (name, run number, back-off, log path, GPUs of the pod) is added by
:func:`run_argv`. Every value is one argv word: nothing reaches a shell.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from interlink_plugins.core.errors import ConfigError, PodSpecError
from interlink_plugins.core.model.expand import env_map
from interlink_plugins.core.model.imageref import check_podman_image
from interlink_plugins.core.model.pod import GPU_RESOURCES, Container, Pod
from interlink_plugins.core.model.quantity import cpu_millicores, memory_bytes
from interlink_plugins.core.podrunner.jobdir import _restart_policy
from interlink_plugins.core.podrunner.plan import ProbeRun
from interlink_plugins.core.runtimes.containers import (
    PODMAN_ENV_FILE_NAME,
    _csv_field,
    _sorted_mounts,
    podman_pull_policy,
    process_argv,
)
from interlink_plugins.core.runtimes.podmanenv import podman_env
from interlink_plugins.core.runtimes.probes import declared_probes, parse_handler
from interlink_plugins.core.volumes.bindcheck import BindSource, bind_sources
from interlink_plugins.core.volumes.mounts import Mount

SPEC_VERSION = 1
LABEL_PREFIX = "interlink.eu/"
L_BACKEND = LABEL_PREFIX + "backend"
L_UID = LABEL_PREFIX + "pod-uid"
L_NAMESPACE = LABEL_PREFIX + "namespace"
L_NAME = LABEL_PREFIX + "name"
L_INSTANCE = LABEL_PREFIX + "instance"
L_GRACE = LABEL_PREFIX + "grace"
L_DEADLINE = LABEL_PREFIX + "active-deadline"
L_GPUS = LABEL_PREFIX + "gpus"
L_CONTAINER = LABEL_PREFIX + "container"
L_KIND = LABEL_PREFIX + "kind"
L_INDEX = LABEL_PREFIX + "index"
L_RUN = LABEL_PREFIX + "run"
L_BACKOFF = LABEL_PREFIX + "backoff"
BACKEND_NAME = "podman"

Kind = Literal["init", "sidecar", "main"]
Restart = Literal["Never", "OnFailure", "Always"]
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]")
# networks where a pod has its own network namespace with an address to publish from
_NO_PUBLISH_NETWORKS = ("host", "none", "ns:", "container:")


@dataclass(frozen=True)
class HostFacts:
    """What the host can enforce: rootless podman on cgroup v1 ignores every resource limit."""

    rootless: bool
    cgroup_v2: bool

    @property
    def limits_enforced(self) -> bool:
        return not self.rootless or self.cgroup_v2


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    kind: Kind
    index: int  # position in spec.initContainers / spec.containers
    restart: Restart
    options: tuple[str, ...]  # podman run options that are the same for every run
    image: str
    args: tuple[str, ...]
    gpus: Mapping[str, int] = field(default_factory=dict)  # GPU resource -> count (CDI devices)
    # (podman secret name, private file with the value): env values the --env-file cannot carry
    secrets: tuple[tuple[str, str], ...] = ()
    # bind sources re-checked right before each start of this container (core/volumes/bindcheck.py)
    binds: tuple[BindSource, ...] = ()
    # probes (argv: core.runtimes.probes.parse_handler's (action, *words)) and lifecycle hooks, run by the plugin
    probes: tuple[ProbeRun, ...] = ()
    post_start: tuple[str, ...] = ()
    pre_stop: tuple[str, ...] = ()

    @property
    def is_init(self) -> bool:
        return self.kind != "main"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "index": self.index, "restart": self.restart,
            "options": list(self.options), "image": self.image, "args": list(self.args), "gpus": dict(self.gpus),
            "secrets": [list(pair) for pair in self.secrets], "binds": [b.to_json() for b in self.binds],
            "probes": [dataclasses.asdict(p) for p in self.probes], "post_start": list(self.post_start),
            "pre_stop": list(self.pre_stop),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            index=int(data["index"]),
            restart=data["restart"],
            options=tuple(str(w) for w in data["options"]),
            image=str(data["image"]),
            args=tuple(str(w) for w in data["args"]),
            gpus={str(k): int(v) for k, v in dict(data.get("gpus") or {}).items()},
            secrets=tuple((str(name), str(path)) for name, path in data.get("secrets") or ()),
            binds=tuple(BindSource.from_json(b) for b in data.get("binds") or ()),
            probes=tuple(ProbeRun(**{**p, "argv": tuple(p["argv"])}) for p in data.get("probes") or ()),
            post_start=tuple(str(w) for w in data.get("post_start") or ()),
            pre_stop=tuple(str(w) for w in data.get("pre_stop") or ()),
        )


@dataclass(frozen=True)
class PodSpec:
    uid: str
    namespace: str
    name: str
    containers: tuple[ContainerSpec, ...]  # init containers (sidecars included) in order, then main containers
    grace_seconds: int
    active_deadline: int | None = None
    # (path, content) of the private env files and secret values: written 0600, never in pod.json
    private_files: tuple[tuple[str, bytes], ...] = field(default=(), compare=False, repr=False)

    @property
    def init(self) -> tuple[ContainerSpec, ...]:
        return tuple(c for c in self.containers if c.is_init)

    @property
    def main(self) -> tuple[ContainerSpec, ...]:
        return tuple(c for c in self.containers if not c.is_init)

    def gpu_needs(self) -> dict[str, int]:
        """GPUs the pod holds per resource: main containers and sidecars together, or the largest
        plain init container (init containers run one at a time, before the others)."""
        needs: dict[str, int] = {}
        for kind in {k for c in self.containers for k in c.gpus}:
            together = sum(c.gpus.get(kind, 0) for c in self.containers if c.kind != "init")
            alone = max((c.gpus.get(kind, 0) for c in self.containers if c.kind == "init"), default=0)
            if max(together, alone):
                needs[kind] = max(together, alone)
        return needs

    def container(self, name: str) -> ContainerSpec | None:
        return next((c for c in self.containers if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "grace_seconds": self.grace_seconds,
            "active_deadline": self.active_deadline,
            "containers": [c.to_json() for c in self.containers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodSpec:
        if int(data.get("version", 0)) != SPEC_VERSION:
            raise ValueError(f"pod spec version {data.get('version')!r} is not {SPEC_VERSION}")
        deadline = data.get("active_deadline")
        return cls(
            uid=str(data["uid"]),
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            containers=tuple(ContainerSpec.from_json(c) for c in data["containers"]),
            grace_seconds=int(data["grace_seconds"]),
            active_deadline=int(deadline) if deadline is not None else None,
        )


# --------------------------------------------------------------------------------------- names


def safe_instance(instance: str) -> str:
    return _NAME_BAD_CHARS.sub("-", instance) or "default"


def pod_name(instance: str, uid: str) -> str:
    """``il-<instance>-<uid>``: unique per plugin instance and pod."""
    return f"il-{safe_instance(instance)}-{uid}"


def container_name(instance: str, uid: str, container: str, run: int) -> str:
    """One podman container per run: a restart is a new container, the previous one keeps its log."""
    return f"{pod_name(instance, uid)}-{container}-{run}"


def hostname(pod_name_text: str) -> str:
    """The pod's hostname (as the kubelet sets it): its name, as a DNS label."""
    text = _HOSTNAME_BAD.sub("-", pod_name_text.lower())[:63].strip("-")
    return text or "pod"


def pod_labels(instance: str, uid: str, namespace: str, name: str) -> dict[str, str]:
    return {
        L_BACKEND: BACKEND_NAME,
        L_UID: uid,
        L_NAMESPACE: namespace,
        L_NAME: name,
        L_INSTANCE: instance,
    }


def label_words(labels: Mapping[str, str]) -> list[str]:
    return [f"--label={key}={value}" for key, value in labels.items()]


# --------------------------------------------------------------------------------------- building


def _limits(pod: Pod, container: Container, position: int) -> Mapping[str, Any]:
    key = "initContainers" if container.kind == "init" else "containers"
    spec = pod.raw.get("spec")
    items = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(items, list) or position >= len(items) or not isinstance(items[position], dict):
        return {}
    resources = items[position].get("resources")
    return resources if isinstance(resources, dict) else {}


def _resource_words(
    pod: Pod, container: Container, position: int, host: HostFacts
) -> list[str]:
    """--cpus/--memory from limits (enforced), --cpu-shares from the cpu request (the kubelet's weights)."""
    resources = _limits(pod, container, position)
    raw_limits, raw_requests = resources.get("limits"), resources.get("requests")
    limits: Mapping[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    requests: Mapping[str, Any] = raw_requests if isinstance(raw_requests, dict) else {}
    base = f"{container.field_path}[{position}].resources"
    words: list[str] = []
    for name in ("cpu", "memory"):
        if name in limits and not host.limits_enforced:
            raise PodSpecError(
                f"{base}.limits[{name}]",
                "cannot be enforced on this host: rootless podman on cgroup v1 ignores resource limits "
                "(run the plugin as root, or on a cgroup v2 host)",
            )
    if "cpu" in limits:
        millis = cpu_millicores(limits["cpu"])
        if millis:
            words.append(f"--cpus={millis / 1000:g}")
    if "memory" in limits:
        amount = memory_bytes(limits["memory"])
        if amount:
            words += [f"--memory={amount}b", f"--memory-swap={amount}b"]  # no swap, as the kubelet
    if "cpu" in requests and host.limits_enforced:
        millis = cpu_millicores(requests["cpu"])
        if millis:
            words.append(f"--cpu-shares={max(2, millis * 1024 // 1000)}")
    return words


def _field(container: Container, position: int, suffix: str) -> str:
    return f"{container.field_path}[{position}].{suffix}"


@dataclass(frozen=True)
class ContainerEnv:
    """How a container's env reaches podman: never as a value in an argv."""

    options: tuple[str, ...]  # --env-file and --secret words
    secrets: tuple[tuple[str, str], ...]  # (secret name, value file)
    files: tuple[tuple[str, bytes], ...]  # private files to write


def container_env(
    container: Container, position: int, env: Mapping[str, str], *, job_dir: str, secret_base: str
) -> ContainerEnv:
    """A private --env-file, and podman secrets (type env) for the values that file cannot carry."""
    split = podman_env(env, secret_base, lambda name: _env_field(container, position, name))
    directory = f"{job_dir}/c/{container.name}"
    env_file = f"{directory}/{PODMAN_ENV_FILE_NAME}"
    options = [f"--env-file={env_file}"]
    files: list[tuple[str, bytes]] = [(env_file, split.env_file)]
    secrets: list[tuple[str, str]] = []
    for index, (name, variable, value) in enumerate(split.secrets):
        path = f"{directory}/env-secret-{index}"
        files.append((path, value))
        secrets.append((name, path))
        options.append(f"--secret={name},type=env,target={variable}")
    return ContainerEnv(tuple(options), tuple(secrets), tuple(files))


def _env_field(container: Container, position: int, name: str) -> str:
    for index, var in enumerate(container.env):
        if var.name == name:
            return _field(container, position, f"env[{index}]")
    return _field(container, position, "env")


def container_options(
    pod: Pod,
    container: Container,
    position: int,
    mounts: Sequence[Mount],
    *,
    pull_override: str | None,
    host: HostFacts,
    env_words: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """(podman run options, [image, *args]) of one container, Kubernetes semantics throughout.

    ``env_words`` carry the env (:func:`container_env`): values never sit in these options."""
    check_podman_image(container.image, _field(container, position, "image"))
    words = [f"--pull={podman_pull_policy(container.image_pull_policy, pull_override)}"]
    for mount in _sorted_mounts(mounts):
        if not mount.target.startswith("/") or mount.target.rstrip("/") == "":
            raise PodSpecError(_field(container, position, "volumeMounts"), f"mount path {mount.target!r} is invalid")
        spec = ["type=bind", f"source={mount.source}", f"destination={mount.target}"]
        if mount.read_only:
            spec.append("ro=true")
        words.append("--mount=" + ",".join(_csv_field(f) for f in spec))
    env = env_map(container.env)
    words += env_words
    if container.working_dir:
        if not container.working_dir.startswith("/"):
            raise PodSpecError(_field(container, position, "workingDir"), "must be an absolute path")
        words.append(f"--workdir={container.working_dir}")
    if container.run_as_user is not None:
        group = f":{container.run_as_group}" if container.run_as_group is not None else ""
        words.append(f"--user={container.run_as_user}{group}")
    words += _resource_words(pod, container, position, host)
    command, args = process_argv(container, env)
    if command:
        # a JSON array: podman splits nothing, every element stays one argv word
        words.append("--entrypoint=" + json.dumps(command))
    return words, [container.image, *(args or [])]


_IGNORED_RESOURCES = ("ephemeral-storage", "storage", "pods")


def check_gpus(pod: Pod, gpu_map: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    """GPUs per container and resource (served as CDI devices from GpuCdiMap). A GPU resource without
    devices, or an extended resource this host cannot provide, is a 422 naming the field."""
    counts: dict[str, dict[str, int]] = {}
    for group in (pod.init_containers, pod.containers):
        for position, container in enumerate(group):
            mine: dict[str, int] = {}
            for kind in sorted(container.resources.extended):
                count = container.resources.extended[kind]
                if not count or kind in _IGNORED_RESOURCES or kind.startswith("hugepages-"):
                    continue
                field_path = f"{container.field_path}[{position}].resources[{kind}]"
                if not gpu_map.get(kind):
                    what = "no CDI devices are configured for" if kind in GPU_RESOURCES else "this host cannot provide"
                    raise PodSpecError(field_path, f"{what} {kind!r} (GpuCdiMap in the plugin config)")
                mine[kind] = count
            counts[container.name] = mine
    return counts


def lifecycle_of(pod: Pod, container: Container, position: int) -> dict[str, Any]:
    """The container's probes and postStart/preStop hooks, validated (the plugin runs them, see
    podman/probes.py and podman/hooks.py). A plain init container takes none (the API server's rule)."""
    path = f"{container.field_path}[{position}]"
    hooks = {key: container.lifecycle.get(key) for key in ("postStart", "preStop")}
    if container.kind == "init" and not container.is_sidecar:
        for key in container.probes:
            raise PodSpecError(f"{path}.{key}", "must not be set for init containers")
        for key, hook in hooks.items():
            if hook:
                raise PodSpecError(f"{path}.lifecycle.{key}", "must not be set for init containers")
    words: dict[str, tuple[str, ...]] = {}
    for key, hook in hooks.items():
        if not hook:
            continue
        if not isinstance(hook, dict):
            raise PodSpecError(f"{path}.lifecycle.{key}", "must be an object")
        action, args = parse_handler(hook, field=f"{path}.lifecycle.{key}", pod=pod, container=container, hook=True)
        words[key] = (action, *args)
    return {
        "probes": declared_probes(pod, container, field=path),
        "post_start": words.get("postStart", ()),
        "pre_stop": words.get("preStop", ()),
    }


def build_pod_spec(
    pod: Pod,
    mounts: Mapping[str, Sequence[Mount]],
    *,
    grace_cap: float,
    pull_override: str | None,
    host: HostFacts,
    gpu_map: Mapping[str, Sequence[str]],
    job_dir: str = "",
    instance: str = "",
) -> PodSpec:
    """Validate the pod for podman and build its spec (PodSpecError naming the field otherwise)."""
    gpus = check_gpus(pod, gpu_map)
    specs: list[ContainerSpec] = []
    private_files: list[tuple[str, bytes]] = []
    for group in (pod.init_containers, pod.containers):
        for position, container in enumerate(group):
            env = container_env(container, position, env_map(container.env), job_dir=job_dir,
                                secret_base=f"{pod_name(instance, pod.uid)}-{container.name}")
            private_files += env.files
            specs.append(_container_spec(pod, container, position, mounts.get(container.name, ()), env,
                                         gpus=gpus.get(container.name, {}), pull_override=pull_override, host=host))
    spec = PodSpec(
        uid=pod.uid,
        namespace=pod.namespace,
        name=pod.name,
        containers=tuple(specs),
        grace_seconds=int(min(pod.termination_grace_seconds, grace_cap)),
        active_deadline=pod.active_deadline_seconds,
        private_files=tuple(private_files),
    )
    _check_gpu_counts(spec, gpu_map)
    return spec


def _container_spec(
    pod: Pod,
    container: Container,
    position: int,
    mounts: Sequence[Mount],
    env: ContainerEnv,
    *,
    gpus: dict[str, int],
    pull_override: str | None,
    host: HostFacts,
) -> ContainerSpec:
    """One container's spec: its podman options, image and arguments, GPUs, secrets, binds and lifecycle."""
    try:
        options, image_args = container_options(
            pod, container, position, mounts, pull_override=pull_override, host=host, env_words=env.options
        )
    except (PodSpecError, ConfigError):
        raise
    except ValueError as exc:
        raise PodSpecError(_field(container, position, "imagePullPolicy"), str(exc)) from exc
    kind: Kind = "main"
    if container.kind == "init":
        kind = "sidecar" if container.is_sidecar else "init"
    return ContainerSpec(
        name=container.name,
        kind=kind,
        index=position,
        restart=_restart_policy(pod, container),
        options=tuple(options),
        image=image_args[0],
        args=tuple(image_args[1:]),
        gpus=gpus,
        secrets=env.secrets,
        binds=bind_sources(mounts),
        **lifecycle_of(pod, container, position),
    )


def _check_gpu_counts(spec: PodSpec, gpu_map: Mapping[str, Sequence[str]]) -> None:
    """The pod needs no more GPUs of a kind than the host has (GpuCdiMap)."""
    for resource, count in spec.gpu_needs().items():
        if count > len(gpu_map.get(resource, ())):
            raise PodSpecError(
                f"spec.containers[*].resources[{resource}]",
                f"the pod needs {count} {resource}; this host has {len(gpu_map.get(resource, ()))} (GpuCdiMap)",
            )


def publish_words(pod: Pod, network: str) -> list[str]:
    """hostPort -> ``--publish`` on the pod (containerPort alone is reachable at the pod's address)."""
    words: list[str] = []
    spec = pod.raw.get("spec")
    if not isinstance(spec, dict):
        return words
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        if not isinstance(items, list):
            continue
        for c_index, item in enumerate(items):
            ports = item.get("ports") if isinstance(item, dict) else None
            if not isinstance(ports, list):
                continue
            for p_index, port in enumerate(ports):
                if not isinstance(port, dict) or not port.get("hostPort"):
                    continue
                path = f"spec.{key}[{c_index}].ports[{p_index}]"
                host_port, container_port = port.get("hostPort"), port.get("containerPort")
                if not isinstance(host_port, int) or not isinstance(container_port, int) or isinstance(host_port, bool):
                    raise PodSpecError(f"{path}.hostPort", "hostPort and containerPort must be integers")
                protocol = str(port.get("protocol") or "TCP").lower()
                if protocol not in ("tcp", "udp", "sctp"):
                    raise PodSpecError(f"{path}.protocol", f"{protocol!r} is not TCP, UDP or SCTP")
                if network == "host":
                    if host_port != container_port:
                        raise PodSpecError(f"{path}.hostPort", "must equal containerPort on the host network")
                    continue
                if network.startswith(_NO_PUBLISH_NETWORKS):
                    raise PodSpecError(f"{path}.hostPort", f"cannot be published with PodmanPodNetwork {network!r}")
                host_ip = str(port.get("hostIP") or "")
                if host_ip:
                    try:
                        host_ip = str(ipaddress.ip_address(host_ip))
                    except ValueError:
                        raise PodSpecError(f"{path}.hostIP", f"{host_ip!r} is not an IP address") from None
                    host_ip = f"[{host_ip}]" if ":" in host_ip else host_ip
                prefix = f"{host_ip}:" if host_ip else ""
                words.append(f"--publish={prefix}{host_port}:{container_port}/{protocol}")
    return words


def pod_create_argv(pod: Pod, spec: PodSpec, *, instance: str, network: str) -> list[str]:
    """``podman pod create`` (without the podman command itself and without the GPU label)."""
    labels = pod_labels(instance, pod.uid, pod.namespace, pod.name)
    labels[L_GRACE] = str(spec.grace_seconds)
    if spec.active_deadline:
        labels[L_DEADLINE] = str(spec.active_deadline)
    name = pod_name(instance, pod.uid)
    words = ["pod", "create", f"--name={name}", f"--infra-name={name}-infra", f"--hostname={hostname(pod.name)}"]
    words += label_words(labels)
    if network:
        words.append(f"--network={network}")
    words += publish_words(pod, network)
    return words


def run_argv(
    spec: PodSpec,
    container: ContainerSpec,
    *,
    pod_id: str,
    instance: str,
    run: int,
    backoff: float,
    log_path: str,
    devices: Sequence[str],
) -> list[str]:
    """``podman run -d`` of one run of one container (without the podman command itself)."""
    labels = pod_labels(instance, spec.uid, spec.namespace, spec.name)
    labels.update({
        L_CONTAINER: container.name,
        L_KIND: container.kind,
        L_INDEX: str(container.index),
        L_RUN: str(run),
        L_BACKOFF: f"{backoff:g}",
    })  # fmt: skip
    words = [
        "run", "-d", f"--pod={pod_id}", f"--name={container_name(instance, spec.uid, container.name, run)}",
        "--log-driver=k8s-file", f"--log-opt=path={log_path}",
    ]  # fmt: skip
    words += label_words(labels)
    words += [f"--device={device}" for device in devices]
    words += container.options
    # `--` ends the options: the image is never read as one (checked at parse time as well)
    words += ["--", container.image, *container.args]
    return words


def container_devices(spec: PodSpec, pod_devices: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Each container's share of the pod's CDI devices: containers that run together (main containers,
    sidecars) get disjoint slices; plain init containers, one at a time, take theirs from the start."""
    shares: dict[str, list[str]] = {c.name: [] for c in spec.containers}
    for kind, devices in pod_devices.items():
        cursor = 0
        for container in spec.containers:
            count = container.gpus.get(kind, 0)
            if not count:
                continue
            if container.kind == "init":
                shares[container.name] += list(devices[:count])
            else:
                shares[container.name] += list(devices[cursor : cursor + count])
                cursor += count
    return shares
