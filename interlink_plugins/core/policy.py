"""Admin policy: allow-lists for option annotations, host paths, raw shell and per-namespace choices.

Option annotations (``slurm-job.vk.io/flags``, singularity options and mounts) are split with
shlex and parsed exactly as the target tool parses them, so every spelling of an option is seen:

* sbatch (glibc ``getopt_long``): ``--long=v``, ``--long v``, any unique prefix of a long name
  (``--chd`` is ``--chdir``), ``-s v``, ``-sv``, bundled flags (``-vD/x``), optional values only
  when attached (``--nice=5``, ``-kX``).
* apptainer/singularity (Go ``pflag``): ``--long=v``, ``--long v``, ``-s v``, ``-sv``, ``-s=v``,
  bundled booleans; no abbreviations.

Status codes: an annotation that the tool itself could not parse (unbalanced quotes, unknown or
ambiguous option, missing or unexpected value, positional word, control character) is 422; an
option or value the policy refuses is 403.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from interlink_plugins.core.errors import ConfigError, PodSpecError

log = logging.getLogger(__name__)

TakesValue = Literal["no", "required", "optional"]
Style = Literal["getopt", "pflag"]


class PolicyViolation(PodSpecError):
    """An annotation the admin policy refuses; ``field`` is the annotation key."""

    def __init__(self, field: str, message: str, status: int = 403) -> None:
        super().__init__(field, message, status)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option: canonical long name, short letter, whether it takes a value."""

    long: str
    short: str | None
    takes_value: TakesValue


@dataclass(frozen=True)
class ParsedOption:
    """An option found in an annotation, by canonical long name; ``spelling`` is as written."""

    name: str
    value: str | None
    spelling: str = field(default="", compare=False)


def _table(rows: Iterable[tuple[str, str, str | None, TakesValue]]) -> dict[str, OptionSpec]:
    return {key: OptionSpec(long, short, takes) for key, long, short, takes in rows}


