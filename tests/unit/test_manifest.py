"""A plain Kubernetes manifest resolved the way the apiserver, the Job controller, interLink's virtual kubelet
and its API server do it on the way to the plugin (interlink_plugins/manifest.py)."""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from interlink_plugins.core.model.pod import parse_create_body
from interlink_plugins.manifest import (
    PLACEHOLDER_TOKEN,
    SERVICE_ACCOUNT_MOUNT,
    ManifestError,
    load_documents,
    pod_body_from_manifest,
    read_pod_input,
)

NOW = datetime(2026, 7, 14, 9, 0, 0, tzinfo=UTC)
SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]{5}"

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
              "data": {"script.py": "print('hi')\n", "MODE": "fast", "bad key!": "skipped"}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
          "data": {"token": base64.b64encode(b"s3cret-token").decode()}, "stringData": {"password": "hunter2-xyz"}}


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo", "namespace": "physics", "labels": {"app": "demo"},
                         "annotations": {"team": "hep"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "true"]}],
                     **spec}}


def resolve(*documents: dict[str, Any], seed: int = 7) -> dict[str, Any]:
    return pod_body_from_manifest(list(documents), rng=random.Random(seed), now=NOW)


def test_a_pod_with_its_configmap_and_secret_becomes_the_create_body_interlink_sends() -> None:
    manifest = pod(
        initContainers=[{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
        nodeSelector={"kubernetes.io/hostname": "vk-slurm"},
        volumes=[{"name": "cfg", "configMap": {"name": "settings"}}, {"name": "sec", "secret": {"secretName": "creds"}},
                 {"name": "scratch", "emptyDir": {}}],
    )
    manifest["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "sec", "mountPath": "/sec"}, {"name": "cfg", "mountPath": "/cfg"}, {"name": "scratch", "mountPath": "/s"}]
    body = resolve(manifest, CONFIG_MAP, SECRET)
    meta, spec = body["pod"]["metadata"], body["pod"]["spec"]
    assert uuid.UUID(meta["uid"]).version == 4 and meta["creationTimestamp"] == "2026-07-14T09:00:00Z"
    assert (meta["name"], meta["namespace"]) == ("demo", "physics")
    assert spec["nodeName"] == "vk-slurm" and spec["serviceAccountName"] == "default"
    assert spec["restartPolicy"] == "Always" and spec["terminationGracePeriodSeconds"] == 30
    main, init = spec["containers"][0], spec["initContainers"][0]
    assert main["imagePullPolicy"] == "Always" and init["imagePullPolicy"] == "IfNotPresent"  # busybox vs :1.36
    assert body["pod"]["status"] == {"phase": "Pending"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cfg"]["configMap"] == {"name": "settings", "defaultMode": 420}
    assert volumes["sec"]["secret"] == {"secretName": "creds", "defaultMode": 420}
    # the service-account admission: one projected volume, mounted read-only in every container
    (token_volume,) = [name for name in volumes if name.startswith("kube-api-access-")]
    assert re.fullmatch(f"kube-api-access-{SUFFIX}", token_volume)
    sources = volumes[token_volume]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    for container in (main, init):
        assert {"name": token_volume, "readOnly": True, "mountPath": SERVICE_ACCOUNT_MOUNT} in container["volumeMounts"]
    # interLink's API server: one entry per container, init first, objects in mount order, null when none
    init_entry, main_entry = body["container"]
    assert [init_entry["name"], main_entry["name"]] == ["init", "main"]
    assert init_entry["configMaps"] is None and init_entry["secrets"] is None and init_entry["emptyDirs"] is None
    assert [cm["metadata"]["name"] for cm in main_entry["configMaps"]] == ["settings"]
    assert main_entry["configMaps"][0]["data"] == CONFIG_MAP["data"]
    assert main_entry["configMaps"][0]["metadata"]["namespace"] == "physics"
    (secret,) = main_entry["secrets"]
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "token": b"s3cret-token", "password": b"hunter2-xyz"}  # stringData folded into data, as the apiserver does
    assert secret["type"] == "Opaque" and "stringData" not in secret
    (projected,) = main_entry["projectedvolumemaps"]
    assert projected["metadata"] == {"name": token_volume, "creationTimestamp": None}
    assert projected["data"]["token"] == PLACEHOLDER_TOKEN and projected["data"]["namespace"] == "physics"
    assert "BEGIN CERTIFICATE" in projected["data"]["ca.crt"]
    assert set(body["jobConfig"]) == {"SingularityHubProxy", "ApptainerOptions", "Volumes"}
    # and it is exactly what the plugin parses from interLink
    parsed = parse_create_body(json.loads(json.dumps(body)))
    assert parsed.config_maps["settings"]["script.py"] == b"print('hi')\n"
    assert parsed.secrets["creds"]["password"] == b"hunter2-xyz"
    assert parsed.projected[token_volume]["token"] == PLACEHOLDER_TOKEN.encode()


def test_env_is_resolved_like_the_virtual_kubelet() -> None:
    manifest = pod(nodeSelector={"kubernetes.io/hostname": "vk-1"})
    manifest["spec"]["containers"][0].update(
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}},
                 {"configMapRef": {"name": "absent", "optional": True}}],
        env=[{"name": "MODE", "value": "slow"},
             {"name": "GREETING", "value": "mode $(MODE) cfg $(CFG_MODE) token $(token) $(UNKNOWN) $$(MODE)"},
             {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
             {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
             {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
             {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
             {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
             {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
             {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
             {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
             {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}},
             {"name": "token", "value": "overridden"}])
    body = resolve(manifest, CONFIG_MAP, SECRET)
    container = body["pod"]["spec"]["containers"][0]
    env = {var["name"]: var["value"] for var in container["env"]}
    assert "envFrom" not in container and all(set(var) == {"name", "value"} for var in container["env"])
    assert env["CFG_MODE"] == "fast" and env["CFG_script.py"] == "print('hi')\n" and "CFG_bad key!" not in env
    assert env["password"] == "hunter2-xyz"
    assert env["token"] == "overridden"  # env wins over envFrom
    assert env["GREETING"] == "mode slow cfg fast token s3cret-token $(UNKNOWN) $(MODE)"
    assert (env["FROM_CM"], env["FROM_SECRET"]) == ("fast", "hunter2-xyz")
    meta = body["pod"]["metadata"]
    assert (env["POD"], env["NS"], env["UID"], env["NODE"], env["SA"]) == (
        "demo", "physics", meta["uid"], "vk-1", "default")
    assert (env["APP"], env["TEAM"]) == ("demo", "hep")
    assert "CPU" not in env and "MAYBE" not in env  # resourceFieldRef: not populated; optional and absent: left out


def test_a_job_becomes_one_pod_named_after_it() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "ml"},
           "spec": {"completionMode": "Indexed", "template": {
               "metadata": {"labels": {"app": "train"}},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "python:3.12"}]}}}}
    body = resolve(job)
    meta = body["pod"]["metadata"]
    assert re.fullmatch(f"train-{SUFFIX}", meta["name"]) and meta["generateName"] == "train-"
    assert meta["namespace"] == "ml"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Job", "train", True)
    assert meta["labels"]["job-name"] == meta["labels"]["batch.kubernetes.io/job-name"] == "train"
    assert meta["labels"]["controller-uid"] == owner["uid"] and meta["labels"]["app"] == "train"
    env = {var["name"]: var["value"] for var in body["pod"]["spec"]["containers"][0]["env"]}
    assert env == {"JOB_COMPLETION_INDEX": "0"}
    assert resolve(job)["pod"]["metadata"]["name"] == meta["name"]  # same seed, same name
    long = {**job, "metadata": {"name": "x" * 63}}
    assert re.fullmatch(f"x{{58}}{SUFFIX}", resolve(long)["pod"]["metadata"]["name"])
    always = json.loads(json.dumps(job))
    del always["spec"]["template"]["spec"]["restartPolicy"]
    with pytest.raises(ManifestError, match="restartPolicy must be Never or OnFailure"):
        resolve(always)


def test_downward_api_volumes_become_projected_ones_and_offload_annotations_drop_containers() -> None:
    manifest = pod(volumes=[{"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}}])
    manifest["metadata"]["annotations"]["interlink.eu/disable-offload-containers"] = "local, other"
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "info", "mountPath": "/info"}]
    manifest["spec"]["containers"].append({"name": "local", "image": "busybox"})
    body = resolve(manifest)
    assert [c["name"] for c in body["pod"]["spec"]["containers"]] == ["main"]
    assert [entry["name"] for entry in body["container"]] == ["main"]
    info = next(v for v in body["pod"]["spec"]["volumes"] if v["name"] == "info")
    assert "downwardAPI" not in info and info["projected"]["sources"][0]["downwardAPI"]["items"][0]["path"] == "labels"
    files = next(m for m in body["container"][0]["projectedvolumemaps"] if m["metadata"]["name"] == "info")["data"]
    assert files == {"labels": 'app="demo"\n', "name": "demo"}  # resourceFieldRef: not supported by interLink


def test_a_pod_from_a_cluster_keeps_its_node_and_token_volume() -> None:
    first = resolve(pod(nodeSelector={"kubernetes.io/hostname": "vk-a"}))["pod"]
    again = resolve({"apiVersion": "v1", "kind": "Pod", **first})["pod"]  # as `kubectl get pod -o yaml` shows it
    assert again["metadata"]["uid"] == first["metadata"]["uid"] and again["spec"]["nodeName"] == "vk-a"
    assert [v["name"] for v in again["spec"]["volumes"]] == [v["name"] for v in first["spec"]["volumes"]]
    assert resolve(pod(), seed=3)["pod"]["spec"]["nodeName"] == "virtual-kubelet"


def test_no_token_where_the_pod_or_its_service_account_opts_out() -> None:
    assert all(not v["name"].startswith("kube-api-access")
               for v in resolve(pod(automountServiceAccountToken=False))["pod"]["spec"].get("volumes", []))
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"},
               "automountServiceAccountToken": False}
    body = resolve(pod(serviceAccountName="runner"), account)
    assert "volumes" not in body["pod"]["spec"] and body["container"][0]["projectedvolumemaps"] is None


@pytest.mark.parametrize(("documents", "message"), [
    ([pod(volumes=[{"name": "v", "configMap": {"name": "settings"}}])],
     "volume v: ConfigMap 'settings' is not in the manifest"),
    ([pod()], None),
    ([pod(), pod()], "exactly one Pod or Job, found 2"),
    ([CONFIG_MAP], "exactly one Pod or Job, found 0"),
    ([pod(), {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}], "kind 'Deployment'"),
    ([pod(), {**SECRET, "data": {"k": "not base64!"}}], "Secret creds: data.k is not base64"),
    ([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}], "spec.containers"),
])
def test_a_manifest_that_cannot_become_a_pod_names_the_object(documents: list[dict[str, Any]],
                                                              message: str | None) -> None:
    if message is None:
        resolve(*documents)
        return
    with pytest.raises(ManifestError, match=re.escape(message)):
        resolve(*documents)


def test_env_references_to_missing_objects_and_keys_are_errors() -> None:
    manifest = pod()
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]
    with pytest.raises(ManifestError, match="container main env X: key 'nope' is not in secret 'creds'"):
        resolve(manifest, SECRET)
    with pytest.raises(ManifestError, match="container main env X: Secret 'creds' is not in the manifest"):
        resolve(manifest)


