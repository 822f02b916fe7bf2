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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from interlink_plugins.core.errors import PodSpecError

Verdict = Literal["honoured", "refused", "warned"]
BACKENDS = ("slurm", "htcondor", "podman")
_CODES: Mapping[str, Verdict] = {"H": "honoured", "R": "refused", "W": "warned"}
_UNSET: Any = object()
UNKNOWN_NOTE = "not a field this plugin knows (a newer Kubernetes?): ignored"
NOTES_HEADER = "fields not honoured by the {backend} backend"
MAX_FINDINGS = 20  # per verdict and pod: the rest is counted (the log line and the status stay short)
KEY_SHOWN_MAX = 64
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")


@dataclass(frozen=True)
class Facts:
    """What of the config changes a verdict: probes are off on batch backends unless EnableProbes; a
    container's user and group reach it only through runtime podman on a batch backend."""

    backend: str
    probes: bool = True
    runtime: str = "podman"
    pod_network: str = ""  # PodmanPodNetwork

    @classmethod
    def of(cls, config: Any) -> Facts:
        return cls(str(config.backend), bool(config.enable_probes), str(config.container_runtime),
                   str(config.podman_pod_network))


@dataclass(frozen=True)
class Condition:
    """A setting of the site's config a field is honoured with; without it the field is `otherwise`."""

    holds: Callable[[Facts], bool]
    why: str  # the note when it does not hold
    label: str  # when it does not hold, for the docs
    otherwise: Verdict = "warned"


CONDITIONS: Mapping[str, Condition] = {
    "probes": Condition(lambda f: f.backend == "podman" or f.probes, "probes run only with EnableProbes: true",
                        "without EnableProbes"),
    "podman-runtime": Condition(
        lambda f: f.backend == "podman" or f.runtime == "podman",
        "only ContainerRuntime podman runs a container as another group", "without runtime podman",
    ),
    "htcondor-podman-runtime": Condition(
        lambda f: f.backend != "htcondor" or f.runtime == "podman",
        "on HTCondor only ContainerRuntime podman runs a container as another user", "without runtime podman",
    ),
    "host-network": Condition(
        lambda f: f.backend != "podman" or f.pod_network == "host",
        "a Podman pod's network is the admin's PodmanPodNetwork", "unless PodmanPodNetwork is host", "refused",
    ),
    "pull-policy": Condition(
        lambda f: f.backend == "podman" or f.runtime not in ("apptainer", "singularity"),
        "apptainer converts an image once and runs the converted one after (IfNotPresent)",
        "with runtime apptainer",
    ),
}


@dataclass(frozen=True)
class Rule:
    """One field: `code` is three letters, SLURM/HTCondor/Podman, H honoured, R refused, W warned."""

    code: str
    note: str = ""
    sub: str = ""  # the type of its value (or of each element of a list), whose fields are checked in turn
    default: Any = _UNSET  # a value that means "not used" besides null/false/""/[]/{}
    when: str = ""  # a condition (CONDITIONS): honoured only when it holds

    def verdict(self, facts: Facts) -> tuple[Verdict, str]:
        verdict = _CODES[self.code[BACKENDS.index(facts.backend)]]
        if verdict == "honoured" and self.when:
            condition = CONDITIONS[self.when]
            if not condition.holds(facts):
                return condition.otherwise, condition.why
        return verdict, self.note

    def unused(self, value: Any) -> bool:
        if value is None:
            return True
        if self.default is not _UNSET:
            return bool(self.default(value)) if callable(self.default) else value == self.default
        return value is False or value in ("", [], {})


def _r(code: str, note: str = "", sub: str = "", default: Any = _UNSET, when: str = "") -> Rule:
    assert len(code) == 3 and set(code) <= set(_CODES), code
    return Rule(code, note, sub, default, when)


