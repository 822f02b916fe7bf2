"""The pod as the backends need it, parsed from interLink's create body.

Every validation error names the Kubernetes field path (``spec.containers[0].env[2].name``) so the
HTTP edge can answer a 4xx that tells the pod author what to fix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.imageref import check_image
from interlink_plugins.core.model.names import (
    check_dns_label,
    check_dns_subdomain,
    check_keys,
    check_pod_uid,
)
from interlink_plugins.core.model.quantity import cpu_millicores, memory_bytes, whole_count

ContainerKind = Literal["init", "main"]
RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
SUPPORTED_VOLUME_TYPES = ("configMap", "secret", "projected", "emptyDir", "hostPath", "downwardAPI")


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class ContainerResources:
    """Effective per-container amounts: the limit if set, else the request."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    extended: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    name: str
    kind: ContainerKind
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[EnvVar, ...]
    working_dir: str
    volume_mounts: tuple[VolumeMount, ...]
    resources: ContainerResources
    image_pull_policy: str
    restart_policy: str | None  # init containers: "Always" marks a sidecar
    run_as_user: int | None
    run_as_group: int | None
    ports: tuple[int, ...]
    probes: Mapping[str, Any]
    lifecycle: Mapping[str, Any]

    @property
    def is_sidecar(self) -> bool:
        return self.kind == "init" and self.restart_policy == "Always"

    @property
    def field_path(self) -> str:
        return "spec.initContainers" if self.kind == "init" else "spec.containers"


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str
    source: Mapping[str, Any]


@dataclass(frozen=True)
class Pod:
    uid: str
    name: str
    namespace: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    init_containers: tuple[Container, ...]
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...]
    restart_policy: str
    active_deadline_seconds: int | None
    termination_grace_seconds: int
    run_as_user: int | None
    run_as_group: int | None
    config_maps: Mapping[str, Mapping[str, bytes]]
    secrets: Mapping[str, Mapping[str, bytes]]
    projected: Mapping[str, Mapping[str, bytes]]
    job_script: str | None
    raw: Mapping[str, Any]

    @property
    def all_containers(self) -> tuple[Container, ...]:
        return self.init_containers + self.containers

    def container(self, name: str) -> Container | None:
        return next((c for c in self.all_containers if c.name == name), None)