def test_yaml_json_and_list_forms_give_the_same_body(tmp_path: Path) -> None:
    documents = [pod(), CONFIG_MAP]
    as_yaml = yaml.safe_dump_all(documents)
    forms = [as_yaml, json.dumps(documents), json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})]
    bodies = [pod_body_from_manifest(load_documents(text), rng=random.Random(1), now=NOW) for text in forms]
    assert bodies[0] == bodies[1] == bodies[2]
    with pytest.raises(ManifestError, match=r"^neither JSON nor YAML: line 2 column \d+: ") as bad:
        load_documents("kind: Pod\n  spec: [\n")
    assert "\n" not in str(bad.value)


def test_read_pod_input_keeps_what_interlink_sends_as_it_is(tmp_path: Path) -> None:
    create_body = {"pod": {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {}}, "container": []}
    path = tmp_path / "body.json"
    path.write_text(json.dumps(create_body))
    assert read_pod_input(path).body == create_body and read_pod_input(path).origin == ""
    path.write_text(json.dumps(create_body["pod"]))
    assert read_pod_input(path).body == create_body
    path.write_text(yaml.safe_dump_all([pod(), SECRET]))
    given = read_pod_input(path)
    assert given.origin.startswith("pod physics/demo uid ") and set(given.secret_values) == {
        b"s3cret-token", b"hunter2-xyz"}
