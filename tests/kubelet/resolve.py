"""Turn plain Kubernetes manifests into the bodies interLink 0.6.2 sends a plugin.

What happens to a pod between ``kubectl apply`` and the plugin's ``/create``, in order:

1. the API server: a uid, defaults (restartPolicy, imagePullPolicy from the tag, probe timings,
   volume ``defaultMode`` 420, requests copied from limits, tolerations, ...), the
   service-account admission's ``kube-api-access-<5>`` projected volume mounted read-only at
   ``/var/run/secrets/kubernetes.io/serviceaccount`` in every container and init container;
   Secrets' ``stringData`` folded into base64 ``data``; a Job's pod named ``<job>-<5 chars>``;
2. the virtual-kubelet library: ``env[].valueFrom`` and ``envFrom`` resolved into plain
   values (``envFrom`` emptied, the env rebuilt from a map, so its order is not kept), ``$(VAR)``
   in values expanded, the ``kubernetes`` service's variables added;
3. interLink's virtual kubelet (pkg/virtualkubelet/execute.go): downwardAPI volumes rewritten
   into projected volumes; every projected volume's files computed into a "projected volume
   map" (service-account token, ``kube-root-ca.crt``, configMap sources, downwardAPI fields);
   projected Secret sources are not handled; pod status Pending with podIP/hostIP 127.0.0.1;
4. interLink's API server (pkg/interlink/api/func.go): one ``container`` entry per init
   container then container, each with the ConfigMaps, Secrets and projected maps of the volumes
   THAT container mounts (``null`` when none), ``emptyDirs`` always ``null``, a zero ``jobConfig``.

Interface: :class:`Cluster` holds the ConfigMaps and Secrets of the manifests;
:func:`pods_from_manifests` gives one :class:`PodTemplate` per Pod or Job; ``template.body()``
is the ``/create`` body of one attempt (a Job makes a new pod per retry).
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import secrets as _secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NODE_NAME = "virtual-kubelet"
POD_IP = "127.0.0.1"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# the generated-name alphabet of the API server (k8s.io/apiserver names.SimpleNameGenerator)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_KUBERNETES_SERVICE = {"host": "10.96.0.1", "port": "443"}
# a CA the way kube-root-ca.crt carries it: PEM, lines of 64, trailing newline
_CA_CRT = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n"
    "dmVyLWNhQDE3MDAwMDAwMDAwHhcNMjMxMTE0MjIxMzIwWhcNMzMxMTExMjIxMzIw\n"
    "WjAjMSEwHwYDVQQDDBhrM3Mtc2VydmVyLWNhQDE3MDAwMDAwMDAwWTATBgcqhkjO\n"
    "PQIBBggqhkjOPQMBBwNCAAQ4LrJ0ilcnterlinkpluginsteststandinCAxx0\n"
    "-----END CERTIFICATE-----\n"
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_suffix(rng: random.Random | None = None) -> str:
    """Five characters of the API server's generateName alphabet."""
    pick = rng.choice if rng else _secrets.choice
    return "".join(pick(_NAME_ALPHABET) for _ in range(5))


@dataclass
class Cluster:
    """The objects of the manifests that pods refer to (ConfigMaps, Secrets), as the API server stores them."""

    namespace: str = "default"
    config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, manifest: Mapping[str, Any]) -> None:
        kind = manifest.get("kind")
        meta = manifest.get("metadata") or {}
        name = str(meta["name"])
        stored_meta = {
            "name": name, "namespace": meta.get("namespace") or self.namespace, "uid": str(uuid.uuid4()),
            "resourceVersion": "1", "creationTimestamp": _now(),
        }  # fmt: skip
        if kind == "ConfigMap":
            stored: dict[str, Any] = {"metadata": stored_meta}
            if manifest.get("data"):
                stored["data"] = {str(k): str(v) for k, v in manifest["data"].items()}
            if manifest.get("binaryData"):
                stored["binaryData"] = dict(manifest["binaryData"])
            self.config_maps[name] = stored
        elif kind == "Secret":
            data = {str(k): str(v) for k, v in (manifest.get("data") or {}).items()}
            for key, value in (manifest.get("stringData") or {}).items():
                data[str(key)] = base64.b64encode(str(value).encode()).decode()
            self.secrets[name] = {"metadata": stored_meta, "data": data, "type": manifest.get("type", "Opaque")}
        else:
            raise ValueError(f"Cluster holds ConfigMaps and Secrets, not {kind}")

    def config_map_data(self, name: str) -> dict[str, str]:
        try:
            return dict(self.config_maps[name].get("data") or {})
        except KeyError:
            raise LookupError(f'configmap "{name}" not found') from None

    def secret_data(self, name: str) -> dict[str, str]:
        """Decoded values (the virtual kubelet turns Secret bytes into strings for env)."""
        try:
            raw = self.secrets[name]["data"]
        except KeyError:
            raise LookupError(f'secret "{name}" not found') from None
        return {k: base64.b64decode(v).decode() for k, v in raw.items()}