# sbatch 22.05.8, taken from the binary itself: every long name getopt_long accepts (enumerated
# through its "ambiguous; possibilities" messages), its has_arg, and every short letter (probed
# one by one). Keys are the spellings getopt knows; aliases point to the canonical long name.
SBATCH_OPTIONS: Mapping[str, OptionSpec] = _table(
    [
        ("account", "account", "A", "required"),
        ("acctg-freq", "acctg-freq", None, "required"),
        ("array", "array", "a", "required"),
        ("batch", "batch", None, "required"),
        ("bb", "bb", None, "required"),
        ("bbf", "bbf", None, "required"),
        ("begin", "begin", "b", "required"),
        ("chdir", "chdir", "D", "required"),
        ("cluster", "clusters", "M", "required"),
        ("cluster-constraint", "cluster-constraint", None, "required"),
        ("clusters", "clusters", "M", "required"),
        ("comment", "comment", None, "required"),
        ("constraint", "constraint", "C", "required"),
        ("container", "container", None, "required"),
        ("context", "context", None, "required"),
        ("contiguous", "contiguous", None, "no"),
        ("core-spec", "core-spec", "S", "required"),
        ("cores-per-socket", "cores-per-socket", None, "required"),
        ("cpu-freq", "cpu-freq", None, "required"),
        ("cpus-per-gpu", "cpus-per-gpu", None, "required"),
        ("cpus-per-task", "cpus-per-task", "c", "required"),
        ("deadline", "deadline", None, "required"),
        ("delay-boot", "delay-boot", None, "required"),
        ("dependency", "dependency", "d", "required"),
        ("distribution", "distribution", "m", "required"),
        ("error", "error", "e", "required"),
        ("exclude", "exclude", "x", "required"),
        ("exclusive", "exclusive", None, "optional"),
        ("export", "export", None, "required"),
        ("export-file", "export-file", None, "required"),
        ("extra-node-info", "extra-node-info", "B", "required"),
        ("get-user-env", "get-user-env", None, "optional"),
        ("gid", "gid", None, "required"),
        ("gpu-bind", "gpu-bind", None, "required"),
        ("gpu-freq", "gpu-freq", None, "required"),
        ("gpus", "gpus", "G", "required"),
        ("gpus-per-node", "gpus-per-node", None, "required"),
        ("gpus-per-socket", "gpus-per-socket", None, "required"),
        ("gpus-per-task", "gpus-per-task", None, "required"),
        ("gres", "gres", None, "required"),
        ("gres-flags", "gres-flags", None, "required"),
        ("help", "help", "h", "no"),
        ("hint", "hint", None, "required"),
        ("hold", "hold", "H", "no"),
        ("ignore-pbs", "ignore-pbs", None, "no"),
        ("input", "input", "i", "required"),
        ("job-name", "job-name", "J", "required"),
        ("kill-on-invalid-dep", "kill-on-invalid-dep", None, "required"),
        ("licenses", "licenses", "L", "required"),
        ("mail-type", "mail-type", None, "required"),
        ("mail-user", "mail-user", None, "required"),
        ("mcs-label", "mcs-label", None, "required"),
        ("mem", "mem", None, "required"),
        ("mem-bind", "mem-bind", None, "required"),
        ("mem-per-cpu", "mem-per-cpu", None, "required"),
        ("mem-per-gpu", "mem-per-gpu", None, "required"),
        ("mincpus", "mincpus", None, "required"),
        ("network", "network", None, "required"),
        ("nice", "nice", None, "optional"),
        ("no-kill", "no-kill", "k", "optional"),
        ("no-requeue", "no-requeue", None, "no"),
        ("nodefile", "nodefile", "F", "required"),
        ("nodelist", "nodelist", "w", "required"),
        ("nodes", "nodes", "N", "required"),
        ("ntasks", "ntasks", "n", "required"),
        ("ntasks-per-core", "ntasks-per-core", None, "required"),
        ("ntasks-per-gpu", "ntasks-per-gpu", None, "required"),
        ("ntasks-per-node", "ntasks-per-node", None, "required"),
        ("ntasks-per-socket", "ntasks-per-socket", None, "required"),
        ("ntasks-per-tres", "ntasks-per-tres", None, "required"),
        ("open-mode", "open-mode", None, "required"),
        ("output", "output", "o", "required"),
        ("overcommit", "overcommit", "O", "no"),
        ("oversubscribe", "oversubscribe", "s", "no"),
        ("parsable", "parsable", None, "no"),
        ("partition", "partition", "p", "required"),
        ("power", "power", None, "required"),
        ("prefer", "prefer", None, "required"),
        ("priority", "priority", None, "required"),
        ("profile", "profile", None, "required"),
        ("propagate", "propagate", None, "optional"),
        ("qos", "qos", "q", "required"),
        ("quiet", "quiet", "Q", "no"),
        ("reboot", "reboot", None, "no"),
        ("requeue", "requeue", None, "no"),
        ("reservation", "reservation", None, "required"),
        ("signal", "signal", None, "required"),
        ("sockets-per-node", "sockets-per-node", None, "required"),
        ("spread-job", "spread-job", None, "no"),
        ("switches", "switches", None, "required"),
        ("tasks-per-node", "ntasks-per-node", None, "required"),
        ("test-only", "test-only", None, "no"),
        ("thread-spec", "thread-spec", None, "required"),
        ("threads-per-core", "threads-per-core", None, "required"),
        ("time", "time", "t", "required"),
        ("time-min", "time-min", None, "required"),
        ("tmp", "tmp", None, "required"),
        ("uid", "uid", None, "required"),
        ("usage", "usage", None, "no"),
        ("use-min-nodes", "use-min-nodes", None, "no"),
        ("verbose", "verbose", "v", "no"),
        ("version", "version", "V", "no"),
        ("wait", "wait", "W", "no"),
        ("wait-all-nodes", "wait-all-nodes", None, "required"),
        ("wckey", "wckey", None, "required"),
        ("wrap", "wrap", None, "required"),
    ]
)

# Pure resource-shape and scheduling requests: they change what the job asks for, never where its
# files go, who it runs as, or how the plugin tracks it. Left out on purpose (an admin may add them
# with ExtraSbatchOptions): deadline (the plugin derives it from activeDeadlineSeconds), priority
# and reboot (honoured when the plugin submits as root/SlurmUser, so a pod could jump the queue or
# reboot nodes), mail-type/mail-user (mail to the shared service account or to any address),
# dependency/kill-on-invalid-dep (job ids of other tenants), hold (the pod would stay pending),
# nodelist/exclude (node pinning is a site decision), wckey/mcs-label (accounting and visibility
# labels), and the tuning knobs (cpu-freq, gpu-freq, power, profile, network, ...).
# nice is allowed but only with a non-negative value (see AdminPolicy.sbatch_flags).
DEFAULT_SBATCH_ALLOW: frozenset[str] = frozenset(
    {
        "job-name", "time", "time-min", "partition", "qos", "account",
        "nodes", "ntasks", "ntasks-per-node", "ntasks-per-core", "ntasks-per-socket", "ntasks-per-gpu",
        "cpus-per-task", "cpus-per-gpu", "mincpus",
        "mem", "mem-per-cpu", "mem-per-gpu",
        "gres", "gres-flags", "gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket",
        "constraint", "prefer", "contiguous", "exclusive", "oversubscribe", "overcommit", "hint",
        "licenses", "reservation", "nice",
        "threads-per-core", "cores-per-socket", "sockets-per-node", "extra-node-info",
        "distribution", "switches", "spread-job", "use-min-nodes",
        "signal", "tmp", "begin",
    }
)  # fmt: skip

