"""The backend-neutral lifecycle: create, status, delete, logs and ping around one Backend.

Routes call PluginService (service/plugin.py); the poll loop keeps the status cache fresh with ONE scheduler
query per interval. The parts, one job each: submissions, deletions, poller, statuses (the status cache),
logs and node (ping). Nothing here knows SLURM, HTCondor or Podman.
"""

from interlink_plugins.core.service.logs import LogRequest
from interlink_plugins.core.service.node import BACKEND_TAINT, PARTITION_TAINT
from interlink_plugins.core.service.plugin import FIRST_POLL_SECONDS, FIRST_RESOURCES_SECONDS, PluginService
from interlink_plugins.core.service.statuses import POD_FILES_SECONDS, REREAD_SECONDS, VANISHED_AFTER_SECONDS
from interlink_plugins.core.service.submissions import THROTTLE_BACKOFF_MAX

__all__ = [
    "BACKEND_TAINT",
    "FIRST_POLL_SECONDS",
    "FIRST_RESOURCES_SECONDS",
    "PARTITION_TAINT",
    "POD_FILES_SECONDS",
    "REREAD_SECONDS",
    "THROTTLE_BACKOFF_MAX",
    "VANISHED_AFTER_SECONDS",
    "LogRequest",
    "PluginService",
]