# --- 1. the API server ------------------------------------------------------------------------


def _default_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_probe(probe: dict[str, Any]) -> None:
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):  # fmt: skip
        probe.setdefault(key, value)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("scheme", "HTTP")
        probe["httpGet"].setdefault("path", "/")


def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("imagePullPolicy", _default_pull_policy(str(c.get("image", ""))))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    resources = c.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for key, value in limits.items():
            requests.setdefault(key, value)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in c:
            _default_probe(c[kind])
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")


def _default_volume(v: dict[str, Any]) -> None:
    for kind in ("configMap", "secret", "projected", "downwardAPI"):
        if kind in v:
            v[kind].setdefault("defaultMode", 420)
    for item in (v.get("downwardAPI") or {}).get("items") or []:
        if "fieldRef" in item:
            item["fieldRef"].setdefault("apiVersion", "v1")


def _service_account_volume(rng: random.Random) -> dict[str, Any]:
    return {
        "name": f"kube-api-access-{generated_suffix(rng)}",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    }  # fmt: skip


def admit_pod(manifest: Mapping[str, Any], namespace: str, rng: random.Random) -> dict[str, Any]:
    """The pod as the API server stores it (defaults, uid, service-account volume)."""
    pod = copy.deepcopy(dict(manifest))
    meta = pod.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    meta["uid"] = str(uuid.uuid4())
    meta.setdefault("resourceVersion", "1")
    meta["creationTimestamp"] = _now()
    meta.setdefault("annotations", {})
    meta.setdefault("labels", {})
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    spec["nodeName"] = NODE_NAME
    volumes = spec.setdefault("volumes", [])
    for volume in volumes:
        _default_volume(volume)
    every = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    if spec.get("automountServiceAccountToken", True):
        sa_volume = _service_account_volume(rng)
        volumes.append(sa_volume)
        for c in every:
            c.setdefault("volumeMounts", []).append(
                {"name": sa_volume["name"], "readOnly": True, "mountPath": SERVICE_ACCOUNT_DIR}
            )
    for c in every:
        _default_container(c)
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    return pod


# --- 2. the virtual-kubelet library: env -----------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_env_value(value: str, known: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion of an env value (``$$`` -> ``$``, unknown references kept)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return known.get(name, match.group(0))

    return _ENV_REF.sub(one, value)


