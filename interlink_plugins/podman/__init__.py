"""The Podman backend; importing the package registers its column of the pod field table."""

from interlink_plugins.podman import fields as _fields  # noqa: F401
