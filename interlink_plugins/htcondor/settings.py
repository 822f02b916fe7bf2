"""The HTCondor section of the config: the schedd and collector, security, data mode, held jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from interlink_plugins.config import (
    Config,
    ConfigSection,
    FieldSpec,
    data_root_problem,
    parse_choice,
    parse_optional_argv,
    parse_optional_path,
    parse_seconds,
    parse_str,
    parse_str_list,
    parse_str_map,
)
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.htcondor import policy

HTCONDOR_AUTH = ("CLAIMTOBE", "IDTOKENS", "SSL", "SCITOKENS", "FS", "KERBEROS", "MUNGE")
HTCONDOR_DATA_MODES = ("shared", "spool")


@dataclass(frozen=True)
class HTCondorSettings:
    """The HTCondor section's values (``config.section(HTCondorSettings)``)."""

    htcondor_schedd: str = ""
    htcondor_collector: str = ""
    htcondor_auth: tuple[str, ...] = ()
    htcondor_token_file: str = ""
    htcondor_ca_file: str = ""
    htcondor_cert_file: str = ""
    htcondor_key_file: str = ""
    htcondor_params: Mapping[str, str] = field(default_factory=dict)
    htcondor_job_user: str = ""
    htcondor_data_mode: str = "shared"
    htcondor_tail: tuple[str, ...] = ()
    held_timeout: float = 1800.0


def _auth_methods(key: str, value: Any) -> tuple[str, ...]:
    methods = tuple(m.upper() for m in parse_str_list(key, value))
    for method in methods:
        if method not in HTCONDOR_AUTH:
            raise ConfigError(f"{key}: {method!r} is not one of {', '.join(HTCONDOR_AUTH)}")
    return methods


FIELDS: dict[str, FieldSpec] = {
    "HTCondorSchedd": FieldSpec(
        "htcondor_schedd",
        parse_str,
        "HTCondor: schedd name (located through the collector; empty: the pool's only one).",
    ),
    "HTCondorCollector": FieldSpec(
        "htcondor_collector", parse_str, "HTCondor: collector host[:port] (empty: the local HTCondor configuration)."
    ),
    "HTCondorAuth": FieldSpec(
        "htcondor_auth",
        _auth_methods,
        "HTCondor: client authentication methods in order, e.g. [IDTOKENS] (CLAIMTOBE, IDTOKENS, SSL, SCITOKENS, "
        "FS, KERBEROS, MUNGE; empty: the HTCondor configuration's).",
    ),
    "HTCondorTokenFile": FieldSpec(
        "htcondor_token_file",
        parse_optional_path,
        "HTCondor: IDTOKENS token or SciToken file (re-read when it changes).",
    ),
    "HTCondorCAFile": FieldSpec(
        "htcondor_ca_file", parse_optional_path, "HTCondor SSL: CA bundle to verify the daemons."
    ),
    "HTCondorCertFile": FieldSpec("htcondor_cert_file", parse_optional_path, "HTCondor SSL: client certificate."),
    "HTCondorKeyFile": FieldSpec("htcondor_key_file", parse_optional_path, "HTCondor SSL: client private key."),
    "HTCondorParams": FieldSpec(
        "htcondor_params",
        parse_str_map,
        "HTCondor: extra client configuration for the bindings and the tail command, e.g. "
        "{SEC_CLAIMTOBE_USER: svc, FILESYSTEM_DOMAIN: site}.",
    ),
    "HTCondorJobUser": FieldSpec(
        "htcondor_job_user",
        parse_str,
        "HTCondor shared mode: user (name or uid) jobs run as; a root plugin hands each job dir to it.",
    ),
    "HTCondorDataMode": FieldSpec(
        "htcondor_data_mode",
        parse_choice(HTCONDOR_DATA_MODES),
        "HTCondor: shared (DataRootFolder seen by the execute nodes) or spool (inputs spooled, outputs retrieved).",
    ),
    "HTCondorTailCommand": FieldSpec(
        "htcondor_tail",
        parse_optional_argv,
        "HTCondor spool mode: condor_tail command for live logs (argv prefix); empty: logs after completion only.",
    ),
    "HeldTimeout": FieldSpec(
        "held_timeout", parse_seconds, "HTCondor: a job held this long is removed and its pod reported Failed."
    ),
}


def check(config: Config) -> list[str]:
    """Job dirs are named in submit descriptions, where `$` is a macro."""
    if config.backend == "htcondor" and "$" in str(config.data_root):
        raise ConfigError(data_root_problem(str(config.data_root), (SECTION,)))
    return []


SECTION = ConfigSection(
    "HTCondor",
    FIELDS,
    backend="htcondor",
    settings_type=HTCondorSettings,
    policy=policy.SECTION,
    check=check,
    data_root_rule="`$`",
    secret_files={"HTCondorTokenFile": "htcondor_token_file", "HTCondorKeyFile": "htcondor_key_file"},
)