def _service_env() -> dict[str, str]:
    host, port = _KUBERNETES_SERVICE["host"], _KUBERNETES_SERVICE["port"]
    return {
        "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}", f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp", f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }  # fmt: skip


def _downward_map(data: Mapping[str, str]) -> str:
    return "".join(f"{k}={json.dumps(data[k])}\n" for k in sorted(data))


def _field_value(pod: Mapping[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    annotation = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "metadata.labels": _downward_map(meta.get("labels") or {}),
        "metadata.annotations": _downward_map(meta.get("annotations") or {}),
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""), "status.hostIP": status.get("hostIP", ""),
    }  # fmt: skip
    if path in simple:
        return str(simple[path])
    if annotation:
        return str((meta.get("annotations") or {}).get(annotation.group(1), ""))
    if label:
        return str((meta.get("labels") or {}).get(label.group(1), ""))
    raise ValueError(f"unsupported fieldPath {path}")


def resolve_env(pod: dict[str, Any], container: dict[str, Any], cluster: Cluster, rng: random.Random) -> None:
    """Replace env/envFrom by plain values the way the virtual-kubelet library does."""
    resolved: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = cluster.config_map_data(source["configMapRef"]["name"])
        else:
            data = cluster.secret_data(source["secretRef"]["name"])
        for key, value in data.items():
            resolved[prefix + key] = value
    service = _service_env()
    for env in container.get("env") or []:
        ref = env.get("valueFrom")
        if ref is None:
            resolved[env["name"]] = expand_env_value(str(env.get("value", "")), {**service, **resolved})
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            resolved[env["name"]] = cluster.config_map_data(key["name"])[key["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            resolved[env["name"]] = cluster.secret_data(key["name"])[key["key"]]
        elif "fieldRef" in ref:
            resolved[env["name"]] = _field_value(pod, ref["fieldRef"]["fieldPath"])
        # resourceFieldRef: the library leaves it out (TODO upstream)
    for key, value in service.items():
        resolved.setdefault(key, value)
    items = list(resolved.items())
    rng.shuffle(items)  # rebuilt from a Go map: no order is kept
    container["env"] = [{"name": k, "value": v} for k, v in items]
    container.pop("envFrom", None)


# --- 3. interLink's virtual kubelet: volumes ---------------------------------------------------


def _token(pod: Mapping[str, Any]) -> str:
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"sub": f"system:serviceaccount:{pod['metadata']['namespace']}:default",
              "kubernetes.io": {"pod": {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}}}
    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c3RhbmQtaW4tc2lnbmF0dXJl"


def _projected_map(pod: dict[str, Any], volume: Mapping[str, Any], cluster: Cluster) -> dict[str, Any]:
    data: dict[str, str] = {}
    for source in volume["projected"].get("sources") or []:
        if "serviceAccountToken" in source:
            data[source["serviceAccountToken"]["path"]] = _token(pod)
        elif "configMap" in source:
            ref = source["configMap"]
            values = {"ca.crt": _CA_CRT} if ref["name"] == "kube-root-ca.crt" else cluster.config_map_data(ref["name"])
            if ref.get("items"):
                for item in ref["items"]:
                    data[item["path"]] = values[item["key"]]
            else:
                data.update(values)
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    data[item["path"]] = _field_value(pod, item["fieldRef"]["fieldPath"])
        # secret sources: not handled by interLink 0.6.2 (nothing is sent)
    return {"metadata": {"name": volume["name"], "creationTimestamp": None}, "data": data}


def _offload_volumes(pod: dict[str, Any], cluster: Cluster) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                     list[dict[str, Any]]]:
    """(configMaps, secrets, projected maps) the VK attaches; downwardAPI volumes become projected ones."""
    config_maps: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    projected: list[dict[str, Any]] = []
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            config_maps.append(copy.deepcopy(cluster.config_maps[volume["configMap"]["name"]]))
        elif "secret" in volume:
            secrets.append(copy.deepcopy(cluster.secrets[volume["secret"]["secretName"]]))
        elif "projected" in volume:
            projected.append(_projected_map(pod, volume, cluster))
        elif "downwardAPI" in volume:
            source = volume.pop("downwardAPI")
            projected.append(_projected_map(pod, {"name": volume["name"], "projected": {
                "sources": [{"downwardAPI": {"items": source.get("items") or []}}]}}, cluster))
            volume["projected"] = {"sources": [{"downwardAPI": {"items": source.get("items") or []}}],
                                   "defaultMode": source.get("defaultMode", 420)}
    return config_maps, secrets, projected


# --- 4. interLink's API server: the /create body ---------------------------------------------


def create_body(pod: dict[str, Any], cluster: Cluster, rng: random.Random) -> dict[str, Any]:
    """The RetrievedPodData interLink 0.6.2's API server POSTs to the plugin's /create."""
    pod = copy.deepcopy(pod)
    for c in (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers") or []):
        resolve_env(pod, c, cluster, rng)
    pod["status"] = {
        "phase": "Pending", "hostIP": POD_IP, "podIP": POD_IP, "startTime": _now(),
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"},
                       {"type": "PodScheduled", "status": "True"}],
    }  # fmt: skip
    config_maps, secrets, projected = _offload_volumes(pod, cluster)
    by_name = {v["name"]: v for v in pod["spec"]["volumes"]}
    entries = []
    for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]:
        mine_cm: list[dict[str, Any]] = []
        mine_secret: list[dict[str, Any]] = []
        mine_projected: list[dict[str, Any]] = []
        for mount in c.get("volumeMounts") or []:
            volume = by_name.get(mount["name"], {})
            if "configMap" in volume:
                mine_cm += [m for m in config_maps if m["metadata"]["name"] == volume["configMap"]["name"]][:1]
            elif "secret" in volume:
                mine_secret += [s for s in secrets if s["metadata"]["name"] == volume["secret"]["secretName"]][:1]
            elif "projected" in volume:
                mine_projected += [p for p in projected if p["metadata"]["name"] == volume["name"]][:1]
        entries.append({"name": c["name"], "configMaps": mine_cm or None, "projectedvolumemaps": mine_projected or None,
                        "secrets": mine_secret or None, "emptyDirs": None})
    if not pod["spec"].get("initContainers"):
        pod["spec"].pop("initContainers", None)
    return {
        "pod": pod,
        "container": entries,
        "jobConfig": {
            "SingularityHubProxy": {"server": "", "master_token": "", "cache_validity_seconds": 0},
            "ApptainerOptions": {"executable": "", "fakeroot": False, "containall": False, "fuseMode": "",
                                 "noInit": False, "noHome": False, "noPrivs": False, "nvidiaSupport": False,
                                 "cleanenv": False, "unsquash": False},
            "Volumes": {"scratch_area": "", "apptainer_cachedir": "", "image_dir": "",
                        "additional_directories_in_path": None, "fuse_sleep_seconds": 0},
        },
    }  # fmt: skip