# Refused even when an admin lists them (policy_from_config reports it as a ConfigError):
# * identity and tracking the plugin owns: comment (carries il:<pod uid>), chdir (the job dir),
#   job files output/error/input/open-mode, uid/gid (from runAsUser and the namespace's Users),
#   requeue/no-requeue (a config switch), array (one pod is exactly one job), clusters/cluster and
#   cluster-constraint (the job would land on a cluster the plugin does not query);
# * environment: export, export-file, get-user-env (the env comes from the pod only; --export-file=/dev/null);
# * files read on the plugin host while submitting: export-file, nodefile, bbf;
# * the script and the submit call itself: wrap (replaces the script), container (SLURM's own OCI
#   runtime instead of ContainerRuntime), parsable/quiet (the plugin parses sbatch's output),
#   wait (blocks /create), test-only, help, usage, version (no job is submitted at all);
# * context: an SELinux context, honoured when the plugin submits as root.
NEVER_ALLOWED_SBATCH: frozenset[str] = frozenset(
    {
        "comment", "chdir", "output", "error", "input", "open-mode", "uid", "gid",
        "requeue", "no-requeue", "array", "clusters", "cluster-constraint",
        "export", "export-file", "get-user-env", "nodefile", "bbf",
        "wrap", "container", "parsable", "quiet", "wait", "test-only", "help", "usage", "version",
        "context",
    }
)  # fmt: skip

# apptainer exec/run (1.x) plus SingularityCE flags, read from cmd/internal/cli/action_flags.go.
# pflag has no optional values: booleans are "no" (they accept an attached =true/=false).
SINGULARITY_OPTIONS: Mapping[str, OptionSpec] = _table(
    [
        ("add-caps", "add-caps", None, "required"),
        ("allow-setuid", "allow-setuid", None, "no"),
        ("app", "app", None, "required"),
        ("apply-cgroups", "apply-cgroups", None, "required"),
        ("authfile", "authfile", None, "required"),
        ("bind", "bind", "B", "required"),
        ("blkio-weight", "blkio-weight", None, "required"),
        ("blkio-weight-device", "blkio-weight-device", None, "required"),
        ("boot", "boot", None, "no"),
        ("cdi", "cdi", None, "no"),
        ("cleanenv", "cleanenv", "e", "no"),
        ("compat", "compat", None, "no"),
        ("contain", "contain", "c", "no"),
        ("containall", "containall", "C", "no"),
        ("containlibs", "containlibs", None, "required"),
        ("cpu-shares", "cpu-shares", None, "required"),
        ("cpus", "cpus", None, "required"),
        ("cpuset-cpus", "cpuset-cpus", None, "required"),
        ("cpuset-mems", "cpuset-mems", None, "required"),
        ("cwd", "pwd", None, "required"),
        ("device", "device", None, "required"),
        ("disable-cache", "disable-cache", None, "no"),
        ("dmtcp-launch", "dmtcp-launch", None, "required"),
        ("dmtcp-restart", "dmtcp-restart", None, "required"),
        ("dns", "dns", None, "required"),
        ("docker-host", "docker-host", None, "required"),
        ("docker-login", "docker-login", None, "no"),
        ("docker-password", "docker-password", None, "required"),
        ("docker-username", "docker-username", None, "required"),
        ("drop-caps", "drop-caps", None, "required"),
        ("env", "env", None, "required"),
        ("env-file", "env-file", None, "required"),
        ("fakeroot", "fakeroot", "f", "no"),
        ("fusemount", "fusemount", None, "required"),
        ("home", "home", "H", "required"),
        ("hostname", "hostname", None, "required"),
        ("ignore-fakeroot-command", "ignore-fakeroot-command", None, "no"),
        ("ignore-subuid", "ignore-subuid", None, "no"),
        ("ignore-userns", "ignore-userns", None, "no"),
        ("ipc", "ipc", "i", "no"),
        ("keep-privs", "keep-privs", None, "no"),
        ("memory", "memory", None, "required"),
        ("memory-reservation", "memory-reservation", None, "required"),
        ("memory-swap", "memory-swap", None, "required"),
        ("mount", "mount", None, "required"),
        ("net", "net", "n", "no"),
        ("network", "network", None, "required"),
        ("network-args", "network-args", None, "required"),
        ("no-eval", "no-eval", None, "no"),
        ("no-home", "no-home", None, "no"),
        ("no-https", "no-https", None, "no"),
        ("no-init", "no-init", None, "no"),
        ("no-mount", "no-mount", None, "required"),
        ("no-nv", "no-nv", None, "no"),
        ("no-oci", "no-oci", None, "no"),
        ("no-pid", "no-pid", None, "no"),
        ("no-privs", "no-privs", None, "no"),
        ("no-rocm", "no-rocm", None, "no"),
        ("no-setgroups", "no-setgroups", None, "no"),
        ("no-umask", "no-umask", None, "no"),
        ("nohttps", "no-https", None, "no"),
        ("nv", "nv", None, "no"),
        ("nvccli", "nvccli", None, "no"),
        ("oci", "oci", None, "no"),
        ("oom-kill-disable", "oom-kill-disable", None, "no"),
        ("overlay", "overlay", "o", "required"),
        ("passphrase", "passphrase", None, "no"),
        ("pem-path", "pem-path", None, "required"),
        ("pid", "pid", "p", "no"),
        ("pids-limit", "pids-limit", None, "required"),
        ("pwd", "pwd", None, "required"),
        ("rocm", "rocm", None, "no"),
        ("scratch", "scratch", "S", "required"),
        ("security", "security", None, "required"),
        ("sharens", "sharens", None, "no"),
        ("sif-fuse", "sif-fuse", None, "no"),
        ("tmpdir", "tmpdir", None, "required"),
        ("underlay", "underlay", None, "no"),
        ("unsquash", "unsquash", None, "no"),
        ("userns", "userns", "u", "no"),
        ("uts", "uts", None, "no"),
        ("vm", "vm", None, "no"),
        ("vm-cpu", "vm-cpu", None, "required"),
        ("vm-err", "vm-err", None, "no"),
        ("vm-ip", "vm-ip", None, "required"),
        ("vm-ram", "vm-ram", None, "required"),
        ("workdir", "workdir", "W", "required"),
        ("writable", "writable", "w", "no"),
        ("writable-tmpfs", "writable-tmpfs", None, "no"),
    ]
)

