"""Podman container states and command errors as data: what each means for a pod container."""

from __future__ import annotations

import re
from typing import Literal

Phase = Literal["created", "running", "ended", "gone"]

# `podman ps --format json` State -> phase of that run
STATES: dict[str, Phase] = {
    "configured": "created",
    "created": "created",
    "initialized": "created",
    "running": "running",
    "paused": "running",
    "stopping": "running",
    "exited": "ended",
    "stopped": "ended",
    "removing": "gone",
    "unknown": "created",
}


def phase_of(state: str) -> Phase:
    return STATES.get(state.strip().lower(), "created")


# podman cannot do anything at all (remote service down, storage locked, binary broken)
UNREACHABLE = re.compile(
    r"cannot connect to podman|unable to connect to podman|connection refused|no such file or directory.*\.sock"
    r"|database is locked|error opening database|timed out|resource temporarily unavailable|podman-unreachable",
    re.IGNORECASE,
)
# podman 4 (unlike the CRI runtimes) refuses a workingDir missing from the image: the plugin creates it
WORKDIR_MISSING = re.compile(r'workdir "[^"]*" does not exist on container', re.IGNORECASE)
NOT_FOUND_IN_CONTAINER = re.compile(r"could not be found on container|no such file or directory", re.IGNORECASE)
NAME_IN_USE = re.compile(r"already in use|already exists", re.IGNORECASE)
NO_SUCH = re.compile(r"no such (pod|container|object)|no pod with name or id|no container with name or id",
                     re.IGNORECASE)
_IMAGE = re.compile(
    r"image not known|manifest unknown|image not found|pull access denied|initializing source"
    r"|reading manifest|unable to pull|failed to resolve image|short-name",
    re.IGNORECASE,
)

# exit codes of `podman run`: 125 podman itself failed; 126 the command cannot be invoked;
# 127 the command was not found (the container exists, in state "created")
START_FAILED_CODES = (126, 127)
START_ERROR_EXIT = 128  # what the kubelet reports for a container that could not start (StartError)


def create_failure_reason(error: str, pull_policy_never: bool) -> str:
    """The kubelet's waiting reason for a container podman could not create."""
    if _IMAGE.search(error):
        return "ErrImageNeverPull" if pull_policy_never else "ErrImagePull"
    return "CreateContainerError"
