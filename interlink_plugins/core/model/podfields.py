"""Every field of a Kubernetes pod spec and what each backend does with it: nothing is dropped silently.

One table, FIELDS, lists every field of the v1 PodSpec and of the types under it (Kubernetes API
reference, v1.30 and the few fields added up to v1.33) with, per backend, one of:

* honoured: the backend (or Kubernetes / interLink's virtual kubelet before the plugin) does what it asks;
* refused: the pod depends on it and the backend cannot give it: 422 naming the field;
* warned: it only refines behaviour, Kubernetes would run the pod anyway: the pod runs without it, and
  each affected container's status message and the plugin log name the field.

A field is "used" only with a value other than its Kubernetes default (``hostNetwork: false``,
``dnsPolicy: ClusterFirst``, ``terminationMessagePath: /dev/termination-log`` are not), so what the API
server and interLink add to every pod never refuses or warns. A field not in the table (a newer Kubernetes)
is warned, naming its path. ``interlink-plugin field-reference`` prints the table (docs/kubelet-parity.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.runtimes.containers import USER_SWITCHING_RUNTIME

Verdict = Literal["honoured", "refused", "warned"]
_CODES: Mapping[str, Verdict] = {"H": "honoured", "R": "refused", "W": "warned"}
_UNSET: Any = object()
UNKNOWN_NOTE = "not a field this plugin knows (a newer Kubernetes?): ignored"
NOTES_HEADER = "fields not honoured by the {backend} backend"
MAX_FINDINGS = 20  # per verdict and pod: the rest is counted (the log line and the status stay short)
KEY_SHOWN_MAX = 64
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")


@dataclass(frozen=True)
class Facts:
    """What of the config changes a verdict (the conditions a backend's column names): EnableProbes, the
    container runtime (only some run a container as another user and group) and the pod network."""

    backend: str
    probes: bool = True
    runtime: str = USER_SWITCHING_RUNTIME
    pod_network: str = ""  # the backend's own pod network, where it has one

    @classmethod
    def of(cls, config: Any) -> Facts:
        column = column_for(str(config.backend))
        return cls(column.name, bool(config.enable_probes), str(config.container_runtime),
                   column.pod_network(config))


@dataclass(frozen=True)
class Condition:
    """A setting of the site's config a field is honoured with; without it the field is `otherwise`."""

    holds: Callable[[Facts], bool]
    why: str  # the note when it does not hold
    label: str  # when it does not hold, for the docs
    otherwise: Verdict = "warned"


# the conditions a field can be honoured under; each backend's column names those that apply to it
# (for the others the field is honoured as it is). The texts are the docs' and the status messages'.
CONDITIONS: Mapping[str, Condition] = {
    "probes": Condition(lambda f: f.probes, "probes run only with EnableProbes: true", "without EnableProbes"),
    "runtime-group": Condition(
        lambda f: f.runtime == USER_SWITCHING_RUNTIME,
        f"only ContainerRuntime {USER_SWITCHING_RUNTIME} runs a container as another group",
        f"without runtime {USER_SWITCHING_RUNTIME}",
    ),
    "runtime-user": Condition(
        lambda f: f.runtime == USER_SWITCHING_RUNTIME,
        "",  # the backend's column says why (its own words)
        f"without runtime {USER_SWITCHING_RUNTIME}",
    ),
    "host-network": Condition(
        lambda f: f.pod_network == "host",
        "",  # the backend's column says why
        "",
        "refused",
    ),
    "pull-policy": Condition(
        lambda f: f.runtime not in ("apptainer", "singularity"),
        "apptainer converts an image once and runs the converted one after (IfNotPresent)",
        "with runtime apptainer",
    ),
}


def _no_network(config: Any) -> str:
    del config
    return ""


@dataclass(frozen=True)
class FieldColumn:
    """One backend's column of the table, registered by its package: the verdicts where it differs from
    the table's (``verdicts``: "Kind.field" -> H, R or W), its own words for a field where the table's note
    does not say what it does (``notes``: "Kind.field" -> note), the conditions that apply to it, with its
    own words where a condition has none (``why``: condition -> (why, label)), and its pod network setting."""

    name: str  # the config's Backend value
    title: str  # the docs' column heading
    verdicts: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    conditions: frozenset[str] = frozenset()
    why: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    pod_network: Callable[[Any], str] = _no_network

    def code(self, kind: str, name: str, rule: Rule) -> str:
        return self.verdicts.get(f"{kind}.{name}", rule.code)

    def note(self, kind: str, name: str, rule: Rule) -> str:
        """What this backend does with the field, in its words where it gave them, else the table's note."""
        return self.notes.get(f"{kind}.{name}", rule.note)

    def condition(self, when: str) -> Condition | None:
        """The condition a field is honoured under on this backend; None: it always is."""
        if not when or when not in self.conditions:
            return None
        condition = CONDITIONS[when]
        why, label = self.why.get(when, (condition.why, condition.label))
        return Condition(condition.holds, why, label, condition.otherwise)


_COLUMNS: dict[str, FieldColumn] = {}


def register(column: FieldColumn) -> FieldColumn:
    """Add a backend's column (its package does, when imported)."""
    _COLUMNS[column.name] = column
    return column


def column_for(backend: str) -> FieldColumn:
    """A registered backend's column."""
    try:
        return _COLUMNS[backend]
    except KeyError:
        raise KeyError(f"no field verdicts registered for backend {backend!r}") from None


@dataclass(frozen=True)
class Rule:
    """One field: `code` is its verdict (H honoured, R refused, W warned) and `note` what is done with it,
    on every backend whose column does not say otherwise."""

    code: str
    note: str = ""
    sub: str = ""  # the type of its value (or of each element of a list), whose fields are checked in turn
    default: Any = _UNSET  # a value that means "not used" besides null/false/""/[]/{}
    when: str = ""  # a condition (CONDITIONS): honoured only when it holds

    def verdict(self, kind: str, name: str, facts: Facts) -> tuple[Verdict, str]:
        column = column_for(facts.backend)
        verdict = _CODES[column.code(kind, name, self)]
        condition = column.condition(self.when)
        if verdict == "honoured" and condition is not None and not condition.holds(facts):
            return condition.otherwise, condition.why
        return verdict, column.note(kind, name, self)

    def unused(self, value: Any) -> bool:
        if value is None:
            return True
        if self.default is not _UNSET:
            return bool(self.default(value)) if callable(self.default) else value == self.default
        return value is False or value in ("", [], {})


def _r(code: str, note: str = "", sub: str = "", default: Any = _UNSET, when: str = "") -> Rule:
    assert code in _CODES, code
    return Rule(code, note, sub, default, when)


_K8S = "applied by Kubernetes before the pod reached the virtual node"
_VK = "applied by interLink's virtual kubelet before the plugin sees the pod"
_PLACED = "Kubernetes' scheduler placed the pod on the virtual node; the backend places its job without it"
_NO_NODE = "a batch job runs on the node its scheduler picks: no port is published there"
_NO_VOLUME = "this volume type is not available: configMap, secret, projected, downwardAPI, emptyDir, hostPath are"
_HARDENING = "not applied: the container runs without it"


def _resize_default(value: Any) -> bool:
    """The API server's resizePolicy (NotRequired for every resource) changes nothing: interLink never resizes."""
    return isinstance(value, list) and all(isinstance(p, dict) and p.get("restartPolicy") in (None, "NotRequired")
                                           for p in value)


FIELDS: Mapping[str, Mapping[str, Rule]] = {
    "PodSpec": {
        "activeDeadlineSeconds": _r("H", "the pod ends DeadlineExceeded when it is exceeded"),
        "affinity": _r("H", sub="Affinity"),
        "automountServiceAccountToken": _r("H", _VK + " (the kube-api-access volume)", default=True),
        "containers": _r("H", sub="Container"),
        "dnsConfig": _r("W", "the node's resolver configuration is used"),
        "dnsPolicy": _r("W", "the node's resolver is used (there is no cluster DNS off the cluster)",
                        default="ClusterFirst"),
        "enableServiceLinks": _r("H", _VK + " (it builds the env)", default=True),
        "ephemeralContainers": _r("W", "debug containers are not run"),
        "hostAliases": _r("W", "the node's /etc/hosts is used"),
        "hostIPC": _r("R", "no backend gives a pod the host's IPC namespace"),
        "hostNetwork": _r("H", "batch jobs run in the compute node's network whatever the pod asks",
                          when="host-network"),
        "hostPID": _r("R", "no backend gives a pod the host's PID namespace"),
        "hostUsers": _r("W", "no user namespace is made for the pod", default=True),
        "hostname": _r("W", "the hostname is the node's"),
        "imagePullSecrets": _r("W", "registry credentials come from the site (RegistryCredentials, the container "
                                      "runtime's auth file), not from the pod"),
        "initContainers": _r("H", sub="Container"),
        "nodeName": _r("H", "the virtual node, " + _K8S),
        "nodeSelector": _r("H", "chose the virtual node, " + _K8S),
        "os": _r("H", sub="PodOS"),
        "overhead": _r("W", "a RuntimeClass overhead is not added to the job's request"),
        "preemptionPolicy": _r("W", "the backend's own priorities and preemption apply",
                               default="PreemptLowerPriority"),
        "priority": _r("W", "the job's priority in the backend is not set from it", default=0),
        "priorityClassName": _r("W", "the job's priority in the backend is not set from it"),
        "readinessGates": _r("W", "the gates' conditions are not evaluated: readiness is the containers'"),
        "resourceClaims": _r("R", "dynamic resource allocation (DRA) is not available"),
        "resources": _r("W", "pod-level resources are not read: the containers' resources size the job"),
        "restartPolicy": _r("H", "the runner in the job does it", default="Always"),
        "runtimeClassName": _r("W", "the backend's configured container runtime runs every container"),
        "schedulerName": _r("H", "the scheduler that bound the pod to the virtual node",
                            default="default-scheduler"),
        "schedulingGates": _r("H", "lifted before the pod was bound to the virtual node"),
        "securityContext": _r("H", sub="PodSecurityContext"),
        "serviceAccount": _r("H", "its token is in the kube-api-access volume interLink mounts"),
        "serviceAccountName": _r("H", "its token is in the kube-api-access volume interLink mounts"),
        "setHostnameAsFQDN": _r("W", "the hostname is not a cluster FQDN"),
        "shareProcessNamespace": _r("R", "no backend promises the containers one PID namespace"),
        "subdomain": _r("W", "no cluster DNS name is made for the pod"),
        "terminationGracePeriodSeconds": _r("H", "at most the admin's GracePeriodCap"),
        "tolerations": _r("H", "let the pod onto the virtual node, " + _K8S),
        "topologySpreadConstraints": _r("W", _PLACED),
        "volumes": _r("H", sub="Volume"),
    },
    "Affinity": {
        "nodeAffinity": _r("H", "chose the virtual node, " + _K8S),
        "podAffinity": _r("W", _PLACED),
        "podAntiAffinity": _r("W", _PLACED),
    },
    "PodOS": {"name": _r("R", "every backend runs Linux containers", default="linux")},
    "Container": {
        "args": _r("H"),
        "command": _r("H"),
        "env": _r("H", sub="EnvVar"),
        "envFrom": _r("R", "interLink resolves envFrom into env before the plugin; an unresolved one cannot "
                             "be served"),
        "image": _r("H"),
        "imagePullPolicy": _r("H", "unless the admin's PullPolicy overrides it", default="IfNotPresent",
                              when="pull-policy"),
        "lifecycle": _r("H", sub="Lifecycle"),
        "livenessProbe": _r("H", sub="Probe", when="probes"),
        "name": _r("H"),
        "ports": _r("H", sub="ContainerPort"),
        "readinessProbe": _r("H", sub="Probe", when="probes"),
        "resizePolicy": _r("W", "interLink never resizes a running pod", default=_resize_default),
        "resources": _r("H", sub="ResourceRequirements"),
        "restartPolicy": _r("H", "a sidecar (an init container with Always)"),
        "securityContext": _r("H", sub="SecurityContext"),
        "startupProbe": _r("H", sub="Probe", when="probes"),
        "stdin": _r("W", "no stdin is attached"),
        "stdinOnce": _r("W", "no stdin is attached"),
        "terminationMessagePath": _r("W", "the file is not read: the message is the runner's",
                                     default="/dev/termination-log"),
        "terminationMessagePolicy": _r("W", "the message is the runner's, never the log's tail", default="File"),
        "tty": _r("W", "no terminal is attached"),
        "volumeDevices": _r("R", "raw block devices are not available"),
        "volumeMounts": _r("H", sub="VolumeMount"),
        "workingDir": _r("H"),
    },
    "EnvVar": {
        "name": _r("H"),
        "value": _r("H"),
        "valueFrom": _r("W", "interLink resolves it before the plugin; left unresolved the variable gets "
                               "`value` (empty)"),
    },
    "ContainerPort": {
        "containerPort": _r("H", "reachable at the node's address (batch jobs share its network) or the pod's"),
        "hostIP": _r("R", _NO_NODE),
        "hostPort": _r("R", _NO_NODE),
        "name": _r("H", "named ports of probes and hooks"),
        "protocol": _r("H", default="TCP"),
    },
    "ResourceRequirements": {
        "claims": _r("R", "dynamic resource allocation (DRA) is not available"),
        "limits": _r("H", sub="ResourceList"),
        "requests": _r("H", sub="ResourceList"),
    },
    # keys of limits/requests; "*" any other (extended) resource, "prefix-*" a family
    "ResourceList": {
        "cpu": _r("H", "the job's CPUs"),
        "memory": _r("H", "the job's memory"),
        "nvidia.com/gpu": _r("H", "the job's GPUs"),
        "amd.com/gpu": _r("H", "the job's GPUs"),
        "ephemeral-storage": _r("H", "the job's local disk"),
        "hugepages-*": _r("W", "huge pages are not reserved"),
        "*": _r("H", "as the backend maps it, a 422 when it does not"),
    },
    "SecurityContext": {
        "allowPrivilegeEscalation": _r("W", _HARDENING, default=True),
        "appArmorProfile": _r("W", _HARDENING),
        "capabilities": _r("H", sub="Capabilities"),
        "privileged": _r("R", "no backend runs privileged containers"),
        "procMount": _r("W", "the runtime's default /proc is used", default="Default"),
        "readOnlyRootFilesystem": _r("W", _HARDENING),
        "runAsGroup": _r("H", f"the container's group (runtime {USER_SWITCHING_RUNTIME}: --user)",
                         when="runtime-group"),
        "runAsNonRoot": _r("W", "the image's user is not checked"),
        "runAsUser": _r("H", "the container's user", when="runtime-user"),
        "seLinuxOptions": _r("W", _HARDENING),
        "seccompProfile": _r("W", "the runtime's default seccomp profile applies"),
        "windowsOptions": _r("H", "ignored on Linux, as by Kubernetes"),
    },
    "Capabilities": {
        "add": _r("R", "no backend grants a container extra capabilities"),
        "drop": _r("W", _HARDENING),
    },
    "PodSecurityContext": {
        "appArmorProfile": _r("W", _HARDENING),
        "fsGroup": _r("W", "volumes are not given to the group (emptyDirs are 0777)"),
        "fsGroupChangePolicy": _r("W", "volumes are not given to a group"),
        "runAsGroup": _r("H", f"the containers' group (runtime {USER_SWITCHING_RUNTIME}: --user)",
                         when="runtime-group"),
        "runAsNonRoot": _r("W", "the image's user is not checked"),
        "runAsUser": _r("H", "the containers' user", when="runtime-user"),
        "seLinuxChangePolicy": _r("W", _HARDENING),
        "seLinuxOptions": _r("W", _HARDENING),
        "seccompProfile": _r("W", "the runtime's default seccomp profile applies"),
        "supplementalGroups": _r("W", "the containers get no extra groups"),
        "supplementalGroupsPolicy": _r("W", "the containers get no extra groups", default="Merge"),
        "sysctls": _r("R", "no backend sets sysctls for a pod"),
        "windowsOptions": _r("H", "ignored on Linux, as by Kubernetes"),
    },
    "Probe": {
        "exec": _r("H", sub="ExecAction"),
        "failureThreshold": _r("H"),
        "grpc": _r("R", "gRPC probes are not available: use httpGet, tcpSocket or exec"),
        "httpGet": _r("H", sub="HTTPGetAction"),
        "initialDelaySeconds": _r("H"),
        "periodSeconds": _r("H"),
        "successThreshold": _r("H"),
        "tcpSocket": _r("H", sub="TCPSocketAction"),
        "terminationGracePeriodSeconds": _r("H"),
        "timeoutSeconds": _r("H"),
    },
    "Lifecycle": {
        "postStart": _r("H", sub="LifecycleHandler"),
        "preStop": _r("H", sub="LifecycleHandler"),
        "stopSignal": _r("W", "the container is stopped with SIGTERM"),
    },
    "LifecycleHandler": {
        "exec": _r("H", sub="ExecAction"),
        "httpGet": _r("H", sub="HTTPGetAction"),
        "sleep": _r("H", sub="SleepAction"),
        "tcpSocket": _r("R", "not a hook Kubernetes runs either: use exec, httpGet or sleep"),
    },
    "ExecAction": {"command": _r("H")},
    "HTTPGetAction": {
        "host": _r("H"), "httpHeaders": _r("H"), "path": _r("H"), "port": _r("H"), "scheme": _r("H"),
    },
    "TCPSocketAction": {"host": _r("H"), "port": _r("H")},
    "SleepAction": {"seconds": _r("H")},
    "VolumeMount": {
        "mountPath": _r("H"),
        "mountPropagation": _r("R", "mount propagation is not available", default="None"),
        "name": _r("H"),
        "readOnly": _r("H"),
        "recursiveReadOnly": _r("W", "a read-only mount is not made recursively read-only", default="Disabled"),
        "subPath": _r("H"),
        "subPathExpr": _r("R", "not expanded: use subPath"),
    },
    "Volume": {
        "name": _r("H"),
        "configMap": _r("H", sub="ConfigMapVolumeSource"),
        "secret": _r("H", sub="SecretVolumeSource"),
        "projected": _r("H", "the files interLink sends (service-account token, configMaps, secrets, downward "
                               "API)", sub="ProjectedVolumeSource"),
        "downwardAPI": _r("H", sub="DownwardAPIVolumeSource"),
        "emptyDir": _r("H", "a directory in the job dir, shared by the pod's containers", sub="EmptyDirVolume"),
        "hostPath": _r("H", "only paths the admin allows (AllowedHostPaths)", sub="HostPathVolumeSource"),
        **{
            kind: _r("R", _NO_VOLUME)
            for kind in (
                "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "ephemeral", "fc",
                "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "image", "iscsi", "nfs",
                "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO",
                "storageos", "vsphereVolume",
            )
        },
    },
    "ConfigMapVolumeSource": {
        "defaultMode": _r("H"), "items": _r("H"), "name": _r("H"), "optional": _r("H"),
    },
    "SecretVolumeSource": {
        "defaultMode": _r("H"), "items": _r("H"), "optional": _r("H"), "secretName": _r("H"),
    },
    "ProjectedVolumeSource": {"defaultMode": _r("H"), "sources": _r("H", sub="VolumeProjection")},
    "VolumeProjection": {
        "clusterTrustBundle": _r("H", "as interLink sends it"),
        "configMap": _r("H"),
        "downwardAPI": _r("H"),
        "secret": _r("H"),
        "serviceAccountToken": _r("H", "as interLink sends it"),
    },
    "DownwardAPIVolumeSource": {"defaultMode": _r("H"), "items": _r("H")},
    "HostPathVolumeSource": {"path": _r("H"), "type": _r("H")},
    "EmptyDirVolume": {
        "medium": _r("W", "a directory on the job's disk, not a tmpfs"),
        "sizeLimit": _r("W", "the size is not limited"),
    },
}


@dataclass(frozen=True)
class Finding:
    path: str  # spec.containers[0].ports[0].hostPort
    verdict: Verdict
    note: str

    def __str__(self) -> str:
        return f"{self.path} ({self.note})" if self.note else self.path


@dataclass(frozen=True)
class FieldReport:
    """What a pod uses that the backend does not honour."""

    backend: str
    refused: tuple[Finding, ...] = ()
    warned: tuple[Finding, ...] = ()
    by_container: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # container -> warned fields

    def raise_refused(self) -> None:
        if not self.refused:
            return
        first, rest = self.refused[0], self.refused[1:]
        message = f"{first.note}: the {self.backend} backend refuses this pod"
        if rest:
            message += "; also refused: " + ", ".join(str(f) for f in rest)
        raise PodSpecError(first.path, message)

    def log_line(self) -> str:
        return NOTES_HEADER.format(backend=self.backend) + " (the pod runs without them): " + "; ".join(
            str(f) for f in self.warned
        )


def _key_text(key: str) -> str:
    """A field name as shown in a path: the pod's own text only when it is a plain name (a key is the pod
    author's: no control characters or megabytes reach the log and the status)."""
    if _PLAIN_KEY.match(key):
        return key
    return json.dumps(key[:KEY_SHOWN_MAX]) + ("..." if len(key) > KEY_SHOWN_MAX else "")


def _rule(table: Mapping[str, Rule], key: str) -> tuple[str, Rule] | None:
    """The rule of a key and the name it is listed under (the key, a `prefix-*` pattern or `*`)."""
    if key in table:
        return key, table[key]
    for pattern, rule in table.items():
        if pattern.endswith("-*") and key.startswith(pattern[:-1]):
            return pattern, rule
    return ("*", table["*"]) if "*" in table else None


def _walk(value: Any, kind: str, path: str, facts: Facts) -> Iterator[Finding]:
    table = FIELDS[kind]
    if isinstance(value, list):  # of objects: a list in a list is malformed, left to the parser (never recursed)
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield from _walk(item, kind, f"{path}[{index}]", facts)
        return
    if not isinstance(value, dict):
        return  # malformed values are the parser's to refuse
    for key, item in value.items():
        key = str(key)
        shown = _key_text(key)
        where = f"{path}[{shown}]" if kind == "ResourceList" else f"{path}.{shown}"
        found = _rule(table, key)
        if found is None:
            if item is not None:
                yield Finding(where, "warned", UNKNOWN_NOTE)
            continue
        listed, rule = found
        if rule.unused(item):
            continue
        verdict, note = rule.verdict(kind, listed, facts)
        if verdict != "honoured":
            yield Finding(where, verdict, note)
        elif rule.sub:
            yield from _walk(item, rule.sub, where, facts)


def _containers_of(spec: Mapping[str, Any], path: str) -> list[str]:
    """The containers a finding concerns: its own, those mounting its volume, else all of them."""
    init, main = spec.get("initContainers"), spec.get("containers")
    groups = {"spec.initContainers": init if isinstance(init, list) else [],
              "spec.containers": main if isinstance(main, list) else []}
    every = [(c.get("name"), c) for items in groups.values() for c in items if isinstance(c, dict)]
    for prefix, items in groups.items():
        if path.startswith(prefix + "["):
            index = int(path[len(prefix) + 1 : path.index("]")])
            entry = items[index] if index < len(items) and isinstance(items[index], dict) else {}
            return [str(entry.get("name", ""))]
    volumes = spec.get("volumes")
    if path.startswith("spec.volumes[") and isinstance(volumes, list):
        index = int(path[len("spec.volumes[") : path.index("]")])
        volume = volumes[index] if index < len(volumes) and isinstance(volumes[index], dict) else {}
        mounting = []
        for name, c in every:
            mounts = c.get("volumeMounts")
            if isinstance(mounts, list) and any(isinstance(m, dict) and m.get("name") == volume.get("name")
                                                for m in mounts):
                mounting.append(str(name))
        return mounting
    return [str(name) for name, _c in every]


def _group_without_user(spec: Mapping[str, Any]) -> Iterator[Finding]:
    """runAsGroup reaches a container only with a user (``--user=UID:GID``): alone it is not applied."""
    found = spec.get("securityContext")
    pod_sc: Mapping[str, Any] = found if isinstance(found, dict) else {}
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        for index, container in enumerate(items if isinstance(items, list) else ()):
            own = container.get("securityContext") if isinstance(container, dict) else None
            sc: Mapping[str, Any] = own if isinstance(own, dict) else {}
            if sc.get("runAsUser", pod_sc.get("runAsUser")) is not None:
                continue
            if sc.get("runAsGroup") is not None:
                yield Finding(f"spec.{key}[{index}].securityContext.runAsGroup", "warned", _GROUP_ALONE)
            elif pod_sc.get("runAsGroup") is not None:
                yield Finding("spec.securityContext.runAsGroup", "warned", _GROUP_ALONE)


_GROUP_ALONE = "applied only together with runAsUser: the image's user and group run the container"


def _capped(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    if len(findings) <= MAX_FINDINGS:
        return findings
    rest = len(findings) - MAX_FINDINGS
    return (*findings[:MAX_FINDINGS], Finding("...", findings[0].verdict, f"{rest} more fields"))


def check_pod(raw: Mapping[str, Any], facts: Facts) -> FieldReport:
    """Walk the pod's spec against FIELDS for this backend (the pod was parsed already)."""
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        return FieldReport(facts.backend)
    findings: list[Finding] = []
    for finding in [*_walk(spec, "PodSpec", "spec", facts), *_group_without_user(spec)]:
        if all(finding.path != seen.path for seen in findings):
            findings.append(finding)
    findings.sort(key=lambda f: f.path)
    warned = _capped(tuple(f for f in findings if f.verdict == "warned"))
    by_container: dict[str, list[str]] = {}
    for finding in warned:
        for name in _containers_of(spec, finding.path):
            by_container.setdefault(name, []).append(str(finding))
    return FieldReport(
        facts.backend,
        refused=_capped(tuple(f for f in findings if f.verdict == "refused")),
        warned=warned,
        by_container={name: tuple(notes) for name, notes in by_container.items()},
    )


# ------------------------------------------------------------------------------------------- docs

DOC_BEGIN = "<!-- BEGIN field-reference: generated by `interlink-plugin field-reference`; a test keeps it current -->"
DOC_END = "<!-- END field-reference -->"
_PATHS = {
    "PodSpec": "spec", "Affinity": "spec.affinity", "PodOS": "spec.os",
    "PodSecurityContext": "spec.securityContext", "Volume": "spec.volumes[]",
    "EmptyDirVolume": "spec.volumes[].emptyDir", "Container": "spec.containers[] and spec.initContainers[]",
    "EnvVar": "…env[]", "ContainerPort": "…ports[]", "ResourceRequirements": "…resources",
    "ResourceList": "…resources.limits / requests keys", "SecurityContext": "…securityContext (container)",
    "Capabilities": "…securityContext.capabilities", "Probe": "…startupProbe / livenessProbe / readinessProbe",
    "Lifecycle": "…lifecycle", "LifecycleHandler": "…lifecycle.postStart / preStop", "VolumeMount": "…volumeMounts[]",
    "ConfigMapVolumeSource": "spec.volumes[].configMap", "SecretVolumeSource": "spec.volumes[].secret",
    "ProjectedVolumeSource": "spec.volumes[].projected", "VolumeProjection": "spec.volumes[].projected.sources[]",
    "DownwardAPIVolumeSource": "spec.volumes[].downwardAPI", "HostPathVolumeSource": "spec.volumes[].hostPath",
    "ExecAction": "…probe or hook .exec", "HTTPGetAction": "…probe or hook .httpGet",
    "TCPSocketAction": "…probe .tcpSocket", "SleepAction": "…hook .sleep",
}  # fmt: skip
_SHORT = {"PodSpec": "spec.", "Affinity": "spec.affinity.", "PodOS": "spec.os.",
          "PodSecurityContext": "spec.securityContext.", "Volume": "spec.volumes[].",
          "EmptyDirVolume": "spec.volumes[].emptyDir.", "Container": "", "ResourceList": "resources.",
          "SecurityContext": "securityContext.", "Probe": "probe.", "Capabilities": "securityContext.capabilities.",
          "LifecycleHandler": "hook.", "ContainerPort": "ports[].", "EnvVar": "env[].",
          "VolumeMount": "volumeMounts[].", "ResourceRequirements": "resources.", "Lifecycle": "lifecycle."}


def _short(kind: str) -> str:
    return _SHORT.get(kind, kind + ".")


_SHOWN = {"honoured": "honoured", "refused": "**422**", "warned": "warned"}


def _cell(kind: str, name: str, rule: Rule, column: FieldColumn) -> str:
    verdict = _SHOWN[_CODES[column.code(kind, name, rule)]]
    condition = column.condition(rule.when)
    if condition is None or verdict != "honoured":
        return verdict
    if not all(condition.holds(Facts(column.name, probes, runtime, network)) for probes in (True, False)
               for runtime in (USER_SWITCHING_RUNTIME, "apptainer", "none") for network in ("", "host")):
        return f"honoured ({_SHOWN[condition.otherwise]} {condition.label})"
    return verdict


def _note(kind: str, name: str, rule: Rule, columns: Sequence[FieldColumn]) -> str:
    """The note of a field for the docs: the table's, or each backend's own words followed by the backends
    that say them ("the job's CPUs (A, B); --cpus (C)")."""
    said: dict[str, list[str]] = {}
    for column in columns:
        said.setdefault(column.note(kind, name, rule), []).append(column.title)
    if list(said) in ([], [rule.note]):
        return rule.note
    return "; ".join(f"{text} ({', '.join(titles)})" for text, titles in said.items() if text)


def _default_text(rule: Rule) -> str:
    if rule.default is _UNSET:
        return ""
    if callable(rule.default):
        return " (default: all `NotRequired`)"
    return f" (default `{str(rule.default).lower() if isinstance(rule.default, bool) else rule.default}`)"


def field_reference_markdown(columns: Sequence[FieldColumn]) -> str:
    """Per backend (its column), what is honoured, refused (422) and warned (docs/kubelet-parity.md holds it)."""
    lines = [
        DOC_BEGIN, "",
        "Every field of a pod and what each backend does with it (`interlink_plugins/core/model/podfields.py`). A "
        "field",
        "is used only with a value other than its Kubernetes default (shown in brackets): what the API server and",
        "interLink's virtual kubelet add to every pod is never refused nor warned. **422**: the create is refused,",
        "naming the field. warned: the pod runs without it; the plugin logs the field once, and each affected",
        "container's waiting and terminated status messages name it (Kubernetes' running state has no message).",
        "A field the table does not know (a newer Kubernetes) is warned, naming its path.",
    ]  # fmt: skip
    lines += ["", "| backend | refused (422) | warned |", "| --- | --- | --- |"]
    for column in columns:
        found: dict[str, list[str]] = {"refused": [], "warned": []}
        for kind, table in FIELDS.items():
            for name, rule in table.items():
                verdict = _CODES[column.code(kind, name, rule)]
                condition = column.condition(rule.when)
                if verdict != "honoured" and not (kind == "Volume" and verdict == "refused" and name != "name"):
                    found[verdict].append(f"`{_short(kind)}{name}`")
                elif condition is not None and _cell(kind, name, rule, column) != "honoured":
                    # only with a setting of the site config
                    found[condition.otherwise].append(f"`{_short(kind)}{name}` ({condition.label})")
        if any(_CODES[column.code("Volume", name, rule)] == "refused" for name, rule in FIELDS["Volume"].items()):
            found["refused"].append("every volume type but configMap, secret, projected, downwardAPI, emptyDir, "
                                    "hostPath")
        lines.append(f"| {column.title} | {', '.join(found['refused'])} | {', '.join(found['warned'])} |")
    lines += ["", "Everything else is honoured (container fields are shown without their `spec.containers[]` prefix).",
              "Per field:"]
    for kind, table in FIELDS.items():
        titles = "".join(f" {column.title} |" for column in columns)
        lines += ["", f"#### `{_PATHS.get(kind, kind)}`", "", f"| field |{titles} note |",
                  "| --- |" + " --- |" * len(columns) + " --- |"]
        for name, rule in table.items():
            shown = "any other resource" if name == "*" else f"`{name}`"
            cells = " | ".join(_cell(kind, name, rule, column) for column in columns)
            lines.append(f"| {shown}{_default_text(rule)} | {cells} | {_note(kind, name, rule, columns)} |")
    lines += ["", DOC_END]
    return "\n".join(lines) + "\n"


def splice_docs(text: str, columns: Sequence[FieldColumn]) -> str:
    """The doc's text with the generated section between its markers replaced (appended if absent)."""
    generated = field_reference_markdown(columns)
    if DOC_BEGIN in text and DOC_END in text:
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END + "\n")
        return head + generated + tail
    return text.rstrip("\n") + "\n\n" + generated
