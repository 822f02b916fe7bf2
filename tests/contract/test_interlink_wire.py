"""interLink's exact wire shapes (shared/reference/interlink-wire-contract.md), against the real plugin."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from interlink_plugins.api.models import PingResponse
from tests.harness import PluginProcess

pytestmark = pytest.mark.e2e

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def interlink_0_6_2_body(uid: str) -> dict[str, Any]:
    """The create body of the contract's §2.1, with a command that exists on the host (runtime none)."""
    return {
        "pod": {
            "metadata": {"name": "hello-world-6a1f", "namespace": "interlink", "uid": uid, "resourceVersion": "123456",
                         "creationTimestamp": "2026-07-14T09:00:00Z",
                         "annotations": {"slurm-job.vk.io/flags": "--job-name=test-pod-cfg -t 2800",
                                         "slurm-job.vk.io/image-root": "docker://"},
                         "labels": {"app": "demo"}},
            "spec": {
                "volumes": [
                    {"name": "config-map", "configMap": {"name": "vol-config-6a1f", "items": [{"key": "script.py", "path": "script.py"}], "defaultMode": 420}},
                    {"name": "secret", "secret": {"secretName": "secret-6a1f", "defaultMode": 420}},
                    {"name": "shared-vol1", "emptyDir": {"sizeLimit": "50Mi"}},
                    {"name": "kube-api-access-x7k2p", "projected": {"sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}],
                        "defaultMode": 420}},
                ],
                "initContainers": None,
                "containers": [{
                    "name": "config", "image": "python:alpine",
                    "command": ["sh", "-c", "cat /config-map/script.py; cat /secret/secret-script.py; ls /var/run/secrets/kubernetes.io/serviceaccount"],
                    "args": None,
                    "env": [{"name": "SIMPLE", "value": "simple"}, {"name": "FROM_SECRET", "value": "already-resolved"}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "config-map", "mountPath": "/config-map"},
                                     {"name": "secret", "mountPath": "/secret"},
                                     {"name": "shared-vol1", "mountPath": "/shared-vol1", "readOnly": True},
                                     {"name": "kube-api-access-x7k2p", "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                    "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                }],
                "restartPolicy": "Never", "nodeName": "virtual-kubelet", "serviceAccountName": "default",
                "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}],
            },
            "status": {"phase": "Pending", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "conditions": [{"type": "PodScheduled", "status": "True"}]},
        },
        "container": [{
            "name": "config",
            "configMaps": [{"metadata": {"name": "vol-config-6a1f", "namespace": "interlink", "uid": "x"}, "data": {"script.py": "print('hi')\n"}}],
            "projectedvolumemaps": [{"metadata": {"name": "kube-api-access-x7k2p", "creationTimestamp": None},
                                     "data": {"token": "eyJhbGciOi", "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "namespace": "interlink"}}],
            "secrets": [{"metadata": {"name": "secret-6a1f", "namespace": "interlink"}, "data": {"secret-script.py": "cHJpbnQgKCJoZWxsbyIpCg=="}, "type": "Opaque"}],
            "emptyDirs": None,
        }],
        "jobConfig": {
            "SingularityHubProxy": {"server": "", "master_token": "", "cache_validity_seconds": 0},
            "ApptainerOptions": {"executable": "", "fakeroot": False, "containall": False, "fuseMode": "", "noInit": False,
                                 "noHome": False, "noPrivs": False, "nvidiaSupport": False, "cleanenv": False, "unsquash": False},
            "Volumes": {"scratch_area": "", "apptainer_cachedir": "", "image_dir": "", "additional_directories_in_path": None, "fuse_sleep_seconds": 0},
        },
    }


def test_exact_interlink_exchange(plugin_factory: Callable[..., PluginProcess]) -> None:
    plugin = plugin_factory()
    uid = str(uuid.uuid4())
    body = interlink_0_6_2_body(uid)
    headers = {"Content-Type": "application/json", "InterLink-Http-Session": "CreatePod#12345",
               "User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}
    response = plugin.client.post("/create", content=json.dumps(body), headers=headers)
    assert response.status_code == 200
    created = response.json()
    assert set(created) == {"PodUID", "PodJID"} and created["PodUID"] == uid

    v1pod = {**body["pod"], "metadata": {**body["pod"]["metadata"], "annotations": {
        **body["pod"]["metadata"]["annotations"], "JobID": created["PodJID"]}}}
    deadline = time.monotonic() + 60
    while True:
        response = plugin.client.request("GET", "/status", content=json.dumps([v1pod]), headers=headers)
        assert response.status_code == 200
        [status] = response.json()
        if all("terminated" in c["state"] for c in status["containers"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(status) == {"name", "UID", "namespace", "JID", "containers", "initContainers"}
    assert (status["name"], status["UID"], status["namespace"], status["JID"]) == ("hello-world-6a1f", uid, "interlink", created["PodJID"])
    assert status["initContainers"] == []
    [entry] = status["containers"]
    assert entry["name"] == "config" and isinstance(entry["restartCount"], int) and isinstance(entry["ready"], bool)
    term = entry["state"]["terminated"]
    assert isinstance(term["exitCode"], int) and term["exitCode"] == 0
    assert RFC3339.match(term["startedAt"]) and RFC3339.match(term["finishedAt"])

    logs = plugin.client.request("GET", "/getLogs", content=json.dumps({
        "Namespace": "interlink", "PodUID": uid, "PodName": "hello-world-6a1f", "ContainerName": "config",
        "Opts": {"Tail": 0, "Bytes": 0, "Timestamps": False, "Follow": False, "Previous": False,
                 "SinceSeconds": 0, "SinceTime": "0001-01-01T00:00:00Z"}}), headers=headers)
    assert logs.status_code == 200
    assert logs.text == "print('hi')\nprint (\"hello\")\nca.crt\nnamespace\ntoken\n"

    ping = plugin.client.request("GET", "/status", content=b"[]", headers=headers)
    assert ping.status_code == 200
    PingResponse.model_validate(ping.json())  # the 0.6.2 PingResponse shape
    assert plugin.client.post("/delete", content=json.dumps(v1pod), headers=headers).status_code == 200
    assert plugin.client.post("/delete", content=json.dumps(v1pod), headers=headers).status_code == 200


def test_metrics_and_session_logging(plugin_factory: Callable[..., PluginProcess]) -> None:
    plugin = plugin_factory()
    uid = str(uuid.uuid4())
    body = interlink_0_6_2_body(uid)
    response = plugin.client.post("/create", json=body, headers={"InterLink-Http-Session": "CreatePod#4242"})
    assert response.status_code == 200
    bad = plugin.client.post("/create", json={"pod": {"metadata": {}}})
    assert bad.status_code == 422
    time.sleep(2.5)
    plugin.client.request("GET", "/status", json=[body["pod"]])
    text = plugin.client.get("/metrics").text
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert samples['interlink_plugin_pods_created_total{backend="slurm"}'] == 1
    assert samples['interlink_plugin_pod_create_failures_total{backend="slurm",reason="Invalid"}'] == 1
    assert samples['interlink_plugin_scheduler_command_duration_seconds_count{backend="slurm",command="sbatch",outcome="ok"}'] == 1
    assert samples['interlink_plugin_scheduler_command_duration_seconds_count{backend="slurm",command="squeue",outcome="ok"}'] >= 1
    assert samples['interlink_plugin_http_request_duration_seconds_count{method="POST",route="/create",status="200"}'] == 1
    assert samples['interlink_plugin_poll_duration_seconds_count{backend="slurm"}'] >= 1
    assert sum(v for k, v in samples.items() if k.startswith("interlink_plugin_tracked_pods{")) == 1
    assert samples['interlink_plugin_backend_up{backend="slurm"}'] == 1
    log_lines = [json.loads(line) for line in plugin.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry.get("session") == "CreatePod#4242" and uid in entry["message"] for entry in log_lines)
    plugin.delete(body)


def test_every_dashboard_metric_has_samples_after_a_pod_lifecycle(plugin_factory: Callable[..., PluginProcess]) -> None:
    """deploy/grafana: each metric a panel queries exists with at least one sample (error counters excepted)."""
    from tests.harness import ROOT
    from tests.podfactory import container, pod_body

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "interlink-plugins-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"interlink_plugin_[a-z_]+", e)}
    plugin = plugin_factory()
    body = pod_body("dash", [container("c", ["echo", "metrics"])])
    plugin.create(body)
    plugin.wait_done(body)
    assert plugin.logs(body, "c").text == "metrics\n"
    plugin.delete(body)
    text = plugin.client.get("/metrics").text
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    sampled = {re.sub(r"_(bucket|count|sum|total|created)$", "", name) for name in sampled}
    for metric in sorted(wanted):  # error counters too: every known label set exists from the start, at 0
        assert re.sub(r"_total$", "", metric) in sampled, f"{metric} has no sample"
