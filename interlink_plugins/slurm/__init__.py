"""The SLURM backend; importing the package registers its column of the pod field table."""

from interlink_plugins.slurm import fields as _fields  # noqa: F401