_K8S = "applied by Kubernetes before the pod reached the virtual node"
_VK = "applied by interLink's virtual kubelet before the plugin sees the pod"
_PLACED = "Kubernetes' scheduler placed the pod on the virtual node; the backend places its job without it"
_NO_NODE = "a batch job runs on the node its scheduler picks: no port is published there"
_BY_RUNNER = "the runner in the job does it (SLURM, HTCondor); podman itself (Podman)"
_NO_VOLUME = "this volume type is not available: configMap, secret, projected, downwardAPI, emptyDir, hostPath are"
_HARDENING = "not applied: the container runs without it"


def _resize_default(value: Any) -> bool:
    """The API server's resizePolicy (NotRequired for every resource) changes nothing: interLink never resizes."""
    return isinstance(value, list) and all(isinstance(p, dict) and p.get("restartPolicy") in (None, "NotRequired")
                                           for p in value)


FIELDS: Mapping[str, Mapping[str, Rule]] = {
    "PodSpec": {
        "activeDeadlineSeconds": _r("HHH", "the pod ends DeadlineExceeded when it is exceeded"),
        "affinity": _r("HHH", sub="Affinity"),
        "automountServiceAccountToken": _r("HHH", _VK + " (the kube-api-access volume)", default=True),
        "containers": _r("HHH", sub="Container"),
        "dnsConfig": _r("WWW", "the node's resolver configuration is used"),
        "dnsPolicy": _r("WWW", "the node's resolver is used (there is no cluster DNS off the cluster)",
                        default="ClusterFirst"),
        "enableServiceLinks": _r("HHH", _VK + " (it builds the env)", default=True),
        "ephemeralContainers": _r("WWW", "debug containers are not run"),
        "hostAliases": _r("WWW", "the node's /etc/hosts is used"),
        "hostIPC": _r("RRR", "no backend gives a pod the host's IPC namespace"),
        "hostNetwork": _r("HHH", "batch jobs run in the compute node's network whatever the pod asks (SLURM, "
                                 "HTCondor); Podman with PodmanPodNetwork host", when="host-network"),
        "hostPID": _r("RRR", "no backend gives a pod the host's PID namespace"),
        "hostUsers": _r("WWW", "no user namespace is made for the pod", default=True),
        "hostname": _r("WWW", "the hostname is the node's (batch) or the pod's name (Podman)"),
        "imagePullSecrets": _r("WWW", "registry credentials come from the site (RegistryCredentials, podman's "
                                      "auth file), not from the pod"),
        "initContainers": _r("HHH", sub="Container"),
        "nodeName": _r("HHH", "the virtual node, " + _K8S),
        "nodeSelector": _r("HHH", "chose the virtual node, " + _K8S),
        "os": _r("HHH", sub="PodOS"),
        "overhead": _r("WWW", "a RuntimeClass overhead is not added to the job's request"),
        "preemptionPolicy": _r("WWW", "the backend's own priorities and preemption apply",
                               default="PreemptLowerPriority"),
        "priority": _r("WWW", "the job's priority in the backend is not set from it", default=0),
        "priorityClassName": _r("WWW", "the job's priority in the backend is not set from it"),
        "readinessGates": _r("WWW", "the gates' conditions are not evaluated: readiness is the containers'"),
        "resourceClaims": _r("RRR", "dynamic resource allocation (DRA) is not available"),
        "resources": _r("WWW", "pod-level resources are not read: the containers' resources size the job"),
        "restartPolicy": _r("HHH", _BY_RUNNER, default="Always"),
        "runtimeClassName": _r("WWW", "the backend's configured container runtime runs every container"),
        "schedulerName": _r("HHH", "the scheduler that bound the pod to the virtual node",
                            default="default-scheduler"),
        "schedulingGates": _r("HHH", "lifted before the pod was bound to the virtual node"),
        "securityContext": _r("HHH", sub="PodSecurityContext"),
        "serviceAccount": _r("HHH", "its token is in the kube-api-access volume interLink mounts"),
        "serviceAccountName": _r("HHH", "its token is in the kube-api-access volume interLink mounts"),
        "setHostnameAsFQDN": _r("WWW", "the hostname is not a cluster FQDN"),
        "shareProcessNamespace": _r("RRR", "no backend promises the containers one PID namespace"),
        "subdomain": _r("WWW", "no cluster DNS name is made for the pod"),
        "terminationGracePeriodSeconds": _r("HHH", "at most the admin's GracePeriodCap"),
        "tolerations": _r("HHH", "let the pod onto the virtual node, " + _K8S),
        "topologySpreadConstraints": _r("WWW", _PLACED),
        "volumes": _r("HHH", sub="Volume"),
    },
    "Affinity": {
        "nodeAffinity": _r("HHH", "chose the virtual node, " + _K8S),
        "podAffinity": _r("WWW", _PLACED),
        "podAntiAffinity": _r("WWW", _PLACED),
    },
    "PodOS": {"name": _r("RRR", "every backend runs Linux containers", default="linux")},
    "Container": {
        "args": _r("HHH"),
        "command": _r("HHH"),
        "env": _r("HHH", sub="EnvVar"),
        "envFrom": _r("RRR", "interLink resolves envFrom into env before the plugin; an unresolved one cannot "
                             "be served"),
        "image": _r("HHH"),
        "imagePullPolicy": _r("HHH", "unless the admin's PullPolicy overrides it", default="IfNotPresent",
                              when="pull-policy"),
        "lifecycle": _r("HHH", sub="Lifecycle"),
        "livenessProbe": _r("HHH", sub="Probe", when="probes"),
        "name": _r("HHH"),
        "ports": _r("HHH", sub="ContainerPort"),
        "readinessProbe": _r("HHH", sub="Probe", when="probes"),
        "resizePolicy": _r("WWW", "interLink never resizes a running pod", default=_resize_default),
        "resources": _r("HHH", sub="ResourceRequirements"),
        "restartPolicy": _r("HHH", "a sidecar (an init container with Always)"),
        "securityContext": _r("HHH", sub="SecurityContext"),
        "startupProbe": _r("HHH", sub="Probe", when="probes"),
        "stdin": _r("WWW", "no stdin is attached"),
        "stdinOnce": _r("WWW", "no stdin is attached"),
        "terminationMessagePath": _r("WWW", "the file is not read: the message is the runner's",
                                     default="/dev/termination-log"),
        "terminationMessagePolicy": _r("WWW", "the message is the runner's, never the log's tail", default="File"),
        "tty": _r("WWW", "no terminal is attached"),
        "volumeDevices": _r("RRR", "raw block devices are not available"),
        "volumeMounts": _r("HHH", sub="VolumeMount"),
        "workingDir": _r("HHH"),
    },
    "EnvVar": {
        "name": _r("HHH"),
        "value": _r("HHH"),
        "valueFrom": _r("WWW", "interLink resolves it before the plugin; left unresolved the variable gets "
                               "`value` (empty)"),
    },
    "ContainerPort": {
        "containerPort": _r("HHH", "reachable at the node's address (batch jobs share its network) or the pod's"),
        "hostIP": _r("RRH", _NO_NODE),
        "hostPort": _r("RRH", _NO_NODE + " (Podman publishes it on the pod)"),
        "name": _r("HHH", "named ports of probes and hooks"),
        "protocol": _r("HHH", default="TCP"),
    },
    "ResourceRequirements": {
        "claims": _r("RRR", "dynamic resource allocation (DRA) is not available"),
        "limits": _r("HHH", sub="ResourceList"),
        "requests": _r("HHH", sub="ResourceList"),
    },
    # keys of limits/requests; "*" any other (extended) resource, "prefix-*" a family
    "ResourceList": {
        "cpu": _r("HHH", "the job's CPUs (SLURM, HTCondor); --cpus and --cpu-shares (Podman)"),
        "memory": _r("HHH", "the job's memory (SLURM, HTCondor); --memory (Podman)"),
        "nvidia.com/gpu": _r("HHH", "--gres=gpu (SLURM), request_gpus (HTCondor), CDI devices (Podman)"),
        "amd.com/gpu": _r("HHH", "--gres=gpu (SLURM), request_gpus (HTCondor), CDI devices (Podman)"),
        "ephemeral-storage": _r("HHW", "--tmp (SLURM), request_disk (HTCondor); Podman does not limit it"),
        "hugepages-*": _r("WWW", "huge pages are not reserved"),
        "*": _r("HRH", "through GresMap (SLURM) or GpuCdiMap (Podman), a 422 when they do not map it; HTCondor has "
                       "no equivalent"),
    },
    "SecurityContext": {
        "allowPrivilegeEscalation": _r("WWW", _HARDENING, default=True),
        "appArmorProfile": _r("WWW", _HARDENING),
        "capabilities": _r("HHH", sub="Capabilities"),
        "privileged": _r("RRR", "no backend runs privileged containers"),
        "procMount": _r("WWW", "the runtime's default /proc is used", default="Default"),
        "readOnlyRootFilesystem": _r("WWW", _HARDENING),
        "runAsGroup": _r("HHH", "the container's group (runtime podman: --user)", when="podman-runtime"),
        "runAsNonRoot": _r("WWW", "the image's user is not checked"),
        "runAsUser": _r("HHH", "the job's user, as the namespace policy allows (SLURM); the container's user "
                               "(HTCondor runtime podman, Podman)", when="htcondor-podman-runtime"),
        "seLinuxOptions": _r("WWW", _HARDENING),
        "seccompProfile": _r("WWW", "the runtime's default seccomp profile applies"),
        "windowsOptions": _r("HHH", "ignored on Linux, as by Kubernetes"),
    },
    "Capabilities": {
        "add": _r("RRR", "no backend grants a container extra capabilities"),
        "drop": _r("WWW", _HARDENING),
    },
    "PodSecurityContext": {
        "appArmorProfile": _r("WWW", _HARDENING),
        "fsGroup": _r("WWW", "volumes are not given to the group (emptyDirs are 0777)"),
        "fsGroupChangePolicy": _r("WWW", "volumes are not given to a group"),
        "runAsGroup": _r("HHH", "the containers' group (runtime podman: --user)", when="podman-runtime"),
        "runAsNonRoot": _r("WWW", "the image's user is not checked"),
        "runAsUser": _r("HHH", "the job's user, as the namespace policy allows (SLURM); the containers' user "
                               "(HTCondor runtime podman, Podman)", when="htcondor-podman-runtime"),
        "seLinuxChangePolicy": _r("WWW", _HARDENING),
        "seLinuxOptions": _r("WWW", _HARDENING),
        "seccompProfile": _r("WWW", "the runtime's default seccomp profile applies"),
        "supplementalGroups": _r("WWW", "the containers get no extra groups"),
        "supplementalGroupsPolicy": _r("WWW", "the containers get no extra groups", default="Merge"),
        "sysctls": _r("RRR", "no backend sets sysctls for a pod"),
        "windowsOptions": _r("HHH", "ignored on Linux, as by Kubernetes"),
    },
    "Probe": {
        "exec": _r("HHH", sub="ExecAction"),
        "failureThreshold": _r("HHH"),
        "grpc": _r("RRR", "gRPC probes are not available: use httpGet, tcpSocket or exec"),
        "httpGet": _r("HHH", sub="HTTPGetAction"),
        "initialDelaySeconds": _r("HHH"),
        "periodSeconds": _r("HHH"),
        "successThreshold": _r("HHH"),
        "tcpSocket": _r("HHH", sub="TCPSocketAction"),
        "terminationGracePeriodSeconds": _r("HHH"),
        "timeoutSeconds": _r("HHH"),
    },
    "Lifecycle": {
        "postStart": _r("HHH", sub="LifecycleHandler"),
        "preStop": _r("HHH", sub="LifecycleHandler"),
        "stopSignal": _r("WWW", "the container is stopped with SIGTERM"),
    },
    "LifecycleHandler": {
        "exec": _r("HHH", sub="ExecAction"),
        "httpGet": _r("HHH", sub="HTTPGetAction"),
        "sleep": _r("HHH", sub="SleepAction"),
        "tcpSocket": _r("RRR", "not a hook Kubernetes runs either: use exec, httpGet or sleep"),
    },
    "ExecAction": {"command": _r("HHH")},
    "HTTPGetAction": {
        "host": _r("HHH"), "httpHeaders": _r("HHH"), "path": _r("HHH"), "port": _r("HHH"), "scheme": _r("HHH"),
    },
    "TCPSocketAction": {"host": _r("HHH"), "port": _r("HHH")},
    "SleepAction": {"seconds": _r("HHH")},
    "VolumeMount": {
        "mountPath": _r("HHH"),
        "mountPropagation": _r("RRR", "mount propagation is not available", default="None"),
        "name": _r("HHH"),
        "readOnly": _r("HHH"),
        "recursiveReadOnly": _r("WWW", "a read-only mount is not made recursively read-only", default="Disabled"),
        "subPath": _r("HHH"),
        "subPathExpr": _r("RRR", "not expanded: use subPath"),
    },
    "Volume": {
        "name": _r("HHH"),
        "configMap": _r("HHH", sub="ConfigMapVolumeSource"),
        "secret": _r("HHH", sub="SecretVolumeSource"),
        "projected": _r("HHH", "the files interLink sends (service-account token, configMaps, secrets, downward "
                               "API)", sub="ProjectedVolumeSource"),
        "downwardAPI": _r("HHH", sub="DownwardAPIVolumeSource"),
        "emptyDir": _r("HHH", "a directory in the job dir, shared by the pod's containers", sub="EmptyDirVolume"),
        "hostPath": _r("HHH", "only paths the admin allows (AllowedHostPaths)", sub="HostPathVolumeSource"),
        **{
            kind: _r("RRR", _NO_VOLUME)
            for kind in (
                "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "ephemeral", "fc",
                "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "image", "iscsi", "nfs",
                "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO",
                "storageos", "vsphereVolume",
            )
        },
    },
    "ConfigMapVolumeSource": {
        "defaultMode": _r("HHH"), "items": _r("HHH"), "name": _r("HHH"), "optional": _r("HHH"),
    },
    "SecretVolumeSource": {
        "defaultMode": _r("HHH"), "items": _r("HHH"), "optional": _r("HHH"), "secretName": _r("HHH"),
    },
    "ProjectedVolumeSource": {"defaultMode": _r("HHH"), "sources": _r("HHH", sub="VolumeProjection")},
    "VolumeProjection": {
        "clusterTrustBundle": _r("HHH", "as interLink sends it"),
        "configMap": _r("HHH"),
        "downwardAPI": _r("HHH"),
        "secret": _r("HHH"),
        "serviceAccountToken": _r("HHH", "as interLink sends it"),
    },
    "DownwardAPIVolumeSource": {"defaultMode": _r("HHH"), "items": _r("HHH")},
    "HostPathVolumeSource": {"path": _r("HHH"), "type": _r("HHH")},
    "EmptyDirVolume": {
        "medium": _r("WWW", "a directory on the job's disk, not a tmpfs"),
        "sizeLimit": _r("WWW", "the size is not limited"),
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


def _rule(table: Mapping[str, Rule], key: str) -> Rule | None:
    if key in table:
        return table[key]
    for pattern, rule in table.items():
        if pattern.endswith("-*") and key.startswith(pattern[:-1]):
            return rule
    return table.get("*")


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
        rule = _rule(table, key)
        if rule is None:
            if item is not None:
                yield Finding(where, "warned", UNKNOWN_NOTE)
            continue
        if rule.unused(item):
            continue
        verdict, note = rule.verdict(facts)
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
_NAMES = {"slurm": "SLURM", "htcondor": "HTCondor", "podman": "Podman"}
_SHORT = {"PodSpec": "spec.", "Affinity": "spec.affinity.", "PodOS": "spec.os.",
          "PodSecurityContext": "spec.securityContext.", "Volume": "spec.volumes[].",
          "EmptyDirVolume": "spec.volumes[].emptyDir.", "Container": "", "ResourceList": "resources.",
          "SecurityContext": "securityContext.", "Probe": "probe.", "Capabilities": "securityContext.capabilities.",
          "LifecycleHandler": "hook.", "ContainerPort": "ports[].", "EnvVar": "env[].",
          "VolumeMount": "volumeMounts[].", "ResourceRequirements": "resources.", "Lifecycle": "lifecycle."}


def _short(kind: str) -> str:
    return _SHORT.get(kind, kind + ".")


_SHOWN = {"honoured": "honoured", "refused": "**422**", "warned": "warned"}


def _cell(rule: Rule, backend: str) -> str:
    verdict = _SHOWN[_CODES[rule.code[BACKENDS.index(backend)]]]
    if rule.when and verdict == "honoured":
        condition = CONDITIONS[rule.when]
        if not all(condition.holds(Facts(backend, probes, runtime, network)) for probes in (True, False)
                   for runtime in ("podman", "apptainer", "none") for network in ("", "host")):
            return f"honoured ({_SHOWN[condition.otherwise]} {condition.label})"
    return verdict


def _default_text(rule: Rule) -> str:
    if rule.default is _UNSET:
        return ""
    if callable(rule.default):
        return " (default: all `NotRequired`)"
    return f" (default `{str(rule.default).lower() if isinstance(rule.default, bool) else rule.default}`)"


def field_reference_markdown() -> str:
    """Per backend, what is honoured, refused (422) and warned (docs/kubelet-parity.md holds it)."""
    lines = [
        DOC_BEGIN, "",
        "Every field of a pod and what each backend does with it (`interlink_plugins/core/podfields.py`). A field",
        "is used only with a value other than its Kubernetes default (shown in brackets): what the API server and",
        "interLink's virtual kubelet add to every pod is never refused nor warned. **422**: the create is refused,",
        "naming the field. warned: the pod runs without it; the plugin logs the field once, and each affected",
        "container's waiting and terminated status messages name it (Kubernetes' running state has no message).",
        "A field the table does not know (a newer Kubernetes) is warned, naming its path.",
    ]  # fmt: skip
    lines += ["", "| backend | refused (422) | warned |", "| --- | --- | --- |"]
    for backend in BACKENDS:
        found: dict[str, list[str]] = {"refused": [], "warned": []}
        for kind, table in FIELDS.items():
            for name, rule in table.items():
                verdict = _CODES[rule.code[BACKENDS.index(backend)]]
                if verdict != "honoured" and not (kind == "Volume" and verdict == "refused" and name != "name"):
                    found[verdict].append(f"`{_short(kind)}{name}`")
                elif rule.when and _cell(rule, backend) != "honoured":  # only with a setting of the site config
                    condition = CONDITIONS[rule.when]
                    found[condition.otherwise].append(f"`{_short(kind)}{name}` ({condition.label})")
        if any(_CODES[rule.code[BACKENDS.index(backend)]] == "refused" for rule in FIELDS["Volume"].values()):
            found["refused"].append("every volume type but configMap, secret, projected, downwardAPI, emptyDir, "
                                    "hostPath")
        lines.append(f"| {_NAMES[backend]} | {', '.join(found['refused'])} | {', '.join(found['warned'])} |")
    lines += ["", "Everything else is honoured (container fields are shown without their `spec.containers[]` prefix).",
              "Per field:"]
    for kind, table in FIELDS.items():
        lines += ["", f"#### `{_PATHS.get(kind, kind)}`", "", "| field | SLURM | HTCondor | Podman | note |",
                  "| --- | --- | --- | --- | --- |"]
        for name, rule in table.items():
            shown = "any other resource" if name == "*" else f"`{name}`"
            cells = " | ".join(_cell(rule, backend) for backend in BACKENDS)
            lines.append(f"| {shown}{_default_text(rule)} | {cells} | {rule.note} |")
    lines += ["", DOC_END]
    return "\n".join(lines) + "\n"


def splice_docs(text: str) -> str:
    """The doc's text with the generated section between its markers replaced (appended if absent)."""
    generated = field_reference_markdown()
    if DOC_BEGIN in text and DOC_END in text:
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END + "\n")
        return head + generated + tail
    return text.rstrip("\n") + "\n\n" + generated
