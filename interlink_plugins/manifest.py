"""A plain Kubernetes manifest resolved into the create body interLink sends the plugin.

What happens to a user's Pod (or Job) between `kubectl apply` and the plugin's /create, done here offline:
the apiserver's defaults and the service-account admission (uid, `kube-api-access-*` projected volume and its
mounts), the Job controller (one pod `<job>-<5 chars>`), the virtual kubelet (env `valueFrom`/`envFrom` resolved
into plain values and `$(VAR)` expanded, containers listed in `interlink.eu/disable-offload-*` left out,
configMap/secret/projected/downwardAPI volume data fetched) and interLink's API server (that data attached per
container, init containers first, in the order of each container's volumeMounts).

The cluster's own objects are not known here: a service-account token and the cluster CA are placeholders
(unless the file has the `kube-root-ca.crt` ConfigMap), and the `KUBERNETES_SERVICE_*` variables the virtual
kubelet adds from the cluster's services are left out.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from interlink_plugins.config import yaml_problem
from interlink_plugins.core.model.expand import expand_k8s

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
PLACEHOLDER_TOKEN = "placeholder-service-account-token-minted-by-the-cluster-for-this-pod"  # noqa: S105
PLACEHOLDER_CA = "-----BEGIN CERTIFICATE-----\n(the cluster's CA, kube-root-ca.crt)\n-----END CERTIFICATE-----\n"
DISABLE_OFFLOAD = "interlink.eu/disable-offload-containers"
DISABLE_OFFLOAD_INIT = "interlink.eu/disable-offload-init-containers"
# Kubernetes' generateName suffix: 5 characters of this alphabet (no vowels, no look-alikes)
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_GENERATED_BASE = 58  # 63 - 5
DEFAULT_MODE = 420  # 0644, what the apiserver fills in
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_FIELD_KEY = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")
_KINDS = ("Pod", "Job", "ConfigMap", "Secret", "ServiceAccount")
# the jobConfig every interLink >= 0.5 sends, zero-valued unless a job-script builder is configured
ZERO_JOB_CONFIG: dict[str, Any] = {
    "SingularityHubProxy": {"server": "", "master_token": "", "cache_validity_seconds": 0},
    "ApptainerOptions": {"executable": "", "fakeroot": False, "containall": False, "fuseMode": "", "noInit": False,
                         "noHome": False, "noPrivs": False, "nvidiaSupport": False, "cleanenv": False,
                         "unsquash": False},
    "Volumes": {"scratch_area": "", "apptainer_cachedir": "", "image_dir": "",
                "additional_directories_in_path": None, "fuse_sleep_seconds": 0},
}


class ManifestError(ValueError):
    """The manifest cannot become a pod: says which object and field."""


@dataclass
class PodInput:
    """What `render` got: the create body, where it came from, and the secret values to mask."""

    body: Any
    origin: str = ""
    secret_values: list[bytes] = field(default_factory=list)


def read_pod_input(path: Path) -> PodInput:
    """A file holding interLink's create body, a v1.Pod as interLink sends it, or a manifest (with `kind`)."""
    documents = load_documents(path.read_text())
    if len(documents) == 1 and "kind" not in documents[0]:
        only = documents[0]
        if "pod" in only:
            return PodInput(only)
        if "metadata" in only:
            return PodInput({"pod": only, "container": []})
    body = pod_body_from_manifest(documents)
    secrets = [value for doc in documents if doc.get("kind") == "Secret" for value in _secret_data(doc).values()]
    meta = body["pod"]["metadata"]
    owner = next((f" (from Job {ref['name']})" for ref in meta.get("ownerReferences", [])), "")
    return PodInput(body, f"pod {meta['namespace']}/{meta['name']} uid {meta['uid']}{owner}, resolved as interLink "
                          "would send it", secrets)


def load_documents(text: str) -> list[dict[str, Any]]:
    """JSON (an object, a list, or a `kind: List`) or YAML with any number of `---` documents."""
    try:
        loaded: Any = [json.loads(text)]
    except ValueError:
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ManifestError(f"neither JSON nor YAML: {yaml_problem(exc)}") from None
    documents: list[dict[str, Any]] = []
    pending = list(loaded)
    while pending:
        doc = pending.pop(0)
        if doc is None:
            continue
        if isinstance(doc, list):
            pending[:0] = doc
        elif isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            pending[:0] = doc["items"]
        elif isinstance(doc, dict):
            documents.append(doc)
        else:
            raise ManifestError(f"a document is {type(doc).__name__}, not an object")
    if not documents:
        raise ManifestError("no document in the file")
    return documents


