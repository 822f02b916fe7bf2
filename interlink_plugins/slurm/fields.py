"""The SLURM column of the pod field table (core/model/podfields.py): where SLURM differs from the table."""

from __future__ import annotations

from interlink_plugins.core.model.podfields import FieldColumn, register

COLUMN = register(FieldColumn(
    name="slurm",
    title="SLURM",
    notes={
        "ResourceList.nvidia.com/gpu": "--gres=gpu",
        "ResourceList.amd.com/gpu": "--gres=gpu",
        "ResourceList.ephemeral-storage": "--tmp",
        "ResourceList.*": "through GresMap, a 422 when it does not map it",
        "SecurityContext.runAsUser": "the job's user, as the namespace policy allows",
        "PodSecurityContext.runAsUser": "the job's user, as the namespace policy allows",
    },
    conditions=frozenset({"probes", "runtime-group", "pull-policy"}),
))