# --- manifests -> pods -----------------------------------------------------------------------


@dataclass
class PodTemplate:
    """One Pod manifest, or the pod template of a Job (a new pod, name and uid per attempt)."""

    name: str  # the Pod's name, or the Job's (its pods are <job>-<5 chars>)
    manifest: dict[str, Any]
    cluster: Cluster
    job: dict[str, Any] | None = None
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(2**32))

    @property
    def attempts(self) -> int:
        """How many pods the owner makes at most: a Job's backoffLimit + 1 (restartPolicy Never), a Pod 1."""
        if self.job is None:
            return 1
        if self.manifest["spec"].get("restartPolicy") == "OnFailure":
            return 1  # restarts happen in the pod
        return int(self.job["spec"].get("backoffLimit", 6)) + 1

    def body(self, attempt: int = 0) -> dict[str, Any]:
        """The /create body of one attempt, as interLink 0.6.2 sends it."""
        rng = random.Random(self.seed + attempt)
        manifest = copy.deepcopy(self.manifest)
        if self.job is not None:
            manifest["metadata"]["name"] = f"{self.name}-{generated_suffix(rng)}"
        admitted = admit_pod(manifest, self.cluster.namespace, rng)
        return create_body(admitted, self.cluster, rng)


def _job_pod_manifest(job: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    template = copy.deepcopy(job["spec"]["template"])
    job_name = str(job["metadata"]["name"])
    controller = str(uuid.uuid4())
    meta = template.setdefault("metadata", {})
    meta["namespace"] = job["metadata"].get("namespace") or namespace
    meta["generateName"] = f"{job_name}-"
    meta["labels"] = {**(meta.get("labels") or {}), "batch.kubernetes.io/controller-uid": controller,
                      "batch.kubernetes.io/job-name": job_name, "controller-uid": controller, "job-name": job_name}
    meta["annotations"] = {**(meta.get("annotations") or {}), "batch.kubernetes.io/job-tracking": ""}
    meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": controller,
                                "controller": True, "blockOwnerDeletion": True}]
    meta["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    return {"apiVersion": "v1", "kind": "Pod", **template}


def pods_from_manifests(documents: Iterable[Mapping[str, Any]], namespace: str = "default") -> list[PodTemplate]:
    """Every Pod and Job of the documents, with the ConfigMaps and Secrets among them in one Cluster."""
    cluster = Cluster(namespace=namespace)
    templates: list[PodTemplate] = []
    for doc in documents:
        kind = doc.get("kind")
        if kind in ("ConfigMap", "Secret"):
            cluster.add(doc)
        elif kind == "Pod":
            templates.append(PodTemplate(str(doc["metadata"]["name"]), copy.deepcopy(dict(doc)), cluster))
        elif kind == "Job":
            pod = _job_pod_manifest(doc, namespace)
            templates.append(PodTemplate(str(doc["metadata"]["name"]), pod, cluster, job=copy.deepcopy(dict(doc))))
        else:
            raise ValueError(f"unsupported kind {kind}")
    return templates
