"""The SLURM section of the config: its keys (the sbatch/squeue/... commands, flavors, uids, MPI launcher),
the Go SLURM plugin's keys (read as it reads them, or accepted without effect), and their checks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlink_plugins.config import (
    APPTAINER_OPTIONS,
    Config,
    ConfigSection,
    FieldSpec,
    parse_argv,
    parse_bool,
    parse_int,
    parse_memory_mib,
    parse_singularity_options,
    parse_str,
    parse_str_list,
    parse_str_map,
    parse_uid,
)
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.slurm import policy


@dataclass(frozen=True)
class Flavor:
    name: str
    cpus: int | None
    memory_mib: int | None
    sbatch_flags: tuple[str, ...]
    description: str = ""
    uid: int | None = None  # --uid for pods of this flavor that set no runAsUser
    public: bool = False  # any namespace may use it, and run as its uid (else NamespacePolicy Flavors and Users)


@dataclass(frozen=True)
class SlurmSettings:
    """The SLURM section's values (``config.section(SlurmSettings)``)."""

    sbatch: tuple[str, ...] = ("sbatch",)
    scancel: tuple[str, ...] = ("scancel",)
    squeue: tuple[str, ...] = ("squeue",)
    sinfo: tuple[str, ...] = ("sinfo",)
    sacct: tuple[str, ...] = ("sacct",)
    requeue: bool = False
    default_uid: int | None = None
    allow_root_jobs: bool = False
    mpi_launcher: tuple[str, ...] = ("srun", "--export=ALL")
    partitions: tuple[str, ...] = ()
    flavors: Mapping[str, Flavor] = field(default_factory=dict)
    default_flavor: str = ""
    gres_map: Mapping[str, str] = field(default_factory=dict)
    # the Go plugin's keys, read as it reads them (apply_go_keys folds them into the common keys)
    singularity_default_options: tuple[str, ...] | None = None
    verbose_logging: bool = False
    errors_only_logging: bool = False


def parse_flavors(key: str, value: Any) -> dict[str, Flavor]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of flavor name to settings, got {value!r}")
    flavors: dict[str, Flavor] = {}
    for name, spec in value.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{key}.{name}: expected a mapping, got {spec!r}")
        flags = parse_str_list(f"{key}.{name}.SlurmFlags", spec.get("SlurmFlags", []))
        for flag in flags:
            if not flag.startswith("-"):
                raise ConfigError(f"{key}.{name}.SlurmFlags: {flag!r} must start with '-'")
        cpus = spec.get("CPUDefault")
        memory = spec.get("MemoryDefault")
        uid = spec.get("UID")
        public = spec.get("Public", False)
        flavors[str(name)] = Flavor(
            name=str(spec.get("Name") or name),
            cpus=parse_int(f"{key}.{name}.CPUDefault", cpus) if cpus not in (None, "", 0) else None,
            memory_mib=parse_memory_mib(f"{key}.{name}.MemoryDefault", memory) if memory not in (None, "", 0) else None,
            sbatch_flags=flags,
            description=str(spec.get("Description", "")),
            uid=parse_int(f"{key}.{name}.UID", uid) if uid not in (None, "") else None,
            public=parse_bool(f"{key}.{name}.Public", public),
        )
    return flavors


