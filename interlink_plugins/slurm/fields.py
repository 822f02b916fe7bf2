"""The SLURM column of the pod field table (core/model/podfields.py): where SLURM differs from the table."""

from __future__ import annotations

from interlink_plugins.core.model.podfields import FieldColumn, register

COLUMN = register(FieldColumn(
    name="slurm",
    title="SLURM",
    conditions=frozenset({"probes", "runtime-group", "pull-policy"}),
))
