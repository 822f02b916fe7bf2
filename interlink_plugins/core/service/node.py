"""The virtual node's status for /ping: the capacity the scheduler offers, and taints for what is down."""

from __future__ import annotations

from typing import Any

from interlink_plugins.core.backend import Resources
from interlink_plugins.core.errors import BackendUnavailable
from interlink_plugins.core.service.shared import Shared

BACKEND_TAINT = "interlink.eu/backend-unavailable"
PARTITION_TAINT = "interlink.eu/partition-unavailable"


class NodeStatus:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.resources = Resources()
        self.resources_at = 0.0

    async def refresh_resources(self, now: float) -> None:
        """The capacity, asked again at most every 30 s (or poll interval)."""
        shared = self.shared
        if now - self.resources_at < max(30.0, shared.config.poll_interval):
            return
        try:
            self.resources = await shared.backend.resources()
            self.resources_at = now
            shared.mark_up()
        except BackendUnavailable as exc:
            shared.mark_down(exc)

    def ping(self) -> dict[str, Any]:
        config, down = self.shared.config, self.shared.down_since is not None
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in config.taints]
        if down:
            taints.append({"key": BACKEND_TAINT, "value": "true", "effect": "NoSchedule"})
        resources = self.resources
        if resources.unavailable_reason:
            taints.append({"key": PARTITION_TAINT, "value": "true", "effect": "NoSchedule"})
        answer: dict[str, Any] = {"status": "ok", "taints": taints}
        if not down:
            payload: dict[str, Any] = {}
            cpus = resources.cpus
            if config.max_cpus:
                cpus = min(cpus, config.max_cpus)
            memory_mib = resources.memory_bytes // 2**20
            if config.max_memory_mib:
                memory_mib = min(memory_mib, config.max_memory_mib)
            if cpus > 0:
                payload["cpu"] = str(cpus)
            if memory_mib > 0:
                payload["memory"] = f"{memory_mib}Mi"
            accelerators = [
                {"resourceType": kind, "available": str(count)} for kind, count in resources.gpus.items() if count > 0
            ]
            if accelerators:
                payload["accelerators"] = accelerators
            if payload:
                answer["resources"] = payload
        return answer