# bind sources are checked against AllowedHostPaths; the rest stays inside the container.
DEFAULT_SINGULARITY_ALLOW: frozenset[str] = frozenset(
    {
        "bind", "nv", "nvccli", "rocm", "no-nv", "no-rocm", "containall", "contain", "cleanenv",
        "no-home", "writable-tmpfs", "fakeroot", "no-mount", "pwd", "no-init", "no-umask", "no-eval",
        "compat", "userns", "pid", "ipc", "uts", "unsquash", "no-privs", "drop-caps", "app",
        "scratch", "disable-cache",
    }
)  # fmt: skip

# Refused even when an admin lists them:
# * env, env-file: the environment comes from the pod spec only;
# * host paths the policy cannot check (only --bind sources are checked): mount, home, overlay,
#   workdir, tmpdir, containlibs, apply-cgroups, pem-path, authfile, dmtcp-launch, dmtcp-restart;
# * fusemount: runs a FUSE command (on the host with host:), i.e. raw shell;
# * privilege: security (seccomp/apparmor/selinux, uid:/gid: as root), keep-privs, allow-setuid,
#   add-caps;
# * credentials and prompts: docker-login and passphrase prompt on a terminal the job does not
#   have; docker-username/docker-password would put secrets into pod annotations.
NEVER_ALLOWED_SINGULARITY: frozenset[str] = frozenset(
    {
        "env", "env-file", "mount", "home", "overlay", "workdir", "tmpdir", "containlibs",
        "apply-cgroups", "pem-path", "authfile", "dmtcp-launch", "dmtcp-restart", "fusemount",
        "security", "keep-privs", "allow-setuid", "add-caps", "docker-login", "passphrase",
        "docker-username", "docker-password",
    }
)  # fmt: skip

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


_PFLAG_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
_MAX_SHOWN = 80