def pod_body_from_manifest(
    documents: Sequence[Mapping[str, Any]],
    *,
    node_name: str = "",
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The /create body (RetrievedPodData) interLink would send for the one Pod or Job in `documents`.

    node_name: the virtual node's name (default: the pod's nodeName, its nodeSelector kubernetes.io/hostname,
    else "virtual-kubelet"); rng and now make the generated names, uids and timestamps reproducible.
    """
    rng = rng or random.Random()  # noqa: S311  (names and uids, not secrets)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    workloads = [doc for doc in documents if doc.get("kind") in ("Pod", "Job")]
    for doc in documents:
        if doc.get("kind") not in _KINDS:
            raise ManifestError(f"kind {doc.get('kind')!r}: only {', '.join(_KINDS)} are resolved")
    if len(workloads) != 1:
        raise ManifestError(f"expected exactly one Pod or Job, found {len(workloads)}")
    workload = copy.deepcopy(dict(workloads[0]))
    pod = _pod_of_job(workload, rng, stamp) if workload["kind"] == "Job" else _pod_of(workload)
    meta, spec = pod["metadata"], pod["spec"]
    namespace = meta.setdefault("namespace", "default")
    objects = _Objects(documents, namespace, rng, stamp)
    if not meta.get("name"):
        if not meta.get("generateName"):
            raise ManifestError("Pod: metadata.name (or generateName) is required")
        meta["name"] = _generated(meta["generateName"], rng)
    meta.setdefault("uid", str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    meta.setdefault("creationTimestamp", stamp)
    _apply_defaults(spec)
    _mount_service_account(spec, objects, rng)
    spec["nodeName"] = (node_name or spec.get("nodeName") or spec.get("nodeSelector", {}).get("kubernetes.io/hostname")
                        or "virtual-kubelet")
    pod["status"] = {"phase": "Pending"}
    _drop_local_containers(meta, spec)
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind, []):
            _resolve_env(container, pod, objects)
    volume_data = _volume_data(pod, objects)
    return {
        "pod": pod,
        "container": [_attached(container, spec, volume_data)
                      for kind in ("initContainers", "containers") for container in spec.get(kind, [])],
        "jobConfig": copy.deepcopy(ZERO_JOB_CONFIG),
    }


# --- the workload -------------------------------------------------------------------------


def _pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise ManifestError("Pod: spec.containers must list at least one container")
    return {"metadata": dict(doc.get("metadata") or {}), "spec": spec}


def _pod_of_job(job: dict[str, Any], rng: random.Random, stamp: str) -> dict[str, Any]:
    """The first pod the Job controller creates: the template, named `<job>-<5 chars>`, labelled and owned."""
    job_meta = job.get("metadata") or {}
    name = job_meta.get("name")
    if not name:
        raise ManifestError("Job: metadata.name is required")
    template = (job.get("spec") or {}).get("template")
    if not isinstance(template, dict):
        raise ManifestError(f"Job {name}: spec.template is required")
    pod = _pod_of({"metadata": template.get("metadata") or {}, "spec": template.get("spec")})
    if pod["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
        raise ManifestError(f"Job {name}: spec.template.spec.restartPolicy must be Never or OnFailure "
                            f"(the apiserver refuses {pod['spec'].get('restartPolicy', 'Always')!r})")
    job_uid = str(job_meta.get("uid") or uuid.UUID(int=rng.getrandbits(128), version=4))
    meta = pod["metadata"]
    meta.pop("name", None)
    meta["generateName"] = f"{name}-"
    meta["name"] = _generated(meta["generateName"], rng)
    if job_meta.get("namespace"):
        meta["namespace"] = job_meta["namespace"]
    labels = meta.setdefault("labels", {})
    labels.update({"batch.kubernetes.io/controller-uid": job_uid, "batch.kubernetes.io/job-name": name,
                   "controller-uid": job_uid, "job-name": name})
    if (job.get("spec") or {}).get("completionMode") == "Indexed":
        labels["batch.kubernetes.io/job-completion-index"] = "0"
        meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = "0"
        for kind in ("initContainers", "containers"):
            for container in pod["spec"].get(kind, []):
                container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}})
    meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid,
                                "controller": True, "blockOwnerDeletion": True}]
    meta["creationTimestamp"] = stamp
    return pod


def _generated(base: str, rng: random.Random) -> str:
    return base[:MAX_GENERATED_BASE] + "".join(rng.choice(NAME_SUFFIX_ALPHABET) for _ in range(5))


def _apply_defaults(spec: dict[str, Any]) -> None:
    """The apiserver's defaults the plugin reads (restart policy, grace period, pull policy, volume modes)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("securityContext", {})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind, []):
            if not isinstance(container, dict) or not container.get("name"):
                raise ManifestError(f"{kind}: every container needs a name")
            image = str(container.get("image", ""))
            tagged = "@" in image or ":" in image.rsplit("/", 1)[-1]
            latest = not tagged or image.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            resources = container.setdefault("resources", {})
            if resources.get("limits"):  # a limit without a request: the request defaults to the limit
                resources["requests"] = {**resources["limits"], **(resources.get("requests") or {})}
    for volume in spec.get("volumes", []):
        for source in ("configMap", "secret", "projected", "downwardAPI"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", DEFAULT_MODE)


def _mount_service_account(spec: dict[str, Any], objects: _Objects, rng: random.Random) -> None:
    """The service-account admission: a projected token/CA/namespace volume in every container."""
    account = objects.service_accounts.get(spec["serviceAccountName"], {})
    automount = spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
    admitted = any(str(v.get("name", "")).startswith("kube-api-access-") for v in spec.get("volumes", []))
    if automount is False or admitted:
        return  # opted out, or a pod the admission already saw (kubectl get -o yaml)
    volume_name = _generated("kube-api-access-", rng)
    spec.setdefault("volumes", []).append({"name": volume_name, "projected": {"defaultMode": DEFAULT_MODE, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.namespace"}}]}},
    ]}})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind, []):
            mounts = container.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == SERVICE_ACCOUNT_MOUNT for m in mounts):
                mounts.append({"name": volume_name, "readOnly": True, "mountPath": SERVICE_ACCOUNT_MOUNT})


