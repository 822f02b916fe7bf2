"""Backend registry: a backend is its package (backend, settings, policy, fields) and its entries here."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from interlink_plugins import config as common_config
from interlink_plugins.config import Config, ConfigSection, FieldSpec
from interlink_plugins.core.backend import Backend
from interlink_plugins.core.commands.local import CommandRunner
from interlink_plugins.core.model.podfields import FieldColumn
from interlink_plugins.core.policy import engine as core_policy
from interlink_plugins.core.policy.engine import AdminPolicy, PolicySection
from interlink_plugins.exitcodes import ExitCode, UserError
from interlink_plugins.htcondor import fields as htcondor_fields
from interlink_plugins.htcondor import settings as htcondor_settings
from interlink_plugins.podman import fields as podman_fields
from interlink_plugins.podman import settings as podman_settings
from interlink_plugins.slurm import fields as slurm_fields
from interlink_plugins.slurm import settings as slurm_settings

# every backend's section of the config (its keys, policy section, checks), in the docs' order; the
# policy sections' order is the order their annotation keys are looked up in
CONFIG_SECTIONS: tuple[ConfigSection, ...] = (slurm_settings.SECTION, htcondor_settings.SECTION,
                                              podman_settings.SECTION)
POLICY_SECTIONS: tuple[PolicySection, ...] = common_config.policy_sections(CONFIG_SECTIONS)
FIELDS: dict[str, FieldSpec] = common_config.all_fields(CONFIG_SECTIONS)
POLICY_KEYS: tuple[str, ...] = core_policy.policy_keys(POLICY_SECTIONS)
# the backends' columns of the pod field table, in the docs' order
FIELD_COLUMNS: tuple[FieldColumn, ...] = (slurm_fields.COLUMN, htcondor_fields.COLUMN, podman_fields.COLUMN)
# the Go SLURM plugin's config file when no --config is given (the drop-in contract: a Go plugin's site starts
# the same way) and its help; what `check` says about the jobs' uids
default_config_path = slurm_settings.default_config_path
DEFAULT_CONFIG_HELP = slurm_settings.DEFAULT_CONFIG_HELP
job_uid_summary = slurm_settings.job_uid_summary


def parse_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config of the common keys and every backend's; returns (config, warnings). ConfigError for bad values."""
    return common_config.parse_config(raw, CONFIG_SECTIONS, environ=environ)


def load_config(path: Path) -> tuple[Config, list[str]]:
    """The config file at path, parsed (secret files readable by others are warned)."""
    return common_config.load_config(path, CONFIG_SECTIONS)


def config_reference_markdown() -> str:
    """docs/config-reference.md: one heading per section."""
    return common_config.config_reference_markdown(CONFIG_SECTIONS)


def reloaded_config(current: Config, fresh: Config) -> Config:
    """SIGHUP: ``current`` with the keys every section re-reads taken from ``fresh``."""
    return common_config.reloaded(current, fresh, CONFIG_SECTIONS)


def backend_probe(config: Config) -> list[tuple[bool, str]]:
    """What `check` reports of the configured backend's own settings on this host, as (ok, line)."""
    return [found for section in CONFIG_SECTIONS if section.backend == config.backend and section.probe is not None
            for found in section.probe(config)]


def policy_from_config(raw: Mapping[str, Any]) -> AdminPolicy:
    """The AdminPolicy of the config's policy keys, with every backend's section."""
    return core_policy.policy_from_config(raw, POLICY_SECTIONS)


def _slurm(config: Config, runner: CommandRunner, policy: AdminPolicy) -> Backend:
    from interlink_plugins.slurm.backend import SlurmBackend

    if config.ssh_host and config.data_transfer == "sftp":
        # the data root exists only on the login node: job files over SFTP
        from interlink_plugins.core.commands.ssh import ssh_runner
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