def _show(text: str) -> str:
    """A token for an error message: repr-quoted, cut when long."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def split_words(text: str, *, field: str) -> list[str]:
    """shlex-split (POSIX) an annotation; unbalanced quotes are a 422."""
    if not isinstance(text, str):
        raise PolicyViolation(field, "must be a string", 422)
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise PolicyViolation(field, f"cannot split into words: {exc}", 422) from exc


def _short_map(table: Mapping[str, OptionSpec]) -> dict[str, OptionSpec]:
    return {spec.short: spec for key, spec in table.items() if spec.short and key == spec.long}


def _lookup_long(name: str, table: Mapping[str, OptionSpec], *, field: str, token: str, style: Style) -> OptionSpec:
    """Exact long name, else (getopt only) the single option a unique prefix names."""
    spec = table.get(name)
    if spec is not None and name:
        return spec
    if style == "getopt" and name:
        matches = sorted({s.long for key, s in table.items() if key.startswith(name)})
        if len(matches) == 1:
            return table[matches[0]]
        if len(matches) > 1:
            listed = ", ".join("--" + m for m in matches)
            raise PolicyViolation(field, f"option {_show(token)} is ambiguous ({listed})", 422)
    raise PolicyViolation(field, f"unknown option {_show(token)}", 422)


def _check_value(value: str, *, field: str, spelling: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise PolicyViolation(field, f"control character in the value of {_show(spelling)}", 422)


def _bool_value(spec: OptionSpec, value: str, *, field: str, spelling: str) -> str:
    if value not in _PFLAG_BOOLS:
        raise PolicyViolation(field, f"option {_show(spelling)} takes no value other than true/false", 422)
    return value


def parse_options(
    text: str, table: Mapping[str, OptionSpec], *, field: str, style: Style = "getopt"
) -> list[ParsedOption]:
    """Parse an option annotation the way the tool would; anything but options is a violation."""
    words = split_words(text, field=field)
    shorts = _short_map(table)
    out: list[ParsedOption] = []
    i = 0

    def take_next(spelling: str) -> tuple[str, str]:
        nonlocal i
        if i >= len(words):
            raise PolicyViolation(field, f"option {_show(spelling)} needs a value", 422)
        value = words[i]
        i += 1
        return value, f"{spelling} {value}"

    def add(spec: OptionSpec, value: str | None, spelling: str) -> None:
        if value is not None:
            _check_value(value, field=field, spelling=spelling)
        out.append(ParsedOption(spec.long, value, spelling))

    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            raise PolicyViolation(field, "'--' ends the options: positional words are not accepted", 422)
        if word.startswith("--"):
            name, eq, attached = word[2:].partition("=")
            spec = _lookup_long(name, table, field=field, token=word, style=style)
            if spec.takes_value == "no":
                if not eq:
                    add(spec, None, word)
                elif style == "pflag":
                    add(spec, _bool_value(spec, attached, field=field, spelling=word), word)
                else:
                    raise PolicyViolation(field, f"option {_show(word)} takes no value", 422)
            elif eq:
                add(spec, attached, word)
            elif spec.takes_value == "required":
                value, spelling = take_next(word)
                add(spec, value, spelling)
            else:
                add(spec, None, word)
        elif word.startswith("-") and word != "-":
            rest = word[1:]
            while rest:
                spec_or_none = shorts.get(rest[0])
                if spec_or_none is None:
                    raise PolicyViolation(field, f"unknown option -{rest[0]} in {_show(word)}", 422)
                spec = spec_or_none
                if style == "pflag" and len(rest) > 2 and rest[1] == "=":
                    value = rest[2:]
                    if spec.takes_value == "no":
                        value = _bool_value(spec, value, field=field, spelling=word)
                    add(spec, value, word)
                    break
                if spec.takes_value == "no":
                    add(spec, None, word)
                    rest = rest[1:]
                elif len(rest) > 1:
                    add(spec, rest[1:], word)
                    break
                elif spec.takes_value == "required":
                    value, spelling = take_next(word)
                    add(spec, value, spelling)
                    break
                else:
                    add(spec, None, word)
                    break
        else:
            raise PolicyViolation(field, f"unexpected word {_show(word)}: only options are accepted", 422)
    return out


def check_options(
    parsed: list[ParsedOption],
    allow: Collection[str],
    *,
    field: str,
    never: Collection[str] = NEVER_ALLOWED_SBATCH,
) -> None:
    """Raise a 403 naming every option (as written) that is reserved or not in ``allow``."""
    reserved = [p for p in parsed if p.name in never]
    refused = [p for p in parsed if p.name not in never and p.name not in allow]
    problems = [f"{_show(p.spelling or p.name)} (--{p.name}) is reserved by the plugin" for p in reserved]
    problems += [f"{_show(p.spelling or p.name)} (--{p.name}) is not allowed" for p in refused]
    if problems:
        raise PolicyViolation(field, "; ".join(problems), 403)


def render_sbatch_option(opt: ParsedOption) -> list[str]:
    """Canonical argv words: ``["--name=value"]`` or ``["--flag"]`` (also valid for pflag tools).

    The words are argv elements: shell-quote them before writing them into a script, and never
    put values with whitespace into ``#SBATCH`` lines.
    """
    if opt.value is None:
        return [f"--{opt.name}"]
    return [f"--{opt.name}={opt.value}"]


@dataclass(frozen=True)
class NamespacePolicy:
    """What one Kubernetes namespace may choose: SLURM account/QoS/partitions, unix users, HTCondor groups."""

    accounts: tuple[str, ...] = ()
    qos: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    users: tuple[str, ...] = ()  # unix user names or numeric uids, as strings
    accounting_groups: tuple[str, ...] = ()  # HTCondor accounting_group (the first is the default)
    flavors: tuple[str, ...] = ()  # flavors carrying a UID this namespace may use (other flavors: any namespace)


_NS_CHOICES = {"account": "accounts", "qos": "qos", "partition": "partitions"}


def _same_user(a: str, b: str) -> bool:
    """Names and uids match each other through the local passwd database (best effort)."""
    if a == b:
        return True
    for name, uid in ((a, b), (b, a)):
        if uid.isdigit() and not name.isdigit():
            try:
                if pwd.getpwnam(name).pw_uid == int(uid):
                    return True
            except KeyError:
                continue
    return False


@dataclass(frozen=True)
class AdminPolicy:
    """The admin policy shared by every backend; the default denies everything optional."""

    allow_raw_shell: bool = False  # pre-exec, mesh, wstunnel scripts
    sbatch_allow: frozenset[str] = DEFAULT_SBATCH_ALLOW
    singularity_allow: frozenset[str] = DEFAULT_SINGULARITY_ALLOW
    submit_allow: frozenset[str] = DEFAULT_SUBMIT_ALLOW
    allowed_host_paths: tuple[str, ...] = ()
    namespaces: Mapping[str, NamespacePolicy] = field(default_factory=dict)
    default_namespace: NamespacePolicy | None = None  # None: no account/qos/partition/user choice

    def namespace_policy(self, namespace: str) -> NamespacePolicy | None:
        """The namespace's own entry, else the default one, else None."""
        return self.namespaces.get(namespace, self.default_namespace)

    def sbatch_flags(self, text: str, namespace: str, *, field: str) -> list[ParsedOption]:
        """Parse and check an sbatch flags annotation, including the namespace's choices."""
        parsed = parse_options(text, SBATCH_OPTIONS, field=field)
        check_options(parsed, self.sbatch_allow, field=field, never=NEVER_ALLOWED_SBATCH)
        ns = self.namespace_policy(namespace)
        for opt in parsed:
            attr = _NS_CHOICES.get(opt.name)
            if attr is not None:
                allowed: tuple[str, ...] = getattr(ns, attr) if ns is not None else ()
                for item in (opt.value or "").split(","):
                    if item not in allowed:
                        raise PolicyViolation(
                            field,
                            f"{_show(opt.spelling)}: {opt.name} {_show(item)} is not allowed for "
                            f"namespace {namespace!r}",
                        )
            if opt.name == "nice" and opt.value is not None and not opt.value.lstrip("+").isdigit():
                raise PolicyViolation(field, f"{_show(opt.spelling)}: only a non-negative nice is allowed")
        return parsed

    def singularity_options(self, text: str, *, field: str) -> list[ParsedOption]:
        """Parse and check apptainer/singularity options; bind sources must be allowed host paths."""
        parsed = parse_options(text, SINGULARITY_OPTIONS, field=field, style="pflag")
        check_options(parsed, self.singularity_allow, field=field, never=NEVER_ALLOWED_SINGULARITY)
        for opt in parsed:
            if opt.name == "bind":
                for spec in (opt.value or "").split(","):
                    source = spec.split(":", 1)[0]
                    if not self.host_path_allowed(source):
                        raise PolicyViolation(field, f"{_show(opt.spelling)}: host path {_show(source)} is not allowed")
        return parsed

    def submit_commands(self, text: str, *, field: str) -> list[tuple[str, str]]:
        """Parse `key = value` lines (HTCondor submit syntax) and check each key against the allow-list."""
        if not isinstance(text, str):
            raise PolicyViolation(field, "must be a string", 422)
        commands: list[tuple[str, str]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, eq, value = line.partition("=")
            name = submit_key(key)
            if not eq or not name or not all(c.isalnum() or c in "_.+" for c in name):
                raise PolicyViolation(field, f"line {number}: expected `key = value`, got {_show(line)}", 422)
            value = value.strip()
            if "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise PolicyViolation(field, f"line {number}: {name}: `$` and control characters are not allowed")
            if name in NEVER_ALLOWED_SUBMIT:
                raise PolicyViolation(field, f"line {number}: {_show(key.strip())} is reserved by the plugin")
            if name not in self.submit_allow:
                raise PolicyViolation(field, f"line {number}: {_show(key.strip())} is not allowed")
            commands.append((name, value))
        return commands

    def accounting_group(self, namespace: str, requested: str, *, field: str) -> str:
        """The namespace's accounting group: the requested one if the namespace may use it, else its first."""
        ns = self.namespace_policy(namespace)
        groups = ns.accounting_groups if ns is not None else ()
        if requested:
            if requested not in groups:
                raise PolicyViolation(
                    field, f"accounting group {_show(requested)} is not allowed for namespace {namespace!r}"
                )
            return requested
        return groups[0] if groups else ""

    def host_path_allowed(self, path: str) -> bool:
        """True when the real path is one of AllowedHostPaths or below one (no prefix tricks)."""
        if not path.startswith("/") or "\x00" in path:
            return False
        real = os.path.realpath(path)
        for root in self.allowed_host_paths:
            base = os.path.realpath(root)
            if real == base or real.startswith(base.rstrip("/") + "/"):
                return True
        return False

    def user_allowed(self, namespace: str, user: str | int) -> bool:
        """True when the namespace may run as this unix user (name or uid)."""
        ns = self.namespace_policy(namespace)
        return ns is not None and any(_same_user(str(user), u) for u in ns.users)

    def check_user(self, namespace: str, user: str | int, *, field: str) -> None:
        """Raise a 403 when the namespace may not run as this unix user."""
        if not self.user_allowed(namespace, user):
            raise PolicyViolation(field, f"namespace {namespace!r} may not run as user {str(user)!r}")

    def submit_uids(self) -> frozenset[int]:
        """Every uid a namespace may run as (names through the local passwd database; unknown names skipped)."""
        found: set[int] = set()
        entries = [*self.namespaces.values(), *([self.default_namespace] if self.default_namespace else [])]
        for user in {u for ns in entries for u in ns.users}:
            if user.isdigit():
                found.add(int(user))
                continue
            try:
                found.add(pwd.getpwnam(user).pw_uid)
            except KeyError:
                continue
        return frozenset(found)

    def check_flavor(self, namespace: str, flavor: str, *, field: str) -> None:
        """Raise a 403 unless the namespace's policy lists this flavor (for flavors that carry a uid)."""
        ns = self.namespace_policy(namespace)
        if ns is None or flavor not in ns.flavors:
            raise PolicyViolation(
                field, f"flavor {flavor!r} runs jobs as its own user: namespace {namespace!r} may not use it"
            )

    def check_raw_shell(self, field: str) -> None:
        """Raise a 403 unless raw-shell annotations are enabled (AllowRawShell)."""
        if not self.allow_raw_shell:
            raise PolicyViolation(field, "raw shell annotations are disabled (AllowRawShell: false)")


# ---------------------------------------------------------------------------------------- config


def _str_list(key: str, raw: Any, *, allow_int: bool = False) -> list[str]:
    if not isinstance(raw, list):
        raise ConfigError(f"{key}: expected a list, got {raw!r}")
    out: list[str] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, int) and not allow_int):
            raise ConfigError(f"{key}: bad value {item!r} (expected a string)")
        text = str(item).strip()
        if not text:
            raise ConfigError(f"{key}: bad value {item!r} (empty)")
        out.append(text)
    return out


