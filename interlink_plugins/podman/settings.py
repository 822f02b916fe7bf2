"""The Podman section of the config: the pods' network and GPU devices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from interlink_plugins.config import (
    Config,
    ConfigSection,
    FieldSpec,
    parse_str,
    parse_str_list_map,
)
from interlink_plugins.core.errors import ConfigError


@dataclass(frozen=True)
class PodmanSettings:
    """The Podman section's values (``config.section(PodmanSettings)``)."""

    podman_pod_network: str = ""
    gpu_cdi_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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

def probe(config: Config) -> list[tuple[bool, str]]:
    """What `check` reports of the GPU map: each CDI device it names, found in the host's CDI specs."""
    gpu_map = config.section(PodmanSettings).gpu_cdi_map
    if not gpu_map:
        return []
    if any(word in ("--remote", "-r") or word.startswith(("--url", "--connection")) for word in config.podman):
        return [(True, "GpuCdiMap: CDI specs are on the remote podman's host (not checked here)")]
    from interlink_plugins.podman.cdi import gpu_map_report, scan_specs

    return list(gpu_map_report(gpu_map, scan_specs()))


SECTION = ConfigSection("Podman", FIELDS, backend="podman", settings_type=PodmanSettings, probe=probe)
