"""interLink 0.6.2's virtual kubelet turning a plugin's /status answer into a pod phase.

Read from pkg/virtualkubelet/execute.go (checkPodsStatus, handleInitContainersUpdate,
handleContainersUpdate); the state is kept across polls, as the VK keeps the pod:

- init containers: any waiting -> "waiting for init containers", any running -> "init" (unless
  every init container is terminated); main containers are then reported waiting;
- main containers: terminated ones are counted (exit != 0 marks the pod errored), a running one
  makes the pod Running (and stays so: the VK never moves Running back);
- the pod is finished only when the number of terminated main containers equals the number of
  main containers the plugin returned: Failed if any container or init container exited
  non-zero, else Succeeded; otherwise Pending while init containers wait or run;
- a finished pod is never polled again.

So a plugin that leaves main containers waiting after a failed init container keeps the pod
Pending for ever, and an empty ``containers`` list makes it Succeeded at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("Succeeded", "Failed")


class ProtocolError(AssertionError):
    """The plugin's answer breaks what the VK relies on (it would crash or lose the pod)."""


@dataclass
class VKPod:
    """One pod as interLink's virtual kubelet tracks it."""

    init_names: tuple[str, ...]
    names: tuple[str, ...]
    phase: str = "Pending"
    reason: str = ""
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    init_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    def _check_names(self, entries: list[dict[str, Any]], expected: tuple[str, ...], what: str) -> None:
        got = [str(e.get("name")) for e in entries]
        if sorted(got) != sorted(expected):
            raise ProtocolError(f"{what}: the plugin returned {got}, the pod has {list(expected)}")

    def apply(self, status: dict[str, Any]) -> str:
        """Feed one /status entry; returns the phase after it."""
        if self.finished:
            return self.phase
        containers = list(status.get("containers") or [])
        inits = list(status.get("initContainers") or [])
        self._check_names(containers, self.names, "containers")
        self._check_names(inits, self.init_names, "initContainers")
        for entry in containers + inits:
            state = entry.get("state") or {}
            if len([k for k in ("waiting", "running", "terminated") if k in state]) > 1:
                raise ProtocolError(f"container {entry.get('name')}: more than one state {state}")

        waiting_for_init = False
        init_running = False
        init_errored = False
        init_reason = ""
        init_terminated = 0
        for entry in inits:
            self.init_statuses[entry["name"]] = entry
            state = entry.get("state") or {}
            if "terminated" in state:
                init_terminated += 1
                if state["terminated"].get("exitCode", 0) != 0:
                    init_errored = True
                    init_reason = f"Error: {state['terminated']['exitCode']}"
            elif "waiting" in state:
                waiting_for_init = True
            elif "running" in state:
                init_running = True
        if init_terminated == len(inits):
            waiting_for_init = False

        terminated = 0
        errored = False
        reason = ""
        running = False
        for entry in containers:
            self.statuses[entry["name"]] = entry
            state = entry.get("state") or {}
            if waiting_for_init or init_running:
                continue  # the VK shows it waiting (PodInitializing / Init:n/m)
            if "terminated" in state:
                terminated += 1
                if state["terminated"].get("exitCode", 0) != 0:
                    errored = True
                    reason = f"Error: {state['terminated']['exitCode']}"
            elif "running" in state:
                running = True

        if terminated == len(containers):
            if errored or init_errored:
                self.phase, self.reason = "Failed", reason or init_reason
            else:
                self.phase, self.reason = "Succeeded", "Completed"
        else:
            if init_running:
                self.phase, self.reason = "Pending", "Init"
            if waiting_for_init:
                self.phase, self.reason = "Pending", "Waiting for init containers"
            if running and self.phase != "Running":
                self.phase, self.reason = "Running", "Running"
        return self.phase


def vk_pod_for(body: dict[str, Any]) -> VKPod:
    spec = body["pod"]["spec"]
    return VKPod(
        init_names=tuple(c["name"] for c in spec.get("initContainers") or []),
        names=tuple(c["name"] for c in spec["containers"]),
    )