def _option_names(key: str, raw: Any, table: Mapping[str, OptionSpec], never: frozenset[str]) -> frozenset[str]:
    shorts = _short_map(table)
    names: set[str] = set()
    for item in _str_list(key, raw):
        if len(item) == 2 and item[0] == "-" and item[1] in shorts:
            spec: OptionSpec | None = shorts[item[1]]
        else:
            spec = table.get(item.removeprefix("--"))
        if spec is None:
            raise ConfigError(f"{key}: bad value {item!r} (unknown option)")
        if spec.long in never:
            raise ConfigError(f"{key}: bad value {item!r} (reserved by the plugin, never allowed)")
        names.add(spec.long)
    return frozenset(names)


def _submit_names(key: str, raw: Any) -> frozenset[str]:
    names: set[str] = set()
    for item in _str_list(key, raw):
        name = submit_key(item)
        if not all(c.isalnum() or c in "_.+" for c in name):
            raise ConfigError(f"{key}: bad value {item!r} (not a submit command)")
        if name in NEVER_ALLOWED_SUBMIT:
            raise ConfigError(f"{key}: bad value {item!r} (reserved by the plugin, never allowed)")
        names.add(name)
    return frozenset(names)


_NS_KEYS = {
    "Accounts": "accounts",
    "QOS": "qos",
    "Partitions": "partitions",
    "Users": "users",
    "AccountingGroups": "accounting_groups",
    "Flavors": "flavors",
}


