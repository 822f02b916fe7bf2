"""Which CDI devices this host defines: the spec files podman reads (for `interlink-plugin check`).

A GpuCdiMap entry that no spec defines would only fail at the first GPU pod (`podman run --device`
refuses an unknown CDI name); `check` reports it at install time instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# podman's defaults (containers.conf cdi_spec_dirs); later directories override earlier ones
CDI_SPEC_DIRS: tuple[Path, ...] = (Path("/etc/cdi"), Path("/var/run/cdi"))


@dataclass
class CdiScan:
    devices: dict[str, Path] = field(default_factory=dict)  # fully-qualified name (vendor/class=name) -> spec
    broken: list[str] = field(default_factory=list)  # "<file>: why" for specs that cannot be read


def scan_specs(dirs: Iterable[Path] = CDI_SPEC_DIRS) -> CdiScan:
    found = CdiScan()
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file():
                continue
            try:
                spec: Any = yaml.safe_load(path.read_text())  # JSON is YAML
                kind = spec["kind"]
                names = [str(device["name"]) for device in spec.get("devices") or ()]
                if not isinstance(kind, str) or "/" not in kind:
                    raise ValueError(f"kind {kind!r} is not vendor/class")
            except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
                found.broken.append(f"{path}: {exc}")
                continue
            for name in names:
                found.devices[f"{kind}={name}"] = path
    return found


def gpu_map_report(gpu_map: Mapping[str, Sequence[str]], scan: CdiScan) -> list[tuple[bool, str]]:
    """(ok, line) per GpuCdiMap resource: are all its CDI devices defined by a spec on this host?"""
    lines: list[tuple[bool, str]] = [(False, f"CDI spec {problem}") for problem in scan.broken]
    where = ", ".join(str(d) for d in CDI_SPEC_DIRS)
    for resource, names in sorted(gpu_map.items()):
        missing = [name for name in names if name not in scan.devices]
        if missing:
            lines.append((False, f"GpuCdiMap {resource}: {', '.join(missing)} not defined by any CDI spec in {where}"
                                 " (on an NVIDIA host: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)"))
        else:
            specs = sorted({str(scan.devices[name]) for name in names})
            lines.append((True, f"GpuCdiMap {resource}: {len(names)} CDI devices defined ({', '.join(specs)})"))
    return lines