FIELDS: dict[str, FieldSpec] = {
    "SbatchPath": FieldSpec("sbatch", parse_argv, "sbatch command (argv prefix, split with shlex).", env="SBATCHPATH"),
    "ScancelPath": FieldSpec("scancel", parse_argv, "scancel command.", env="SCANCELPATH"),
    "SqueuePath": FieldSpec("squeue", parse_argv, "squeue command.", env="SQUEUEPATH"),
    "SinfoPath": FieldSpec("sinfo", parse_argv, "sinfo command.", env="SINFOPATH"),
    "SacctPath": FieldSpec("sacct", parse_argv, "sacct command (with accounting disabled, sacct -c reads jobcomp)."),
    "Requeue": FieldSpec(
        "requeue",
        parse_bool,
        "Let SLURM requeue jobs (default: --no-requeue); a requeued pod waits (Requeued) with restartCount+1.",
    ),
    "DefaultUID": FieldSpec(
        "default_uid",
        parse_uid,
        "Unix uid jobs run as (sbatch --uid) when neither the pod nor its flavor sets one. Without it, a root "
        "plugin refuses a pod that sets no runAsUser (422); a plugin that is not root runs it as itself.",
    ),
    "AllowRootJobs": FieldSpec(
        "allow_root_jobs",
        parse_bool,
        "Let a root plugin run jobs as uid 0 (runAsUser 0, a flavor's or the default UID 0, or a pod with no "
        "uid and no DefaultUID). Default false: such pods get 422/403. Warned at every start.",
    ),
    "MpiLauncher": FieldSpec(
        "mpi_launcher",
        parse_argv,
        "Launcher for pods with slurm-job.vk.io/mpi-flags; the word @NTASKS@ becomes $SLURM_NTASKS in the job.",
    ),
    "Partitions": FieldSpec("partitions", parse_str_list, "Partitions counted by the ping's resources (default: all)."),
    "Flavors": FieldSpec(
        "flavors",
        parse_flavors,
        "name -> {CPUDefault, MemoryDefault, SlurmFlags, Description, UID, Public}. A flavor with a UID is only "
        "for namespaces whose NamespacePolicy lists it in Flavors, and its UID must be in their Users, unless "
        "Public: true.",
    ),
    "DefaultFlavor": FieldSpec("default_flavor", parse_str, "Flavor used when the pod names none."),
    "GresMap": FieldSpec(
        "gres_map",
        parse_str_map,
        "Extended resource -> SLURM gres name, e.g. nvidia.com/mig-1g.10gb: gpu:a100_1g.10gb.",
    ),
    "SingularityDefaultOptions": FieldSpec(
        "singularity_default_options",
        parse_singularity_options,
        "The Go plugin's options for every apptainer/singularity container, mapped: containall, no-home, "
        "cleanenv, fakeroot, writable-tmpfs, contain, no-init join ApptainerOptions; --no-eval is always on "
        "here; --nv is given to the containers of pods that ask for GPUs. Others are ignored with a "
        "warning. Empty, or missing from a Go plugin's file: the Go default --nv --no-eval --containall.",
    ),
    "VerboseLogging": FieldSpec(
        "verbose_logging", parse_bool, "The Go plugin's key: true means LogLevel debug (LogLevel, when set, wins)."
    ),
    "ErrorsOnlyLogging": FieldSpec(
        "errors_only_logging",
        parse_bool,
        "The Go plugin's key: true means LogLevel error (VerboseLogging and LogLevel win).",
    ),
}

# Keys of the Go plugin's SlurmConfig.yaml (and of interLink's own file, which sites copy) that are
# accepted so an existing file works unchanged, but have no effect: a warning names what to use instead.
GO_COMPAT_KEYS = {
    "BashPath": "the runner is always bash, found on the job's PATH (JobPath)",
    "ExportPodData": "ConfigMaps, Secrets, projected and emptyDir volumes are always mounted",
    "SingularityPrefix": "unused in the Go plugin too; image prefixes are ImagePrefix",
    "EnrootDefaultOptions": "enroot is not supported (runtimes: apptainer, singularity, podman, none)",
    "EnrootPrefix": "unused in the Go plugin too; image prefixes are ImagePrefix",
    "Tsocks": "not supported; give the jobs a proxy with JobEnvironment (e.g. ALL_PROXY)",
    "TsocksPath": "not supported; give the jobs a proxy with JobEnvironment (e.g. ALL_PROXY)",
    "TsocksLoginNode": "not supported; give the jobs a proxy with JobEnvironment (e.g. ALL_PROXY)",
    "ResourceScriptPath": "the ping's capacity comes from sinfo, limited by Partitions, MaxCPU and MaxMemory",
    "Namespace": "unused in the Go plugin too; NamespacePolicy says what each namespace may use",
    "EnrootPath": "enroot is not supported (runtimes: apptainer, singularity, podman, none)",
    "VKConfigPath": "unused in the Go plugin too",
    "InterlinkPort": "interLink's own key (InterLinkConfig.yaml); the plugin listens on SidecarPort or Socket",
    "InterlinkURL": "interLink's own key (InterLinkConfig.yaml); the plugin listens on SidecarPort or Socket",
}
# Keys only the Go plugin reads: a file with any of them is a Go plugin's SlurmConfig.yaml, whose defaults apply
GO_ONLY_KEYS = frozenset(GO_COMPAT_KEYS) | {"CommandPrefix", "SingularityDefaultOptions", "VerboseLogging",
                                            "ErrorsOnlyLogging"}
GO_SINGULARITY_DEFAULTS = ("--nv", "--no-eval", "--containall")  # when its list is empty or missing
# the Go plugin's config file when no --config is given: $SLURMCONFIGPATH, else this
GO_CONFIG_ENV = "SLURMCONFIGPATH"
GO_DEFAULT_CONFIG = Path("/etc/interlink/SlurmConfig.yaml")
DEFAULT_CONFIG_HELP = f"${GO_CONFIG_ENV}, else {GO_DEFAULT_CONFIG}"


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config `serve` reads without --config, as the Go plugin finds its own."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(GO_CONFIG_ENV) or GO_DEFAULT_CONFIG)


