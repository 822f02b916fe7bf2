"""The Podman section of the config: the pods' network and GPU devices."""

from __future__ import annotations

from typing import Any

from interlink_plugins.config import (
    ConfigSection,
    FieldSpec,
    parse_str,
    parse_str_list_map,
)
from interlink_plugins.core.errors import ConfigError


def _network(key: str, value: Any) -> str:
    text = parse_str(key, value).strip()
    if text.startswith("-") or any(ch.isspace() for ch in text):
        raise ConfigError(f"{key}: {value!r} is not a podman network mode or name")
    return text


FIELDS: dict[str, FieldSpec] = {
    "PodmanPodNetwork": FieldSpec(
        "podman_pod_network",
        _network,
        "Podman backend: network of each pod (podman's default when empty: bridge as root, slirp4netns "
        "rootless; or none, host, a network name). Containers of a pod always share it (localhost).",
    ),
    "GpuCdiMap": FieldSpec(
        "gpu_cdi_map",
        parse_str_list_map,
        "Podman backend: GPU resource -> CDI device names, e.g. nvidia.com/gpu: [nvidia.com/gpu=0, nvidia.com/gpu=1].",
    ),
}

SECTION = ConfigSection("Podman", FIELDS)
