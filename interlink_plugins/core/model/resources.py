"""Pod totals from per-container amounts (DESIGN "Resources").

Pod total = max(sum over main containers and sidecar init containers, max over other init
containers), per resource: init containers run one at a time before the others.
"""

from __future__ import annotations

from interlink_plugins.core.model.pod import Container, ContainerResources, Pod


def _amounts(container: Container) -> dict[str, int]:
    resources = container.resources
    return {"cpu": resources.cpu_millis, "memory": resources.memory_bytes, **resources.extended}


def pod_totals(pod: Pod) -> ContainerResources:
    concurrent = [c for c in pod.containers] + [c for c in pod.init_containers if c.is_sidecar]
    sequential = [c for c in pod.init_containers if not c.is_sidecar]
    names = {name for c in pod.all_containers for name in _amounts(c)}
    totals: dict[str, int] = {}
    for name in names:
        together = sum(_amounts(c).get(name, 0) for c in concurrent)
        alone = max((_amounts(c).get(name, 0) for c in sequential), default=0)
        totals[name] = max(together, alone)
    cpu = totals.pop("cpu", 0)
    memory = totals.pop("memory", 0)
    return ContainerResources(cpu_millis=cpu, memory_bytes=memory, extended={k: v for k, v in totals.items() if v})
