"""The Podman column of the pod field table (core/model/podfields.py): where Podman differs from the table."""

from __future__ import annotations

from typing import Any

from interlink_plugins.core.model.podfields import FieldColumn, register
from interlink_plugins.podman.settings import PodmanSettings


def _pod_network(config: Any) -> str:
    return str(config.section(PodmanSettings).podman_pod_network)


COLUMN = register(FieldColumn(
    name="podman",
    title="Podman",
    verdicts={"ContainerPort.hostIP": "H", "ContainerPort.hostPort": "H", "ResourceList.ephemeral-storage": "W"},
    notes={
        "PodSpec.hostNetwork": "with PodmanPodNetwork host",
        "PodSpec.hostname": "the hostname is the pod's name",
        "PodSpec.restartPolicy": "podman itself",
        "ContainerPort.hostPort": "published on the pod",
        "ResourceList.cpu": "--cpus and --cpu-shares",
        "ResourceList.memory": "--memory",
        "ResourceList.nvidia.com/gpu": "CDI devices",
        "ResourceList.amd.com/gpu": "CDI devices",
        "ResourceList.ephemeral-storage": "podman does not limit it",
        "ResourceList.*": "through GpuCdiMap, a 422 when it does not map it",
    },
    conditions=frozenset({"host-network"}),
    why={"host-network": ("a Podman pod's network is the admin's PodmanPodNetwork", "unless PodmanPodNetwork is host")},
    pod_network=_pod_network,
))