def _as_dict(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PodSpecError(path, "must be an object")
    return value


def _as_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodSpecError(path, "must be a list")
    return value


def _as_str(value: Any, path: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise PodSpecError(path, "is required")
        return ""
    if not isinstance(value, str):
        raise PodSpecError(path, "must be a string")
    if required and not value:
        raise PodSpecError(path, "must not be empty")
    return value


def _as_int(value: Any, path: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PodSpecError(path, "must be an integer")
    if value < minimum:
        raise PodSpecError(path, f"must be >= {minimum}")
    return value


def _no_nul(text: str, path: str) -> str:
    if "\x00" in text:
        raise PodSpecError(path, "contains a NUL byte, which no process can receive")
    return text


def _str_map(value: Any, path: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, item in _as_dict(value, path).items():
        result[str(key)] = _as_str(item, f"{path}[{key}]")
    return result


def _parse_resources(spec: dict[str, Any], path: str) -> ContainerResources:
    limits = _as_dict(spec.get("limits"), f"{path}.limits")
    requests = _as_dict(spec.get("requests"), f"{path}.requests")
    cpu = 0
    memory = 0
    extended: dict[str, int] = {}
    for name in set(limits) | set(requests):
        source, where = (limits, "limits") if name in limits else (requests, "requests")
        raw = source[name]
        field_path = f"{path}.{where}[{name}]"
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise PodSpecError(field_path, "must be a quantity string")
        try:
            if name == "cpu":
                cpu = cpu_millicores(raw)
            elif name == "memory":
                memory = memory_bytes(raw)
            elif name in ("ephemeral-storage", "storage", "pods", "hugepages-2Mi", "hugepages-1Gi"):
                extended[name] = memory_bytes(raw)
            else:
                extended[name] = whole_count(raw)
        except ValueError as exc:
            raise PodSpecError(field_path, str(exc)) from exc
    return ContainerResources(cpu_millis=cpu, memory_bytes=memory, extended=extended)


def _parse_env(items: list[Any], path: str) -> tuple[EnvVar, ...]:
    env: list[EnvVar] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        entry = _as_dict(item, item_path)
        name = _no_nul(_as_str(entry.get("name"), f"{item_path}.name", required=True), f"{item_path}.name")
        if "=" in name:
            raise PodSpecError(f"{item_path}.name", "must not contain '='")
        value = _no_nul(_as_str(entry.get("value"), f"{item_path}.value"), f"{item_path}.value")
        env.append(EnvVar(name, value))
    return tuple(env)


def _parse_mounts(items: list[Any], path: str, volume_names: set[str]) -> tuple[VolumeMount, ...]:
    mounts: list[VolumeMount] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        entry = _as_dict(item, item_path)
        name = _as_str(entry.get("name"), f"{item_path}.name", required=True)
        if name not in volume_names:
            raise PodSpecError(f"{item_path}.name", f"no volume named {name!r} in spec.volumes")
        mount_path = _no_nul(
            _as_str(entry.get("mountPath"), f"{item_path}.mountPath", required=True), f"{item_path}.mountPath"
        )
        if not mount_path.startswith("/"):
            raise PodSpecError(f"{item_path}.mountPath", "must be an absolute path")
        if mount_path in seen:
            raise PodSpecError(f"{item_path}.mountPath", f"{mount_path!r} is mounted twice")
        seen.add(mount_path)
        sub_path = _no_nul(_as_str(entry.get("subPath"), f"{item_path}.subPath"), f"{item_path}.subPath")
        if sub_path.startswith("/") or ".." in sub_path.split("/"):
            raise PodSpecError(f"{item_path}.subPath", "must be a relative path without '..'")
        if entry.get("subPathExpr"):
            raise PodSpecError(f"{item_path}.subPathExpr", "is not supported")
        mounts.append(
            VolumeMount(name, mount_path, bool(entry.get("readOnly", False)), sub_path.strip("/"))
        )
    return tuple(mounts)


def _parse_ports(items: list[Any], path: str) -> tuple[int, ...]:
    ports: list[int] = []
    for index, item in enumerate(items):
        entry = _as_dict(item, f"{path}[{index}]")
        port = _as_int(entry.get("containerPort"), f"{path}[{index}].containerPort", minimum=1)
        if port is not None:
            ports.append(port)
    return tuple(ports)


_PROBE_KEYS = ("startupProbe", "readinessProbe", "livenessProbe")


def _words(value: Any, path: str) -> tuple[str, ...] | None:
    """A command or args list: None when absent or empty, else its words (strings without NUL)."""
    if value is None or not _as_list(value, path):
        return None
    return tuple(_no_nul(_as_str(v, f"{path}[{i}]"), f"{path}[{i}]") for i, v in enumerate(value))


def _pull_policy(spec: dict[str, Any], path: str) -> str:
    pull = _as_str(spec.get("imagePullPolicy"), f"{path}.imagePullPolicy") or "IfNotPresent"
    if pull not in PULL_POLICIES:
        raise PodSpecError(f"{path}.imagePullPolicy", f"must be one of {', '.join(PULL_POLICIES)}")
    return pull


def _sidecar_restart(spec: dict[str, Any], path: str, kind: ContainerKind) -> str | None:
    """A container's restartPolicy: only 'Always' on an init container (a sidecar); None when unset."""
    restart: str | None = spec.get("restartPolicy")
    if restart is not None and (kind != "init" or restart != "Always"):
        raise PodSpecError(f"{path}.restartPolicy", "only 'Always' on an init container (a sidecar) is valid")
    return restart


def _parse_container(
    raw: Any, kind: ContainerKind, index: int, volume_names: set[str], pod_security: dict[str, Any]
) -> Container:
    base = "spec.initContainers" if kind == "init" else "spec.containers"
    path = f"{base}[{index}]"
    spec = _as_dict(raw, path)
    name = check_dns_label(_as_str(spec.get("name"), f"{path}.name", required=True), f"{path}.name")
    image = _no_nul(_as_str(spec.get("image"), f"{path}.image"), f"{path}.image")
    check_image(image, f"{path}.image")
    command_t = _words(spec.get("command"), f"{path}.command")
    args_t = _words(spec.get("args"), f"{path}.args")
    if spec.get("envFrom"):
        raise PodSpecError(f"{path}.envFrom", "must be resolved by interLink before it reaches the plugin")
    pull = _pull_policy(spec, path)
    restart = _sidecar_restart(spec, path, kind)
    security = {**pod_security, **_as_dict(spec.get("securityContext"), f"{path}.securityContext")}
    return Container(
        name=name,
        kind=kind,
        image=image,
        command=command_t,
        args=args_t,
        env=_parse_env(_as_list(spec.get("env"), f"{path}.env"), f"{path}.env"),
        working_dir=_no_nul(_as_str(spec.get("workingDir"), f"{path}.workingDir"), f"{path}.workingDir"),
        volume_mounts=_parse_mounts(
            _as_list(spec.get("volumeMounts"), f"{path}.volumeMounts"), f"{path}.volumeMounts", volume_names
        ),
        resources=_parse_resources(_as_dict(spec.get("resources"), f"{path}.resources"), f"{path}.resources"),
        image_pull_policy=pull,
        restart_policy=restart,
        run_as_user=_as_int(security.get("runAsUser"), f"{path}.securityContext.runAsUser"),
        run_as_group=_as_int(security.get("runAsGroup"), f"{path}.securityContext.runAsGroup"),
        ports=_parse_ports(_as_list(spec.get("ports"), f"{path}.ports"), f"{path}.ports"),
        probes={key: spec[key] for key in _PROBE_KEYS if isinstance(spec.get(key), dict)},
        lifecycle=_as_dict(spec.get("lifecycle"), f"{path}.lifecycle"),
    )


def _parse_volumes(items: list[Any]) -> tuple[Volume, ...]:
    volumes: list[Volume] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        path = f"spec.volumes[{index}]"
        spec = _as_dict(item, path)
        name = _as_str(spec.get("name"), f"{path}.name", required=True)
        if name in names:
            raise PodSpecError(f"{path}.name", f"duplicate volume name {name!r}")
        names.add(name)
        kinds = [key for key in spec if key != "name" and spec[key] is not None]
        if len(kinds) != 1:
            raise PodSpecError(path, "must have exactly one volume source")
        kind = kinds[0]
        if kind not in SUPPORTED_VOLUME_TYPES:
            raise PodSpecError(f"{path}.{kind}", f"volume type {kind!r} is not supported by this plugin")
        volumes.append(Volume(name, kind, _as_dict(spec[kind], f"{path}.{kind}")))
    return tuple(volumes)


def _decode_data(entry: dict[str, Any], path: str, *, base64_values: bool) -> dict[str, bytes]:
    """configMaps carry `data` (text) and `binaryData` (base64); secrets carry base64 `data`."""
    result: dict[str, bytes] = {}
    for key, value in _as_dict(entry.get("data"), f"{path}.data").items():
        text = _as_str(value, f"{path}.data[{key}]")
        if base64_values:
            try:
                result[key] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PodSpecError(f"{path}.data[{key}]", "is not valid base64") from exc
        else:
            result[key] = text.encode()
    for key, value in _as_dict(entry.get("stringData"), f"{path}.stringData").items():
        result[key] = _as_str(value, f"{path}.stringData[{key}]").encode()
    for key, value in _as_dict(entry.get("binaryData"), f"{path}.binaryData").items():
        try:
            result[key] = base64.b64decode(_as_str(value, f"{path}.binaryData[{key}]"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PodSpecError(f"{path}.binaryData[{key}]", "is not valid base64") from exc
    return result


def _collect_objects(
    containers: list[Any], key: str, *, base64_values: bool
) -> dict[str, dict[str, bytes]]:
    objects: dict[str, dict[str, bytes]] = {}
    for c_index, entry in enumerate(containers):
        for o_index, obj in enumerate(_as_list(_as_dict(entry, f"container[{c_index}]").get(key), key)):
            path = f"container[{c_index}].{key}[{o_index}]"
            data = _as_dict(obj, path)
            name = _as_str(_as_dict(data.get("metadata"), f"{path}.metadata").get("name"), f"{path}.metadata.name")
            if name:
                objects.setdefault(name, {}).update(_decode_data(data, path, base64_values=base64_values))
    return objects


def parse_create_body(body: Any) -> Pod:
    """Parse interLink's /create body: an object (>=0.5) or a one-element array (<=0.4)."""
    if isinstance(body, list):
        if len(body) != 1:
            raise PodSpecError("body", f"an array body must hold exactly one pod, got {len(body)}", status=400)
        body = body[0]
    envelope = _as_dict(body, "body")
    pod_raw = envelope.get("pod")
    if pod_raw is None:
        raise PodSpecError("pod", "is required", status=400)
    containers_raw = _as_list(envelope.get("container"), "container")
    job_script = envelope.get("jobScript")
    return parse_pod(
        _as_dict(pod_raw, "pod"),
        config_maps=_collect_objects(containers_raw, "configMaps", base64_values=False),
        secrets=_collect_objects(containers_raw, "secrets", base64_values=True),
        projected=_collect_objects(containers_raw, "projectedvolumemaps", base64_values=False),
        job_script=job_script if isinstance(job_script, str) and job_script.strip() else None,
    )


def _parse_containers(
    spec: dict[str, Any], volume_names: set[str], pod_security: dict[str, Any]
) -> tuple[tuple[Container, ...], tuple[Container, ...]]:
    """(init containers, containers): at least one container, no name used twice."""
    init = tuple(
        _parse_container(c, "init", i, volume_names, pod_security)
        for i, c in enumerate(_as_list(spec.get("initContainers"), "spec.initContainers"))
    )
    main = tuple(
        _parse_container(c, "main", i, volume_names, pod_security)
        for i, c in enumerate(_as_list(spec.get("containers"), "spec.containers"))
    )
    if not main:
        raise PodSpecError("spec.containers", "must hold at least one container")
    seen: set[str] = set()
    for container in init + main:
        if container.name in seen:
            raise PodSpecError(container.field_path, f"container name {container.name!r} is used twice")
        seen.add(container.name)
    return init, main


def parse_pod(
    raw: dict[str, Any],
    *,
    config_maps: Mapping[str, Mapping[str, bytes]] | None = None,
    secrets: Mapping[str, Mapping[str, bytes]] | None = None,
    projected: Mapping[str, Mapping[str, bytes]] | None = None,
    job_script: str | None = None,
) -> Pod:
    meta = _as_dict(raw.get("metadata"), "metadata")
    spec = _as_dict(raw.get("spec"), "spec")
    uid = check_pod_uid(_as_str(meta.get("uid"), "metadata.uid", required=True))
    namespace = check_dns_label(_as_str(meta.get("namespace"), "metadata.namespace") or "default",
                                "metadata.namespace")
    name = check_dns_subdomain(_as_str(meta.get("name"), "metadata.name", required=True), "metadata.name")
    annotations = _str_map(meta.get("annotations"), "metadata.annotations")
    labels = _str_map(meta.get("labels"), "metadata.labels")
    check_keys(annotations, "metadata.annotations")
    check_keys(labels, "metadata.labels")
    volumes = _parse_volumes(_as_list(spec.get("volumes"), "spec.volumes"))
    volume_names = {v.name for v in volumes}
    pod_security = _as_dict(spec.get("securityContext"), "spec.securityContext")
    init, main = _parse_containers(spec, volume_names, pod_security)
    restart = _as_str(spec.get("restartPolicy"), "spec.restartPolicy") or "Always"
    if restart not in RESTART_POLICIES:
        raise PodSpecError("spec.restartPolicy", f"must be one of {', '.join(RESTART_POLICIES)}")
    grace = _as_int(spec.get("terminationGracePeriodSeconds"), "spec.terminationGracePeriodSeconds")
    return Pod(
        uid=uid,
        name=name,
        namespace=namespace,
        annotations=annotations,
        labels=labels,
        init_containers=init,
        containers=main,
        volumes=volumes,
        restart_policy=restart,
        active_deadline_seconds=_as_int(spec.get("activeDeadlineSeconds"), "spec.activeDeadlineSeconds", minimum=1),
        termination_grace_seconds=30 if grace is None else grace,
        run_as_user=_as_int(pod_security.get("runAsUser"), "spec.securityContext.runAsUser"),
        run_as_group=_as_int(pod_security.get("runAsGroup"), "spec.securityContext.runAsGroup"),
        config_maps=config_maps or {},
        secrets=secrets or {},
        projected=projected or {},
        job_script=job_script,
        raw=raw,
    )


def pod_summary(pod: Pod) -> dict[str, Any]:
    """What reporting a pod needs besides the scheduler (pod.json, podman labels, the state record)."""
    return {
        "uid": pod.uid,
        "namespace": pod.namespace,
        "name": pod.name,
        "init_names": [c.name for c in pod.init_containers],
        "main_names": [c.name for c in pod.containers],
        "images": {c.name: c.image for c in pod.all_containers},
        "sidecars": [c.name for c in pod.init_containers if c.is_sidecar],
        "grace_seconds": pod.termination_grace_seconds,
    }


def pod_identity(raw: Any, path: str = "pod") -> tuple[str, str, str]:
    """(uid, namespace, name) of a v1.Pod as sent to /status and /delete."""
    meta = _as_dict(_as_dict(raw, path).get("metadata"), f"{path}.metadata")
    uid = _as_str(meta.get("uid"), f"{path}.metadata.uid", required=True)
    return uid, _as_str(meta.get("namespace"), f"{path}.metadata.namespace") or "default", _as_str(
        meta.get("name"), f"{path}.metadata.name"
    )


def spec_container_names(raw: Any) -> tuple[list[str], list[str]]:
    """(init names, main names) of a v1.Pod: /status must answer one entry per name."""
    spec = _as_dict(_as_dict(raw, "pod").get("spec"), "pod.spec")

    def names(key: str) -> list[str]:
        return [str(_as_dict(c, key).get("name", "")) for c in _as_list(spec.get(key), key)]

    return names("initContainers"), names("containers")
