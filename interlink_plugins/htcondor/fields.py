"""The HTCondor column of the pod field table (core/model/podfields.py): where HTCondor differs from the table."""

from __future__ import annotations

from interlink_plugins.core.model.podfields import FieldColumn, register

COLUMN = register(FieldColumn(
    name="htcondor",
    title="HTCondor",
    verdicts={"ResourceList.*": "R"},
    notes={
        "ResourceList.nvidia.com/gpu": "request_gpus",
        "ResourceList.amd.com/gpu": "request_gpus",
        "ResourceList.ephemeral-storage": "request_disk",
        "ResourceList.*": "HTCondor has no equivalent",
    },
    conditions=frozenset({"probes", "runtime-group", "runtime-user", "pull-policy"}),
    why={"runtime-user": ("on HTCondor only ContainerRuntime podman runs a container as another user",
                          "without runtime podman")},
))