def _namespace_policy(key: str, raw: Any) -> NamespacePolicy:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    values: dict[str, tuple[str, ...]] = {}
    for sub, value in raw.items():
        attr = _NS_KEYS.get(sub)
        if attr is None:
            log.warning("unknown config key %s.%s ignored", key, sub)
            continue
        values[attr] = tuple(_str_list(f"{key}.{sub}", value, allow_int=(attr == "users")))
    return NamespacePolicy(**values)


def policy_from_config(raw: Mapping[str, Any]) -> AdminPolicy:
    """Build the AdminPolicy from config keys; a bad value raises ConfigError naming key and value."""
    allow_raw = raw.get("AllowRawShell", False)
    if not isinstance(allow_raw, bool):
        raise ConfigError(f"AllowRawShell: bad value {allow_raw!r} (expected true or false)")

    sbatch_allow = DEFAULT_SBATCH_ALLOW
    if "AllowedSbatchOptions" in raw:
        sbatch_allow = _option_names(
            "AllowedSbatchOptions", raw["AllowedSbatchOptions"], SBATCH_OPTIONS, NEVER_ALLOWED_SBATCH
        )
    if "ExtraSbatchOptions" in raw:
        sbatch_allow = sbatch_allow | _option_names(
            "ExtraSbatchOptions", raw["ExtraSbatchOptions"], SBATCH_OPTIONS, NEVER_ALLOWED_SBATCH
        )

    singularity_allow = DEFAULT_SINGULARITY_ALLOW
    if "AllowedSingularityOptions" in raw:
        singularity_allow = _option_names(
            "AllowedSingularityOptions",
            raw["AllowedSingularityOptions"],
            SINGULARITY_OPTIONS,
            NEVER_ALLOWED_SINGULARITY,
        )

    submit_allow = DEFAULT_SUBMIT_ALLOW
    if "AllowedSubmitCommands" in raw:
        submit_allow = _submit_names("AllowedSubmitCommands", raw["AllowedSubmitCommands"])
    if "ExtraSubmitCommands" in raw:
        submit_allow = submit_allow | _submit_names("ExtraSubmitCommands", raw["ExtraSubmitCommands"])

    host_paths: tuple[str, ...] = ()
    if "AllowedHostPaths" in raw:
        paths = _str_list("AllowedHostPaths", raw["AllowedHostPaths"])
        for path in paths:
            if not path.startswith("/") or "\x00" in path:
                raise ConfigError(f"AllowedHostPaths: bad value {path!r} (expected an absolute path)")
        host_paths = tuple(os.path.normpath(p) for p in paths)

    namespaces: dict[str, NamespacePolicy] = {}
    ns_raw = raw.get("NamespacePolicy", {})
    if ns_raw is None:
        ns_raw = {}
    if not isinstance(ns_raw, Mapping):
        raise ConfigError(f"NamespacePolicy: expected a mapping, got {ns_raw!r}")
    for ns, entry in ns_raw.items():
        if not isinstance(ns, str) or not ns:
            raise ConfigError(f"NamespacePolicy: bad namespace name {ns!r}")
        namespaces[ns] = _namespace_policy(f"NamespacePolicy.{ns}", entry)

    default_ns = None
    if raw.get("DefaultNamespacePolicy") is not None:
        default_ns = _namespace_policy("DefaultNamespacePolicy", raw["DefaultNamespacePolicy"])

    return AdminPolicy(
        allow_raw_shell=allow_raw,
        sbatch_allow=sbatch_allow,
        singularity_allow=singularity_allow,
        submit_allow=submit_allow,
        allowed_host_paths=host_paths,
        namespaces=namespaces,
        default_namespace=default_ns,
    )
