"""Build interLink create bodies (RetrievedPodData) the way interLink 0.6.2 sends them."""

from __future__ import annotations

import base64
import copy
import uuid
from datetime import UTC, datetime
from typing import Any

BUSYBOX = "localhost/busybox:latest"


def container(name: str, command: list[str] | None = None, args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": extra.pop("image", BUSYBOX),
        "imagePullPolicy": extra.pop("imagePullPolicy", "Never"),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": extra.pop("resources", {}),
    }
    if command is not None:
        spec["command"] = command
    if args is not None:
        spec["args"] = args
    spec.update(extra)
    return spec


def pod_body(
    name: str,
    containers: list[dict[str, Any]],
    *,
    init_containers: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    volumes: list[dict[str, Any]] | None = None,
    config_maps: list[dict[str, Any]] | None = None,
    secrets: list[dict[str, Any]] | None = None,
    projected: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    restart_policy: str = "Never",
    uid: str | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    uid = uid or str(uuid.uuid4())
    pod = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-25T09:00:00Z",
            "annotations": annotations or {},
            "labels": {"app": name},
        },
        "spec": {
            "volumes": volumes or [],
            "initContainers": init_containers or [],
            "containers": containers,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": spec_extra.pop("terminationGracePeriodSeconds", 2),
            "nodeName": "virtual-kubelet",
            "serviceAccountName": "default",
            "tolerations": [{"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}],
            **spec_extra,
        },
        "status": {"phase": "Pending", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    every = (init_containers or []) + containers
    entries = [
        {
            "name": c["name"],
            "configMaps": config_maps or None,
            "projectedvolumemaps": projected or None,
            "secrets": secrets or None,
            "emptyDirs": None,
        }
        for c in every
    ]
    return {
        "pod": pod,
        "container": entries,
        "jobConfig": {"SingularityHubProxy": {"server": "", "master_token": "", "cache_validity_seconds": 0}},
    }


def config_map(name: str, data: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data}


def secret(name: str, data: dict[str, bytes], namespace: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        "type": "Opaque",
    }


def log_request(body: dict[str, Any], container: str = "c", **opts: Any) -> dict[str, Any]:
    """The LogRequest interLink sends to /getLogs for one container of the pod (opts override the defaults)."""
    meta = body["pod"]["metadata"]
    return {
        "Namespace": meta["namespace"], "PodUID": meta["uid"], "PodName": meta["name"], "ContainerName": container,
        "Opts": {"Tail": 0, "Bytes": 0, "Timestamps": False, "Follow": False, "Previous": False,
                 "SinceSeconds": 0, "SinceTime": "0001-01-01T00:00:00Z", **opts},
    }


def status_pod(body: dict[str, Any]) -> dict[str, Any]:
    """The v1.Pod interLink sends to /status and /delete (with the JobID annotation set after create)."""
    return copy.deepcopy(body["pod"])