def _drop_local_containers(meta: dict[str, Any], spec: dict[str, Any]) -> None:
    """interLink offloads only the containers its disable-offload annotations do not name."""
    annotations = meta.get("annotations") or {}
    for kind, key in (("containers", DISABLE_OFFLOAD), ("initContainers", DISABLE_OFFLOAD_INIT)):
        local = {name.strip() for name in str(annotations.get(key, "")).split(",") if name.strip()}
        if local and kind in spec:
            spec[kind] = [c for c in spec[kind] if c.get("name") not in local]


# --- ConfigMaps and Secrets of the file ------------------------------------------------------


class _Objects:
    """The ConfigMaps, Secrets and ServiceAccounts of the manifest, as the apiserver would return them."""

    def __init__(self, documents: Sequence[Mapping[str, Any]], namespace: str, rng: random.Random,
                 stamp: str) -> None:
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.service_accounts: dict[str, dict[str, Any]] = {}
        self.secret_text: dict[str, dict[str, str]] = {}  # decoded, as env values get them
        for doc in documents:
            kind = doc.get("kind")
            if kind not in ("ConfigMap", "Secret", "ServiceAccount"):
                continue
            meta = doc.get("metadata") or {}
            name = meta.get("name")
            if not name:
                raise ManifestError(f"{kind}: metadata.name is required")
            if meta.get("namespace", namespace) != namespace:
                continue  # another namespace's: the pod cannot use it
            stored = {**copy.deepcopy(dict(doc)), "metadata": {
                **meta, "namespace": namespace, "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "creationTimestamp": stamp}}
            stored.pop("apiVersion", None)
            stored.pop("kind", None)
            if kind == "ConfigMap":
                self.config_maps[name] = stored
            elif kind == "Secret":
                values = _secret_data(doc)
                stored["data"] = {key: base64.b64encode(value).decode() for key, value in values.items()}
                self.secret_text[name] = {key: value.decode("utf-8", errors="replace") for key, value in values.items()}
                stored.pop("stringData", None)
                stored.setdefault("type", "Opaque")
                self.secrets[name] = stored
            else:
                self.service_accounts[name] = stored

    def config_map(self, name: str, where: str) -> dict[str, Any]:
        if name not in self.config_maps:
            raise ManifestError(f"{where}: ConfigMap {name!r} is not in the manifest (interLink waits 5 minutes "
                                "for it, then fails the pod)")
        return self.config_maps[name]

    def secret(self, name: str, where: str) -> dict[str, Any]:
        if name not in self.secrets:
            raise ManifestError(f"{where}: Secret {name!r} is not in the manifest (interLink waits 5 minutes "
                                "for it, then fails the pod)")
        return self.secrets[name]

    def env_source(self, ref_kind: str, name: str, where: str, *, optional: bool) -> dict[str, str] | None:
        """The key -> value map an env reference reads (configMap... or secret...), None for a missing optional one."""
        if ref_kind.startswith("configMap"):
            if optional and name not in self.config_maps:
                return None
            return {str(k): str(v) for k, v in (self.config_map(name, where).get("data") or {}).items()}
        if optional and name not in self.secrets:
            return None
        self.secret(name, where)
        return self.secret_text[name]


def _secret_data(doc: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's values as bytes: `data` (base64) with `stringData` folded in, as the apiserver does."""
    name = (doc.get("metadata") or {}).get("name", "?")
    values: dict[str, bytes] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ManifestError(f"Secret {name}: data.{key} is not base64") from None
    for key, value in (doc.get("stringData") or {}).items():
        values[str(key)] = str(value).encode()
    return values


# --- env --------------------------------------------------------------------------------------


def _resolve_env(container: dict[str, Any], pod: dict[str, Any], objects: _Objects) -> None:
    """The virtual kubelet's env resolution: envFrom, then env (valueFrom resolved, `$(VAR)` expanded)."""
    where = f"container {container['name']}"
    values: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for ref_kind in ("configMapRef", "secretRef"):
            ref = source.get(ref_kind)
            if not isinstance(ref, dict):
                continue
            items = objects.env_source(ref_kind, str(ref.get("name")), f"{where} envFrom",
                                       optional=bool(ref.get("optional")))
            for key in sorted(items or {}):
                if _ENV_NAME.fullmatch(prefix + key):  # invalid names are skipped (an event in a cluster)
                    values[prefix + key] = (items or {})[key]
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if "valueFrom" in var:
            value = _value_from(var["valueFrom"], pod, objects, f"{where} env {name}")
            if value is not None:
                values[name] = value
        else:
            values[name] = expand_k8s(str(var.get("value", "")), values)
    container.pop("envFrom", None)
    container.pop("env", None)
    if values:
        container["env"] = [{"name": name, "value": value} for name, value in values.items()]


def _value_from(source: Mapping[str, Any], pod: dict[str, Any], objects: _Objects, where: str) -> str | None:
    """One valueFrom; None where the virtual kubelet leaves the variable out (optional, resourceFieldRef)."""
    for ref_kind in ("configMapKeyRef", "secretKeyRef"):
        ref = source.get(ref_kind)
        if not isinstance(ref, dict):
            continue
        name, key, optional = str(ref.get("name")), str(ref.get("key")), bool(ref.get("optional"))
        data = objects.env_source(ref_kind, name, where, optional=optional)
        if data is None or (key not in data and optional):
            return None
        if key not in data:
            raise ManifestError(f"{where}: key {key!r} is not in {ref_kind.removesuffix('KeyRef')} {name!r}")
        return data[key]
    if isinstance(source.get("fieldRef"), dict):
        path = str(source["fieldRef"].get("fieldPath", ""))
        value = _field_value(pod, path)
        if value is None:
            raise ManifestError(f"{where}: fieldRef {path!r} is not a supported field")
        return value
    return None  # resourceFieldRef: the virtual kubelet does not populate it


def _field_value(pod: dict[str, Any], path: str) -> str | None:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": status.get("hostIP", ""),
              "status.podIP": status.get("podIP", ""),
              "metadata.labels": _format_map(meta.get("labels") or {}),
              "metadata.annotations": _format_map(meta.get("annotations") or {})}
    if path in simple:
        return str(simple[path] or "")
    match = _FIELD_KEY.fullmatch(path)
    if match:
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    return None


def _format_map(values: Mapping[str, Any]) -> str:
    """metadata.labels / metadata.annotations as a file or variable: `key="value"` lines, sorted."""
    return "".join(f"{key}={json.dumps(str(values[key]))}\n" for key in sorted(values))


# --- volume data ------------------------------------------------------------------------------


@dataclass
class _VolumeData:
    config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)  # by volume name
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    projected: dict[str, dict[str, Any]] = field(default_factory=dict)


def _volume_data(pod: dict[str, Any], objects: _Objects) -> _VolumeData:
    """What the virtual kubelet fetches per pod volume (downwardAPI volumes become projected ones)."""
    data = _VolumeData()
    for volume in pod["spec"].get("volumes", []):
        name = volume.get("name")
        where = f"volume {name}"
        if isinstance(volume.get("configMap"), dict):
            data.config_maps[name] = objects.config_map(str(volume["configMap"].get("name")), where)
        elif isinstance(volume.get("secret"), dict):
            data.secrets[name] = objects.secret(str(volume["secret"].get("secretName")), where)
        elif isinstance(volume.get("projected"), dict):
            files: dict[str, str] = {}
            for source in volume["projected"].get("sources") or []:
                files.update(_projected_files(source, pod, objects, where))
            data.projected[name] = {"metadata": {"name": name, "creationTimestamp": None}, "data": files}
        elif isinstance(volume.get("downwardAPI"), dict):
            api = volume.pop("downwardAPI")
            files = _downward_files(api.get("items") or [], pod)
            volume["projected"] = {"defaultMode": api.get("defaultMode", DEFAULT_MODE),
                                   "sources": [{"downwardAPI": {"items": api.get("items") or []}}]}
            data.projected[name] = {"metadata": {"name": name, "creationTimestamp": None}, "data": files}
    return data


def _projected_files(source: Mapping[str, Any], pod: dict[str, Any], objects: _Objects,
                     where: str) -> dict[str, str]:
    if isinstance(source.get("serviceAccountToken"), dict):
        return {str(source["serviceAccountToken"].get("path", "token")): PLACEHOLDER_TOKEN}
    if isinstance(source.get("configMap"), dict):
        ref = source["configMap"]
        name = str(ref.get("name"))
        if name == ROOT_CA_CONFIGMAP and name not in objects.config_maps:
            values = {"ca.crt": PLACEHOLDER_CA}
        else:
            values = dict(objects.config_map(name, where).get("data") or {})
        items = ref.get("items") or []
        if not items:
            return {str(k): str(v) for k, v in values.items()}
        files = {}
        for item in items:
            if item.get("key") not in values:
                raise ManifestError(f"{where}: key {item.get('key')!r} is not in ConfigMap {name!r}")
            files[str(item.get("path"))] = str(values[item["key"]])
        return files
    if isinstance(source.get("downwardAPI"), dict):
        return _downward_files(source["downwardAPI"].get("items") or [], pod)
    return {}  # projected secret sources: interLink does not send them


def _downward_files(items: Sequence[Mapping[str, Any]], pod: dict[str, Any]) -> dict[str, str]:
    files = {}
    for item in items:
        if isinstance(item.get("fieldRef"), dict):
            value = _field_value(pod, str(item["fieldRef"].get("fieldPath", "")))
            if value is not None:  # interLink skips the fields it does not support (and resourceFieldRef)
                files[str(item.get("path"))] = value
    return files


def _attached(container: Mapping[str, Any], spec: Mapping[str, Any], data: _VolumeData) -> dict[str, Any]:
    """interLink's per-container entry: the objects of the volumes it mounts, in mount order (null when none)."""
    kinds = {v.get("name"): v for v in spec.get("volumes", [])}
    config_maps: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    projected: list[dict[str, Any]] = []
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name")
        volume = kinds.get(name, {})
        if "configMap" in volume and name in data.config_maps:
            config_maps.append(data.config_maps[name])
        elif "projected" in volume and name in data.projected:
            projected.append(data.projected[name])
        elif "secret" in volume and name in data.secrets:
            secrets.append(data.secrets[name])
    return {"name": container["name"], "configMaps": config_maps or None,
            "projectedvolumemaps": projected or None, "secrets": secrets or None, "emptyDirs": None}
