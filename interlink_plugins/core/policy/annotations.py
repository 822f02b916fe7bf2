"""Pod annotations the batch backends read: the roles whose keys the backends' policy sections declare,
interLink's own keys, and the MPI launcher's flags.

Every option annotation is split with shlex and parsed as the tool parses it (core.policy.engine's
parser), then checked against an allow-list; what the plugin owns is refused in every spelling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from interlink_plugins.core.model.imageref import check_image_root
from interlink_plugins.core.policy.engine import AdminPolicy, ParsedOption, render_option, split_words

# annotation roles: the keys of each are declared by the backends' policy sections (PolicySection
# annotations / own_annotations) and listed by AdminPolicy.annotation_keys(role, backend)
PRE_EXEC = "pre-exec"
IMAGE_ROOT = "image-root"
SINGULARITY_MOUNTS = "singularity-mounts"
SINGULARITY_OPTIONS = "singularity-options"
MPI_FLAGS = "mpi-flags"
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


def image_root(annotations: Mapping[str, str], keys: Sequence[str]) -> str:
    """The image-root annotation (a prefix for images without a transport), checked: ``scheme://...``
    or an absolute directory, never something a runtime could read as an option. "" when not set."""
    found = first(annotations, keys)
    if found is None:
        return ""
    key, value = found
    check_image_root(value, f"metadata.annotations[{key}]")
    return value


def mpi_launch_words(policy: AdminPolicy, text: str, launcher: Sequence[str], *, field: str) -> list[str]:
    """The launcher plus the pod's mpi-flags (argv words).

    A launcher whose option language a policy section registered (AdminPolicy.launcher) gets its flags
    parsed and allow-listed; any other launcher (mpiexec, mpirun) has its own option language, so its
    flags need AllowRawShell.
    """
    value = text.strip()
    if value.lower() in ("", "true"):
        return list(launcher)
    language = policy.launcher(launcher[0]) if launcher else None
    if language is not None:
        parsed: list[ParsedOption] = language.parse(value, field=field)
        return [*launcher, *(word for p in parsed for word in render_option(p))]
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
