"""The HTCondor section of the admin policy: the submit commands a pod may add, the annotation keys,
the config keys (AllowedSubmitCommands, ExtraSubmitCommands) and the namespace choice AccountingGroups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interlink_plugins.core.errors import ConfigError
from interlink_plugins.core.policy import annotations as ann
from interlink_plugins.core.policy.engine import AdminPolicy, PolicySection, PolicyViolation, show, str_list

SUBMIT_COMMANDS_ANNOTATION = "htcondor-job.vk.io/submit-commands"
ACCOUNTING_GROUP_ANNOTATION = "htcondor-job.vk.io/accounting-group"
IMAGE_ROOT = ("htcondor-job.knoc.io/image-root",)
SINGULARITY_OPTIONS = ("htcondor-job.vk.io/singularity-options",)

# HTCondor submit commands a pod may add (annotation htcondor-job.vk.io/submit-commands, one
# `key = value` a line): matchmaking and GPU shape only. Custom attributes (`+Name`/`MY.Name`) only
# when an admin lists them (ExtraSubmitCommands: ["+ProjectName"]). Values may not use `$`: submit
# macros ($ENV(...) reads the plugin's environment, $(...) other commands) are never expanded.
DEFAULT_SUBMIT_ALLOW: frozenset[str] = frozenset(
    {
        "requirements", "rank", "priority", "concurrency_limits", "require_gpus",
        "gpus_minimum_capability", "gpus_maximum_capability", "gpus_minimum_memory", "gpus_minimum_runtime",
    }
)  # fmt: skip

# Refused even when an admin lists them: what the plugin sets itself (the job, its files, its
# identity, its resources from the pod, its policy expressions) and what reads plugin-host files.
NEVER_ALLOWED_SUBMIT: frozenset[str] = frozenset(
    {
        "universe", "executable", "arguments", "args", "environment", "env", "getenv", "initialdir",
        "initial_dir", "iwd", "input", "output", "error", "log", "log_xml", "stream_input", "stream_output",
        "stream_error", "transfer_executable", "transfer_input_files", "transfer_output_files",
        "transfer_output_remaps", "should_transfer_files", "when_to_transfer_output", "preserve_relative_paths",
        "accounting_group", "accounting_group_user", "periodic_remove", "periodic_hold", "periodic_hold_reason",
        "periodic_hold_subcode", "periodic_release", "on_exit_remove", "on_exit_hold", "allowed_execute_duration",
        "allowed_job_duration", "job_max_vacate_time", "leave_in_queue", "queue", "batch_name", "jobbatchname",
        "hold", "notification", "notify_user", "run_as_owner", "load_profile", "kill_sig", "remove_kill_sig",
        "hold_kill_sig", "max_retries", "success_exit_code", "request_cpus", "request_memory", "request_disk",
        "request_gpus", "x509userproxy", "use_x509userproxy", "use_oauth_services", "scitokens_file",
        "container_image", "docker_image", "+interlinkpoduid", "+interlinkinstance", "+interlinkjobdir",
        "+interlinkcontainers", "+owner", "+user", "+acctgroup", "+acctgroupuser", "+accountinggroup",
        "+wantioproxy", "+singularityimage", "+jobbatchname", "+iwd", "+cmd", "+environment", "+env",
    }
)  # fmt: skip


def submit_key(key: str) -> str:
    """Canonical spelling of a submit command: lower case, `MY.Name` as `+name`."""
    key = key.strip().lower()
    return "+" + key[3:] if key.startswith("my.") else key


@dataclass(frozen=True)
class HTCondorPolicy:
    """The HTCondor section's settings: the submit commands a pod may add."""

    submit_allow: frozenset[str] = DEFAULT_SUBMIT_ALLOW


def htcondor_policy(policy: AdminPolicy) -> HTCondorPolicy:
    """The HTCondor settings of a policy (the defaults when the config sets none)."""
    return policy.section(SECTION_NAME, HTCondorPolicy) or HTCondorPolicy()


def submit_commands(policy: AdminPolicy, text: str, *, field: str) -> list[tuple[str, str]]:
    """Parse `key = value` lines (HTCondor submit syntax) and check each key against the allow-list."""
    if not isinstance(text, str):
        raise PolicyViolation(field, "must be a string", 422)
    allow = htcondor_policy(policy).submit_allow
    commands: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, eq, value = line.partition("=")
        name = submit_key(key)
        if not eq or not name or not all(c.isalnum() or c in "_.+" for c in name):
            raise PolicyViolation(field, f"line {number}: expected `key = value`, got {show(line)}", 422)
        value = value.strip()
        if "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise PolicyViolation(field, f"line {number}: {name}: `$` and control characters are not allowed", 422)
        if name in NEVER_ALLOWED_SUBMIT:
            raise PolicyViolation(field, f"line {number}: {show(key.strip())} is reserved by the plugin")
        if name not in allow:
            raise PolicyViolation(field, f"line {number}: {show(key.strip())} is not allowed")
        commands.append((name, value))
    return commands


def accounting_group(policy: AdminPolicy, namespace: str, requested: str, *, field: str) -> str:
    """The namespace's accounting group: the requested one if the namespace may use it, else its first."""
    ns = policy.namespace_policy(namespace)
    groups = ns.choice(ACCOUNTING_GROUPS) if ns is not None else ()
    if requested:
        if requested not in groups:
            raise PolicyViolation(
                field, f"accounting group {show(requested)} is not allowed for namespace {namespace!r}"
            )
        return requested
    return groups[0] if groups else ""


def _submit_names(key: str, raw: Any) -> frozenset[str]:
    names: set[str] = set()
    for item in str_list(key, raw):
        name = submit_key(item)
        if not all(c.isalnum() or c in "_.+" for c in name):
            raise ConfigError(f"{key}: bad value {item!r} (not a submit command)")
        if name in NEVER_ALLOWED_SUBMIT:
            raise ConfigError(f"{key}: bad value {item!r} (reserved by the plugin, never allowed)")
        names.add(name)
    return frozenset(names)


def _parse(raw: Mapping[str, Any]) -> HTCondorPolicy:
    allow = DEFAULT_SUBMIT_ALLOW
    if "AllowedSubmitCommands" in raw:
        allow = _submit_names("AllowedSubmitCommands", raw["AllowedSubmitCommands"])
    if "ExtraSubmitCommands" in raw:
        allow = allow | _submit_names("ExtraSubmitCommands", raw["ExtraSubmitCommands"])
    return HTCondorPolicy(allow)


ACCOUNTING_GROUPS = "accounting_groups"  # the namespace choice: HTCondor accounting_group (the first is the default)
SECTION_NAME = "htcondor"
SECTION = PolicySection(
    name=SECTION_NAME,
    title="HTCondor",
    parse=_parse,
    keys={
        "AllowedSubmitCommands": "replaces the default allow-list of HTCondor submit commands a pod may add",
        "ExtraSubmitCommands": "added to it, e.g. `+ProjectName`",
    },
    namespace_keys={"AccountingGroups": ACCOUNTING_GROUPS},
    annotations={ann.IMAGE_ROOT: IMAGE_ROOT, ann.SINGULARITY_OPTIONS: SINGULARITY_OPTIONS},
)
