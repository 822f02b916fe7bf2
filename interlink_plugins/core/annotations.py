"""Pod annotations the batch backends read, with their legacy names, and the option annotations
that go to a tool other than sbatch/apptainer (the MPI launcher).

Every option annotation is split with shlex and parsed as the tool parses it (core.policy's
parser), then checked against an allow-list; what the plugin owns is refused in every spelling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from interlink_plugins.core.imageref import check_image_root
from interlink_plugins.core.policy import (
    AdminPolicy,
    OptionSpec,
    ParsedOption,
    check_options,
    parse_options,
    split_words,
)

# key lists: the current name first, then the legacy job.vk.io/* names of the first in-tree sidecars
FLAGS = ("slurm-job.vk.io/flags", "job.vk.io/flags")
PRE_EXEC = ("slurm-job.vk.io/pre-exec", "job.vk.io/pre-exec")
IMAGE_ROOT = ("slurm-job.vk.io/image-root", "job.vk.io/image-root", "htcondor-job.knoc.io/image-root")
SINGULARITY_MOUNTS = ("slurm-job.vk.io/singularity-mounts", "job.vk.io/singularity-mounts")
SINGULARITY_OPTIONS = (
    "slurm-job.vk.io/singularity-options",
    "job.vk.io/singularity-options",
    "htcondor-job.vk.io/singularity-options",
)
MPI_FLAGS = ("slurm-job.vk.io/mpi-flags", "job.vk.io/mpi-flags")
FLAVOR = ("slurm-job.vk.io/flavor", "job.vk.io/flavor")
WSTUNNEL = "interlink.eu/wstunnel-client-commands"
POD_IP = "interlink.eu/pod-ip"

MESH_START = "cat <<'EOFMESH' > $TMPDIR/mesh.sh"
MESH_END = "EOFMESH"


def present(annotations: Mapping[str, str], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(key, value) of every key of the list the pod sets to a non-blank value, in list order."""
    return [(key, annotations[key]) for key in keys if annotations.get(key, "").strip()]


def first(annotations: Mapping[str, str], keys: Sequence[str]) -> tuple[str, str] | None:
    found = present(annotations, keys)
    return found[0] if found else None


def _table(rows: Sequence[tuple[str, str | None, str]]) -> dict[str, OptionSpec]:
    return {long: OptionSpec(long, short, takes) for long, short, takes in rows}  # type: ignore[arg-type]


# srun options a pod may pass to the MPI launcher; the never-list is refused in every spelling
SRUN_OPTIONS: Mapping[str, OptionSpec] = _table(
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


def image_root(annotations: Mapping[str, str]) -> str:
    """The image-root annotation (a prefix for images without a transport), checked: ``scheme://...``
    or an absolute directory, never something a runtime could read as an option. "" when not set."""
    found = first(annotations, IMAGE_ROOT)
    if found is None:
        return ""
    key, value = found
    check_image_root(value, f"metadata.annotations[{key}]")
    return value


def mpi_launch_words(policy: AdminPolicy, text: str, launcher: Sequence[str], *, field: str) -> list[str]:
    """The launcher plus the pod's mpi-flags (argv words).

    With srun the flags are parsed and allow-listed like sbatch flags; any other launcher
    (mpiexec, mpirun) has its own option language, so its flags need AllowRawShell.
    """
    value = text.strip()
    if value.lower() in ("", "true"):
        return list(launcher)
    if launcher and launcher[0].rsplit("/", 1)[-1] == "srun":
        parsed: list[ParsedOption] = parse_options(value, SRUN_OPTIONS, field=field)
        check_options(parsed, SRUN_ALLOW, field=field, never=SRUN_NEVER)
        words = [f"--{p.name}" if p.value is None else f"--{p.name}={p.value}" for p in parsed]
        return [*launcher, *words]
    policy.check_raw_shell(field)
    return [*launcher, *split_words(value, field=field)]


def mpi_disabled(text: str) -> bool:
    return text.strip().lower() == "false"


def split_mesh(pre_exec: str) -> tuple[str, str | None]:
    """interLink's full-mesh script, prepended to pre-exec as a quoted heredoc, taken out of it.

    Returns (pre-exec without the heredoc, the mesh script) or (pre-exec, None) when there is none
    (or it is not closed: then the text runs as written, like the Go plugin).
    """
    start = pre_exec.find(MESH_START)
    if start < 0:
        return pre_exec, None
    body_start = pre_exec.find("\n", start)
    if body_start < 0:
        return pre_exec, None
    body_start += 1
    end = body_start - 1
    while True:  # the closing line is exactly EOFMESH (a bash heredoc ends there and only there)
        end = pre_exec.find("\n" + MESH_END, end)
        if end < 0:
            return pre_exec, None
        tail = end + 1 + len(MESH_END)
        if tail == len(pre_exec) or pre_exec[tail] == "\n":
            break
        end += 1
    script = pre_exec[body_start : end + 1] if end >= body_start else ""
    after = end + 1 + len(MESH_END)
    if after < len(pre_exec) and pre_exec[after] == "\n":
        after += 1
    if not script.strip():
        return pre_exec, None
    return pre_exec[:start] + pre_exec[after:], script