def apply_go_keys(config: Config, raw: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[Config, list[str]]:
    """Fold the Go plugin's keys into ours (log level, apptainer options); returns notes for the log."""
    notes: list[str] = []
    settings = config.section(SlurmSettings)
    level = config.log_level
    if "LogLevel" not in raw:
        level = "debug" if settings.verbose_logging else "error" if settings.errors_only_logging else level
    options = settings.singularity_default_options
    if not options and "SingularityDefaultOptions" in raw:
        options = GO_SINGULARITY_DEFAULTS  # present but empty: the Go plugin's default
    elif (options is None and "ApptainerOptions" not in raw and GO_ONLY_KEYS & set(raw)
          and config.container_runtime in ("apptainer", "singularity")):
        options = GO_SINGULARITY_DEFAULTS
        notes.append(
            "a Go plugin's SlurmConfig.yaml without SingularityDefaultOptions: its default --nv --no-eval "
            "--containall applies (every apptainer/singularity container gets --containall); set "
            "ApptainerOptions or SingularityDefaultOptions to choose"
        )
    mapped: list[str] = []
    ignored: list[str] = []
    off: set[str] = set()  # --containall=false: an explicit no wins over the default
    for word in options or ():
        name, _, value = word[2:].partition("=")
        if name in ("no-eval", "nv") and value in ("", "true"):
            continue  # --no-eval: always on; --nv: given to the containers of GPU pods
        if name in APPTAINER_OPTIONS and value in ("", "true"):
            mapped.append(f"--{name}")
        elif name in APPTAINER_OPTIONS and value == "false":
            off.add(f"--{name}")
        else:
            ignored.append(word)
    if ignored:
        notes.append(
            f"SingularityDefaultOptions: {' '.join(ignored)} ignored: host paths are bound with hostPath volumes "
            "under AllowedHostPaths (or the pods' slurm-job.vk.io/singularity-mounts annotation), other options "
            "come from the pods' slurm-job.vk.io/singularity-options annotation (AllowedSingularityOptions); "
            f"site-wide options are ApptainerOptions ({', '.join(APPTAINER_OPTIONS)})"
        )
    shared_fs = environ.get("SHARED_FS", "").strip().lower()
    if shared_fs and shared_fs != "true":
        notes.append(
            f"SHARED_FS={environ['SHARED_FS']} has no effect: job files are always written to DataRootFolder, "
            "which the compute nodes must see (without a shared filesystem: SshHost with DataTransfer: sftp)"
        )
    apptainer = tuple(w for w in dict.fromkeys((*config.apptainer_options, *mapped)) if w not in off)
    return dataclasses.replace(config, log_level=level, apptainer_options=apptainer), notes


def check(config: Config) -> list[str]:
    """DefaultFlavor names a flavor; uid 0 named by the admin needs AllowRootJobs; relaxations are warned at
    every start."""
    settings = config.section(SlurmSettings)
    if settings.default_flavor and settings.default_flavor not in settings.flavors:
        raise ConfigError(f"DefaultFlavor: {settings.default_flavor!r} is not a key of Flavors")
    if not settings.allow_root_jobs:
        if settings.default_uid == 0:
            raise ConfigError("DefaultUID: 0 would run jobs as root; set AllowRootJobs: true to allow it")
        for name, flavor in settings.flavors.items():
            if flavor.uid == 0:
                raise ConfigError(f"Flavors.{name}.UID: 0 would run jobs as root; set AllowRootJobs: true to allow it")
    warnings = []
    if settings.allow_root_jobs and config.backend == "slurm":
        warnings.append("AllowRootJobs: true: a root plugin runs jobs as root for pods that ask for uid 0 or set "
                        "no uid (without DefaultUID)")
    return warnings


def job_uid_summary(config: Config, euid: int) -> str:
    """For `check` and `render`: which uids SLURM jobs run as, and whether root is possible."""
    if config.backend != "slurm":
        return f"jobs run as the {config.backend} backend's identity (AllowRootJobs applies to SLURM --uid)"
    settings = config.section(SlurmSettings)
    if euid != 0:
        return (f"jobs run as this plugin's uid {euid} (not root: no --uid); runAsUser must be listed in the "
                "namespace's Users")
    default = (f"DefaultUID {settings.default_uid}" if settings.default_uid is not None
               else "no DefaultUID: pods without runAsUser are refused" if not settings.allow_root_jobs
               else "no DefaultUID: pods without runAsUser run as root")
    flavors = sorted(name for name, flavor in settings.flavors.items() if flavor.uid is not None)
    root = "AllowRootJobs: true, jobs may run as root" if settings.allow_root_jobs else "no job runs as root"
    return (f"jobs run as runAsUser listed in the namespace's Users, a flavor's UID ({', '.join(flavors) or 'none'}"
            f"), else {default}; {root}")


SECTION = ConfigSection(
    "SLURM",
    FIELDS,
    backend="slurm",
    settings_type=SlurmSettings,
    policy=policy.SECTION,
    compat_title="Accepted for compatibility with the Go plugin's SlurmConfig.yaml, without effect "
    "(a warning says why)",
    compat_keys=GO_COMPAT_KEYS,
    adjust=apply_go_keys,
    check=check,
    reloadable=("flavors", "default_flavor", "gres_map"),
)
