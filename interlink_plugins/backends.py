"""Backend registry: adding a backend is one module and one line here (and its policy section, if any)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from interlink_plugins.config import Config
from interlink_plugins.core import policy as core_policy
from interlink_plugins.core.backend import Backend
from interlink_plugins.core.podfields import FieldColumn
from interlink_plugins.core.policy import AdminPolicy, PolicySection
from interlink_plugins.core.runner import CommandRunner
from interlink_plugins.exitcodes import ExitCode, UserError
from interlink_plugins.htcondor import fields as htcondor_fields
from interlink_plugins.htcondor import policy as htcondor_policy
from interlink_plugins.podman import fields as podman_fields
from interlink_plugins.slurm import fields as slurm_fields
from interlink_plugins.slurm import policy as slurm_policy

# the backends' columns of the pod field table, in the docs' order
FIELD_COLUMNS: tuple[FieldColumn, ...] = (slurm_fields.COLUMN, htcondor_fields.COLUMN, podman_fields.COLUMN)

# the backends' sections of the admin policy, in the order their annotation keys are looked up
POLICY_SECTIONS: tuple[PolicySection, ...] = (slurm_policy.SECTION, htcondor_policy.SECTION)


def policy_from_config(raw: Mapping[str, Any]) -> AdminPolicy:
    """The AdminPolicy of the config's policy keys, with every backend's section."""
    return core_policy.policy_from_config(raw, POLICY_SECTIONS)


def _slurm(config: Config, runner: CommandRunner, policy: AdminPolicy) -> Backend:
    from interlink_plugins.slurm.backend import SlurmBackend

    if config.ssh_host and config.data_transfer == "sftp":
        # the data root exists only on the login node: job files over SFTP
        from interlink_plugins.core.ssh import ssh_runner
        from interlink_plugins.slurm.remote import RemoteSlurmBackend

        return RemoteSlurmBackend(config, runner, policy, ssh_runner(config))
    return SlurmBackend(config, runner, policy)


def _podman(config: Config, runner: CommandRunner, policy: AdminPolicy) -> Backend:
    from interlink_plugins.podman.backend import PodmanBackend

    return PodmanBackend(config, runner, policy)


def _htcondor(config: Config, runner: CommandRunner, policy: AdminPolicy) -> Backend:
    if importlib.util.find_spec("htcondor2") is None:  # an extra: SLURM and Podman sites install without it
        raise UserError(ExitCode.CONFIG, "config error: Backend htcondor needs the HTCondor bindings: "
                        "pip install 'interlink-plugins[htcondor]'")
    from interlink_plugins.htcondor.backend import HTCondorBackend

    return HTCondorBackend(config, runner, policy)


BACKENDS: dict[str, Callable[[Config, CommandRunner, AdminPolicy], Backend]] = {
    "slurm": _slurm,
    "podman": _podman,
    "htcondor": _htcondor,
}


def make_backend(config: Config, runner: CommandRunner, policy: AdminPolicy) -> Backend:
    try:
        factory = BACKENDS[config.backend]
    except KeyError:
        raise SystemExit(f"Backend {config.backend!r} is not available in this release") from None
    return factory(config, runner, policy)
