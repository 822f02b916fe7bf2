"""The SLURM section of the admin policy: sbatch and srun option tables, the annotation keys, the
config keys (AllowedSbatchOptions, ExtraSbatchOptions) and the namespace choices (Accounts, QOS,
Partitions).

sbatch and srun are getopt tools: see core.policy.engine for how every spelling of an option is parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from interlink_plugins.core.policy import annotations as ann
from interlink_plugins.core.policy.engine import (
    AdminPolicy,
    OptionLanguage,
    OptionSpec,
    ParsedOption,
    PolicySection,
    PolicyViolation,
    TakesValue,
    option_names,
    render_option,
    show,
)

# annotation keys: the current name first, then the legacy job.vk.io/* names of the first in-tree sidecars
FLAGS = ("slurm-job.vk.io/flags", "job.vk.io/flags")
FLAVOR = ("slurm-job.vk.io/flavor", "job.vk.io/flavor")
MPI_FLAGS = ("slurm-job.vk.io/mpi-flags", "job.vk.io/mpi-flags")
PRE_EXEC = ("slurm-job.vk.io/pre-exec", "job.vk.io/pre-exec")
IMAGE_ROOT = ("slurm-job.vk.io/image-root", "job.vk.io/image-root")
SINGULARITY_MOUNTS = ("slurm-job.vk.io/singularity-mounts", "job.vk.io/singularity-mounts")
SINGULARITY_OPTIONS = ("slurm-job.vk.io/singularity-options", "job.vk.io/singularity-options")


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
# nice is allowed but only with a non-negative value (see sbatch_flags).
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


def _srun_table(rows: Iterable[tuple[str, str | None, TakesValue]]) -> dict[str, OptionSpec]:
    return {long: OptionSpec(long, short, takes) for long, short, takes in rows}


# srun options a pod may pass to the MPI launcher; the never-list is refused in every spelling
SRUN_OPTIONS: Mapping[str, OptionSpec] = _srun_table(
    [
        ("mpi", None, "required"), ("cpu-bind", None, "required"), ("distribution", "m", "required"),
        ("label", "l", "no"), ("kill-on-bad-exit", "K", "optional"), ("ntasks", "n", "required"),
        ("ntasks-per-node", None, "required"), ("ntasks-per-core", None, "required"),
        ("ntasks-per-socket", None, "required"), ("cpus-per-task", "c", "required"),
        ("nodes", "N", "required"), ("overlap", None, "no"), ("exact", None, "no"),
        ("mem-bind", None, "required"), ("gpu-bind", None, "required"), ("gpus-per-task", None, "required"),
        ("unbuffered", "u", "no"), ("hint", None, "required"), ("threads-per-core", None, "required"),
        ("accel-bind", None, "required"), ("cpus-per-gpu", None, "required"), ("wait", "W", "required"),
        # refused: environment, files, identity, programs run around the tasks, other jobs
        ("export", None, "required"), ("chdir", "D", "required"), ("output", "o", "required"),
        ("error", "e", "required"), ("input", "i", "required"), ("uid", None, "required"),
        ("gid", None, "required"), ("prolog", None, "required"), ("epilog", None, "required"),
        ("task-prolog", None, "required"), ("task-epilog", None, "required"), ("bcast", None, "optional"),
        ("container", None, "required"), ("jobid", None, "required"), ("propagate", None, "optional"),
        ("export-file", None, "required"), ("get-user-env", None, "optional"), ("comment", None, "required"),
    ]
)  # fmt: skip
SRUN_NEVER = frozenset(
    {"export", "chdir", "output", "error", "input", "uid", "gid", "prolog", "epilog", "task-prolog",
     "task-epilog", "bcast", "container", "jobid", "propagate", "export-file", "get-user-env", "comment"}
)  # fmt: skip
SRUN_ALLOW = frozenset(SRUN_OPTIONS) - SRUN_NEVER

SBATCH = OptionLanguage(SBATCH_OPTIONS, DEFAULT_SBATCH_ALLOW, NEVER_ALLOWED_SBATCH)
SRUN = OptionLanguage(SRUN_OPTIONS, SRUN_ALLOW, SRUN_NEVER)

# sbatch options whose values must be among the namespace's choices (option -> choice name)
NAMESPACE_CHOICES = {"account": "accounts", "qos": "qos", "partition": "partitions"}

render_sbatch_option = render_option


@dataclass(frozen=True)
class SlurmPolicy:
    """The SLURM section's settings: the sbatch options a pod may set."""

    sbatch_allow: frozenset[str] = DEFAULT_SBATCH_ALLOW


def slurm_policy(policy: AdminPolicy) -> SlurmPolicy:
    """The SLURM settings of a policy (the defaults when the config sets none)."""
    return policy.section(SECTION_NAME, SlurmPolicy) or SlurmPolicy()


def sbatch_flags(policy: AdminPolicy, text: str, namespace: str, *, field: str) -> list[ParsedOption]:
    """Parse and check an sbatch flags annotation, including the namespace's choices."""
    parsed = SBATCH.parse(text, slurm_policy(policy).sbatch_allow, field=field)
    for opt in parsed:
        policy.check_choices((opt,), NAMESPACE_CHOICES, namespace, field=field)
        if opt.name == "nice" and opt.value is not None and not opt.value.lstrip("+").isdigit():
            raise PolicyViolation(field, f"{show(opt.spelling)}: only a non-negative nice is allowed")
    return parsed


def _parse(raw: Mapping[str, Any]) -> SlurmPolicy:
    allow = DEFAULT_SBATCH_ALLOW
    if "AllowedSbatchOptions" in raw:
        allow = option_names("AllowedSbatchOptions", raw["AllowedSbatchOptions"], SBATCH)
    if "ExtraSbatchOptions" in raw:
        allow = allow | option_names("ExtraSbatchOptions", raw["ExtraSbatchOptions"], SBATCH)
    return SlurmPolicy(allow)


SECTION_NAME = "slurm"
SECTION = PolicySection(
    name=SECTION_NAME,
    title="SLURM",
    parse=_parse,
    keys={
        "AllowedSbatchOptions": "replaces the default allow-list of sbatch options a pod may set",
        "ExtraSbatchOptions": "added to the default allow-list",
    },
    namespace_keys={"Accounts": "accounts", "QOS": "qos", "Partitions": "partitions"},
    annotations={
        ann.PRE_EXEC: PRE_EXEC,
        ann.IMAGE_ROOT: IMAGE_ROOT,
        ann.SINGULARITY_MOUNTS: SINGULARITY_MOUNTS,
        ann.SINGULARITY_OPTIONS: SINGULARITY_OPTIONS,
    },
    own_annotations={ann.MPI_FLAGS: MPI_FLAGS},
    launchers={"srun": SRUN},
)
