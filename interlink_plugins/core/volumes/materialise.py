"""Pod volumes materialised under the job directory, and the mounts each container gets.

configMap, secret, projected and downwardAPI volumes become files under
``<job_dir>/volumes/<volume>/``; emptyDir volumes are ``<job_dir>/emptydir/<volume>/`` (0777, shared
by the pod's containers); hostPath volumes are bound from the host when the admin allows them.

Safety: every path is validated before anything is written, and writing walks the volume
directory with ``O_NOFOLLOW`` directory descriptors, so no item, key or subPath can escape the
volume directory (``..``, absolute paths, planted symlinks). Files are replaced atomically
(temp file + rename) so a re-create rewrites them even when a previous mode was 0400. Contents
are written byte for byte; secret values never appear in errors.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from interlink_plugins.core.errors import PodSpecError
from interlink_plugins.core.model.pod import Container, Pod, Volume, VolumeMount
from interlink_plugins.core.model.quantity import parse_quantity
from interlink_plugins.core.volumes.mounts import Mount, WrittenFile

DEFAULT_MODE = 0o644  # what the apiserver fills in (420)
DIR_MODE = 0o755
EMPTYDIR_MODE = 0o777  # containers may run as another uid; privacy comes from the job dir
HOST_PATH_TYPES = ("", "Directory", "DirectoryOrCreate", "File", "FileOrCreate")
_NAME_MAX = 255
_SUBSCRIPTED = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$", re.DOTALL)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Category = Literal["files", "emptydir", "hostpath"]
RelPath = tuple[str, ...]


@dataclass(frozen=True)
class VolumePlan:
    """What `plan_volumes` planned (what `write_volumes` writes) and how each container mounts it."""

    mounts: Mapping[str, tuple[Mount, ...]]  # container name -> mounts, in volumeMounts order
    files: tuple[WrittenFile, ...]  # every file written (for `render`, secrets flagged)
    # what `write_volumes` writes: the volumes' dirs and files, the subPath dirs the mounts need
    volumes: tuple[_Planned, ...] = ()
    sub_paths: tuple[_SubPath, ...] = ()


@dataclass(frozen=True)
class _File:
    rel: RelPath
    content: bytes
    mode: int
    secret: bool
    field: str  # the spec field to name when this file cannot be written


@dataclass(frozen=True)
class VolumeLimits:
    """What one pod's file volumes may write (MaxVolumeFiles, MaxVolumeBytes): a body of a few MB can
    name a hundred thousand files for the shared file system."""

    max_files: int | None = None  # files and directories
    max_bytes: int | None = None


@dataclass
class _Budget:
    limits: VolumeLimits
    entries: int = 0
    size: int = 0

    def spend(self, entries: int, size: int, field: str) -> None:
        self.entries += entries
        self.size += size
        top = self.limits
        if top.max_files is not None and self.entries > top.max_files:
            raise PodSpecError(field, f"the pod's configMap, secret, projected and downwardAPI volumes hold more "
                                      f"than {top.max_files} files and directories (MaxVolumeFiles)")
        if top.max_bytes is not None and self.size > top.max_bytes:
            raise PodSpecError(field, f"the pod's configMap, secret, projected and downwardAPI volumes hold more "
                                      f"than {top.max_bytes} bytes (MaxVolumeBytes)")


@dataclass(frozen=True)
class _SubPath:
    """A volumeMount's subPath below a job-dir volume: checked and made (when missing) at writing."""

    planned: _Planned
    rel: RelPath
    field: str  # the volumeMount's spec path


@dataclass
class _Planned:
    """One volume: where it lives and, for file volumes, what goes in it."""

    volume: Volume
    index: int
    category: Category
    base: str  # volume dir under the job dir, or the hostPath realpath
    root: str = ""  # what `base` must stay below at every container start: the job dir, or the allowed host path
    budget: _Budget = field(default_factory=lambda: _Budget(VolumeLimits()))
    files: dict[RelPath, _File] = field(default_factory=dict)
    dirs: set[RelPath] = field(default_factory=set)

    def add(self, item: _File) -> None:
        """Add a file; two files on one path, or a file where a directory must be, is a 422; past the
        pod's budget (files, directories, bytes), a 422 naming this volume."""
        shown = "/".join(item.rel)
        if item.rel in self.files:
            raise PodSpecError(item.field, f"path {shown!r} is used twice in volume {self.volume.name!r}")
        if item.rel in self.dirs:
            raise PodSpecError(item.field, f"path {shown!r} is already a directory holding other files")
        for cut in range(1, len(item.rel)):
            if item.rel[:cut] in self.files:
                raise PodSpecError(
                    item.field,
                    f"path {shown!r} needs {'/'.join(item.rel[:cut])!r} to be a directory, it is a file",
                )
        new_dirs = {item.rel[:cut] for cut in range(1, len(item.rel))} - self.dirs
        self.budget.spend(1 + len(new_dirs), len(item.content), f"spec.volumes[{self.index}]")
        self.dirs.update(new_dirs)
        self.files[item.rel] = item


# --------------------------------------------------------------------------- validation helpers


def _dict(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PodSpecError(path, "must be an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodSpecError(path, "must be a list")
    return value


def _str(value: Any, path: str, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise PodSpecError(path, "is required")
        return ""
    if not isinstance(value, str):
        raise PodSpecError(path, "must be a string")
    return value


def _mode(value: Any, path: str, default: int) -> int:
    """A file mode as sent (JSON decimal, e.g. 420 = 0644); 0..0777."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise PodSpecError(path, "must be a file mode between 0 and 0777 (decimal 511)")
    return value


def _component_ok(part: str) -> str | None:
    """Why `part` cannot be one file-name component, or None."""
    if part in ("", ".", ".."):
        return f"must not contain an empty, '.' or '..' component ({part!r})"
    if "\x00" in part:
        return "must not contain a NUL byte"
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid UTF-8"
    if size > _NAME_MAX:
        return f"has a component longer than {_NAME_MAX} bytes"
    return None


def _rel_path(value: Any, path: str, what: str = "path") -> RelPath:
    """A relative path inside a volume, as components; refuses absolute paths and '..'."""
    text = _str(value, path, required=True)
    if text.startswith("/"):
        raise PodSpecError(path, f"{what} {text!r} must be relative, not absolute")
    parts = tuple(text.split("/"))
    for part in parts:
        problem = _component_ok(part)
        if problem:
            raise PodSpecError(path, f"{what} {text!r} {problem}")
    return parts


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


# --------------------------------------------------------------------------- downward API


def _go_quote(text: str) -> str:
    """Go's %q (strconv.Quote), which Kubernetes uses for labels/annotations files."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in named:
            out.append(named[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """Kubernetes' labels/annotations file: sorted ``key="value"`` lines, no trailing newline."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def _field_ref(pod: Pod, ref: dict[str, Any], path: str) -> str:
    field_path = _str(ref.get("fieldPath"), f"{path}.fieldPath", required=True)
    spec = pod.raw.get("spec")
    status = pod.raw.get("status")
    spec = spec if isinstance(spec, dict) else {}
    status = status if isinstance(status, dict) else {}
    simple: dict[str, Any] = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "metadata.labels": format_map(pod.labels),
        "metadata.annotations": format_map(pod.annotations),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if field_path in simple:
        value = simple[field_path]
        return value if isinstance(value, str) else ""
    match = _SUBSCRIPTED.match(field_path)
    if match:
        source = pod.labels if match[1] == "metadata.labels" else pod.annotations
        return source.get(match[2], "")
    raise PodSpecError(f"{path}.fieldPath", f"{field_path!r} is not supported in a downwardAPI volume")


def _resource_ref(pod: Pod, ref: dict[str, Any], path: str) -> str:
    name = _str(ref.get("containerName"), f"{path}.containerName", required=True)
    resource = _str(ref.get("resource"), f"{path}.resource", required=True)
    spec = _dict(pod.raw.get("spec"), "spec")
    raw = next(
        (
            _dict(c, "spec.containers")
            for key in ("initContainers", "containers")
            for c in _list(spec.get(key), f"spec.{key}")
            if isinstance(c, dict) and c.get("name") == name
        ),
        None,
    )
    if raw is None:
        raise PodSpecError(f"{path}.containerName", f"no container named {name!r}")
    where, _, res = resource.partition(".")
    if where not in ("limits", "requests") or not res:
        raise PodSpecError(f"{path}.resource", f"{resource!r} must be limits.<name> or requests.<name>")
    resources = _dict(raw.get("resources"), "resources")
    value = _dict(resources.get(where), where).get(res)
    if value is None and where == "requests":
        value = _dict(resources.get("limits"), "limits").get(res, "0")
    if value is None:
        raise PodSpecError(
            f"{path}.resource", f"container {name!r} sets no {resource}; node allocatable is not known here"
        )
    try:
        quantity = parse_quantity(value)
        divisor = parse_quantity(ref.get("divisor") or "1")
    except ValueError as exc:
        raise PodSpecError(f"{path}.divisor", str(exc)) from exc
    if divisor == 0:
        raise PodSpecError(f"{path}.divisor", "must not be zero")
    if res == "cpu":  # Kubernetes divides MilliValues, each rounded up
        return str(math.ceil(math.ceil(quantity * 1000) / math.ceil(divisor * 1000)))
    return str(math.ceil(math.ceil(quantity) / math.ceil(divisor)))


def _downward_item(pod: Pod, item: dict[str, Any], path: str) -> bytes:
    refs = [key for key in ("fieldRef", "resourceFieldRef") if item.get(key) is not None]
    if len(refs) != 1:
        raise PodSpecError(path, "must have exactly one of fieldRef, resourceFieldRef")
    ref = _dict(item[refs[0]], f"{path}.{refs[0]}")
    if refs[0] == "fieldRef":
        text = _field_ref(pod, ref, f"{path}.fieldRef")
    else:
        text = _resource_ref(pod, ref, f"{path}.resourceFieldRef")
    return text.encode("utf-8", errors="replace")


# --------------------------------------------------------------------------- planning per volume


def _plan_keyed(pod: Pod, planned: _Planned) -> None:
    """configMap / secret: every key, or only `items` at their paths."""
    kind = planned.volume.kind
    src = planned.volume.source
    base = f"spec.volumes[{planned.index}].{kind}"
    name_key = "name" if kind == "configMap" else "secretName"
    name = _str(src.get(name_key), f"{base}.{name_key}", required=True)
    optional = bool(src.get("optional"))
    default_mode = _mode(src.get("defaultMode"), f"{base}.defaultMode", DEFAULT_MODE)
    objects = pod.config_maps if kind == "configMap" else pod.secrets
    secret = kind == "secret"
    items = _parse_items(src.get("items"), f"{base}.items", default_mode)
    data = objects.get(name)
    if data is None:
        if optional:
            return
        raise PodSpecError(
            f"{base}.{name_key}", f"{kind} {name!r} was not sent by interLink (does it exist?)"
        )
    if items:
        for key, rel, mode, item_path in items:
            if key not in data:
                if optional:
                    continue
                raise PodSpecError(f"{item_path}.key", f"key {key!r} is not in {kind} {name!r}")
            planned.add(_File(rel, data[key], mode, secret, f"{item_path}.path"))
        return
    for key in sorted(data):
        rel = _rel_path(key, base, f"key of {kind} {name!r}:")
        planned.add(_File(rel, data[key], default_mode, secret, base))


def _parse_items(value: Any, path: str, default_mode: int) -> list[tuple[str, RelPath, int, str]]:
    """(key, path, mode, field) of each `items` entry."""
    result = []
    for index, raw in enumerate(_list(value, path)):
        item_path = f"{path}[{index}]"
        item = _dict(raw, item_path)
        key = _str(item.get("key"), f"{item_path}.key", required=True)
        rel = _rel_path(item.get("path"), f"{item_path}.path")
        result.append((key, rel, _mode(item.get("mode"), f"{item_path}.mode", default_mode), item_path))
    return result


def _plan_downward_volume(pod: Pod, planned: _Planned) -> None:
    """A raw downwardAPI volume (interLink >= 0.6.2 rewrites them to projected)."""
    base = f"spec.volumes[{planned.index}].downwardAPI"
    src = planned.volume.source
    default_mode = _mode(src.get("defaultMode"), f"{base}.defaultMode", DEFAULT_MODE)
    sent = pod.projected.get(planned.volume.name, {})
    for index, raw in enumerate(_list(src.get("items"), f"{base}.items")):
        item_path = f"{base}.items[{index}]"
        item = _dict(raw, item_path)
        rel = _rel_path(item.get("path"), f"{item_path}.path")
        mode = _mode(item.get("mode"), f"{item_path}.mode", default_mode)
        key = "/".join(rel)
        content = sent[key] if key in sent else _downward_item(pod, item, item_path)
        planned.add(_File(rel, content, mode, False, f"{item_path}.path"))


_Fallback = tuple[RelPath, str, Callable[[], bytes]]  # (path, field, content if interLink lacks it)


class _Names(dict[RelPath, tuple[int, bool, str]]):
    """Paths the sources of a projected volume name -> (mode, secret, field of the owner)."""

    def __init__(self) -> None:
        super().__init__()
        self.explicit: set[RelPath] = set()

    def claim(self, rel: RelPath, mode: int, secret: bool, path: str) -> None:
        """An explicit path (item, token, downwardAPI): two sources may not name the same one."""
        if rel in self.explicit:
            raise PodSpecError(path, f"path {'/'.join(rel)!r} is also used by {self[rel][2]}")
        self.explicit.add(rel)
        self[rel] = (mode, secret, path)

    def whole(self, rel: RelPath, mode: int, secret: bool, path: str) -> None:
        """A key of an object projected without items: explicit paths and earlier sources win."""
        self.setdefault(rel, (mode, secret, path))


def _plan_projected(pod: Pod, planned: _Planned) -> None:
    """projected: interLink's flattened map is the truth; objects by name fill in missing keys."""
    base = f"spec.volumes[{planned.index}].projected"
    src = planned.volume.source
    default_mode = _mode(src.get("defaultMode"), f"{base}.defaultMode", DEFAULT_MODE)
    sent = pod.projected.get(planned.volume.name)
    named = _Names()
    fallbacks: list[_Fallback] = []
    whole_objects: list[bool] = []  # secret? of each configMap/secret source without items

    for index, raw in enumerate(_list(src.get("sources"), f"{base}.sources")):
        source_path = f"{base}.sources[{index}]"
        source = _dict(raw, source_path)
        kinds = [key for key in source if source[key] is not None]
        if len(kinds) != 1:
            raise PodSpecError(source_path, "must have exactly one projection source")
        kind = kinds[0]
        kind_path = f"{source_path}.{kind}"
        body = _dict(source[kind], kind_path)
        if kind == "serviceAccountToken":  # only interLink can mint it: no token sent, no file
            named.claim(
                _rel_path(body.get("path"), f"{kind_path}.path"), default_mode, True, f"{kind_path}.path"
            )
        elif kind in ("configMap", "secret"):
            _projected_object(pod, kind, body, kind_path, default_mode, sent, named, fallbacks, whole_objects)
        elif kind == "downwardAPI":
            for item_index, item_raw in enumerate(_list(body.get("items"), f"{kind_path}.items")):
                item_path = f"{kind_path}.items[{item_index}]"
                item = _dict(item_raw, item_path)
                rel = _rel_path(item.get("path"), f"{item_path}.path")
                mode = _mode(item.get("mode"), f"{item_path}.mode", default_mode)
                named.claim(rel, mode, False, f"{item_path}.path")
                fallbacks.append((rel, f"{item_path}.path", partial(_downward_item, pod, item, item_path)))
        else:
            rel_text = body.get("path")
            if sent is None or not isinstance(rel_text, str) or rel_text not in sent:
                raise PodSpecError(kind_path, f"projection source {kind!r} is not supported by this plugin")
            named.claim(_rel_path(rel_text, f"{kind_path}.path"), default_mode, True, f"{kind_path}.path")

    if sent is None:  # interLink sent nothing (VK DisableProjectedVolumes): an empty volume
        return
    unnamed_secret = any(whole_objects) or not whole_objects  # a file no source explains: assume secret
    for key in sorted(sent):
        rel = _rel_path(key, base, "interLink sent a projected file whose path")
        mode, secret, where = named.get(rel, (default_mode, unnamed_secret, base))
        planned.add(_File(rel, sent[key], mode, secret, where))
    for rel, where, content in fallbacks:
        mode, secret, owner = named[rel]
        if rel not in planned.files and where == owner:
            planned.add(_File(rel, content(), mode, secret, where))


def _projected_object(
    pod: Pod,
    kind: str,
    body: dict[str, Any],
    path: str,
    default_mode: int,
    sent: Mapping[str, bytes] | None,
    named: _Names,
    fallbacks: list[_Fallback],
    whole_objects: list[bool],
) -> None:
    """A configMap/secret projection source: record its paths and the object's contents as fallback."""
    name = _str(body.get("name"), f"{path}.name", required=True)
    optional = bool(body.get("optional"))
    secret = kind == "secret"
    data = (pod.config_maps if kind == "configMap" else pod.secrets).get(name)
    items = _parse_items(body.get("items"), f"{path}.items", default_mode)
    if not items:
        whole_objects.append(secret)
        if data is None:
            if sent is not None and secret and not optional:
                raise PodSpecError(
                    f"{path}.name",
                    f"secret {name!r} was not sent (interLink does not forward projected secret sources)",
                )
            return
        for key in sorted(data):
            rel = _rel_path(key, path, f"key of {kind} {name!r}:")
            named.whole(rel, default_mode, secret, path)
            fallbacks.append((rel, path, partial(bytes, data[key])))
        return
    for key, rel, mode, item_path in items:
        named.claim(rel, mode, secret, f"{item_path}.path")
        if data is not None and key in data:
            fallbacks.append((rel, f"{item_path}.path", partial(bytes, data[key])))
        elif sent is not None and "/".join(rel) not in sent and not optional:
            raise PodSpecError(
                f"{item_path}.key", f"key {key!r} of {kind} {name!r} was not sent by interLink"
            )


def _plan_host_path(planned: _Planned, allowed_host_paths: Sequence[str]) -> None:
    """hostPath: allowed only under AllowedHostPaths (realpaths); never created."""
    base = f"spec.volumes[{planned.index}].hostPath"
    src = planned.volume.source
    path = _str(src.get("path"), f"{base}.path", required=True)
    if not path.startswith("/") or "\x00" in path:
        raise PodSpecError(f"{base}.path", "must be an absolute path")
    host_type = _str(src.get("type"), f"{base}.type")
    if host_type not in HOST_PATH_TYPES:
        raise PodSpecError(f"{base}.type", f"must be one of {', '.join(repr(t) for t in HOST_PATH_TYPES)}")
    allowed = [os.path.realpath(a) for a in allowed_host_paths if a.startswith("/")]
    if not allowed:
        raise PodSpecError(
            f"{base}.path", "hostPath volumes are not allowed here (AllowedHostPaths is empty)", 403
        )
    real = os.path.realpath(path)
    holding = [root for root in allowed if _within(real, root)]
    if not holding:
        raise PodSpecError(
            f"{base}.path", f"{path!r} is not under an allowed host path (AllowedHostPaths)", 403
        )
    if not os.path.exists(real):
        raise PodSpecError(f"{base}.path", f"{path!r} does not exist (the plugin never creates host paths)")
    if host_type.startswith("Directory") and not os.path.isdir(real):
        raise PodSpecError(f"{base}.path", f"{path!r} is not a directory (type {host_type})")
    if host_type.startswith("File") and not os.path.isfile(real):
        raise PodSpecError(f"{base}.path", f"{path!r} is not a regular file (type {host_type})")
    planned.base = real
    planned.root = max(holding, key=len)


def _plan(pod: Pod, job_dir: str, allowed_host_paths: Sequence[str], limits: VolumeLimits) -> dict[str, _Planned]:
    plans: dict[str, _Planned] = {}
    budget = _Budget(limits)  # one for the pod's volumes together
    for index, volume in enumerate(pod.volumes):
        problem = _component_ok(volume.name) or ("must not contain '/'" if "/" in volume.name else None)
        if problem:
            raise PodSpecError(f"spec.volumes[{index}].name", f"volume name {volume.name!r} {problem}")
        if volume.kind == "emptyDir":
            medium = volume.source.get("medium") or ""
            if medium not in ("", "Memory"):  # medium Memory and sizeLimit are accepted, not enforced
                raise PodSpecError(f"spec.volumes[{index}].emptyDir.medium", f"{medium!r} is not supported")
            planned = _Planned(volume, index, "emptydir", os.path.join(job_dir, "emptydir", volume.name), job_dir)
        elif volume.kind == "hostPath":
            planned = _Planned(volume, index, "hostpath", "")
            _plan_host_path(planned, allowed_host_paths)
        else:
            planned = _Planned(volume, index, "files", os.path.join(job_dir, "volumes", volume.name), job_dir,
                               budget)
            if volume.kind in ("configMap", "secret"):
                _plan_keyed(pod, planned)
            elif volume.kind == "projected":
                _plan_projected(pod, planned)
            elif volume.kind == "downwardAPI":
                _plan_downward_volume(pod, planned)
            else:
                raise PodSpecError(f"spec.volumes[{index}].{volume.kind}", "volume type is not supported")
        plans[volume.name] = planned
    return plans


# --------------------------------------------------------------------------- writing


def _open_dirs(root_fd: int, parts: Sequence[str], mode: int, path: str) -> int:
    """Open (creating) `parts` below `root_fd` without following symlinks; chmod each to `mode`."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            with suppress(FileExistsError):
                os.mkdir(part, mode, dir_fd=fd)
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                kind = "a symlink" if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode) else "not a directory"
                raise PodSpecError(path, f"{part!r} in the volume directory is {kind}; refused") from exc
            os.close(fd)
            fd = next_fd
            os.fchmod(fd, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write_file(dir_fd: int, name: str, item: _File) -> None:
    """Replace `name` atomically with the item's bytes and mode; never writes through a symlink."""
    try:
        existing = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISLNK(existing):
        raise PodSpecError(
            item.field, f"{'/'.join(item.rel)!r} is a symlink in the volume directory; refused"
        )
    if existing is not None and stat.S_ISDIR(existing):
        raise PodSpecError(item.field, f"{'/'.join(item.rel)!r} exists as a directory in the volume")
    while True:
        tmp = f".tmp-{os.urandom(8).hex()}"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(item.content)
            os.fchmod(handle.fileno(), item.mode)  # after writing: umask-proof, and 0400 files get written
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _write(job_fd: int, planned: _Planned) -> None:
    if planned.category == "hostpath":
        return
    name_field = f"spec.volumes[{planned.index}].name"
    if planned.category == "emptydir":
        parent = _open_dirs(job_fd, ["emptydir"], DIR_MODE, name_field)
        try:
            os.close(_open_dirs(parent, [planned.volume.name], EMPTYDIR_MODE, name_field))
        finally:
            os.close(parent)
        return
    volume_fd = _open_dirs(job_fd, ["volumes", planned.volume.name], DIR_MODE, name_field)
    try:
        for item in planned.files.values():
            dir_fd = _open_dirs(volume_fd, item.rel[:-1], DIR_MODE, item.field)
            try:
                _write_file(dir_fd, item.rel[-1], item)
            finally:
                os.close(dir_fd)
    finally:
        os.close(volume_fd)


# --------------------------------------------------------------------------- mounts


def _mount(planned: _Planned, mount: VolumeMount, path: str, sub_paths: list[_SubPath]) -> Mount:
    """The Mount for one volumeMount; a subPath below the job dir is recorded for the writer."""
    what = f"volume {planned.volume.name!r}" + (f" subPath {mount.sub_path!r}" if mount.sub_path else "")
    checked = partial(Mount, root=planned.root, what=what)
    if not mount.sub_path:
        is_file = planned.category == "hostpath" and os.path.isfile(planned.base)
        return checked(planned.base, mount.mount_path, mount.read_only, is_file)
    rel = _rel_path(mount.sub_path, f"{path}.subPath", "subPath")
    source = os.path.join(planned.base, *rel)
    if planned.category == "hostpath":
        real = os.path.realpath(source)
        if not _within(real, planned.base):
            raise PodSpecError(f"{path}.subPath", "resolves outside the hostPath volume")
        if not os.path.exists(real):
            raise PodSpecError(
                f"{path}.subPath", "does not exist on the host (the plugin never creates host paths)"
            )
        return checked(real, mount.mount_path, mount.read_only, os.path.isfile(real))
    sub_paths.append(_SubPath(planned, rel, path))
    # judged from what is written: a file of the volume, else a directory (made when missing)
    return checked(source, mount.mount_path, mount.read_only, rel in planned.files)


def _write_sub_path(job_fd: int, job_dir: str, sub: _SubPath) -> None:
    """Kubernetes creates a missing subPath as a directory; one that resolves outside its volume
    directory (a planted symlink) is refused."""
    planned, path = sub.planned, sub.field
    top = "emptydir" if planned.category == "emptydir" else "volumes"
    base = os.path.join(job_dir, top, planned.volume.name)
    source = os.path.join(base, *sub.rel)
    if not _within(os.path.realpath(source), os.path.realpath(base)):
        raise PodSpecError(f"{path}.subPath", "resolves outside the volume directory")
    if not os.path.lexists(source):
        mode = EMPTYDIR_MODE if planned.category == "emptydir" else DIR_MODE
        parent = _open_dirs(job_fd, [top], DIR_MODE, f"{path}.subPath")
        try:
            os.close(_open_dirs(parent, [planned.volume.name, *sub.rel], mode, f"{path}.subPath"))
        finally:
            os.close(parent)


def _container_mounts(
    containers: tuple[Container, ...], group: str, plans: dict[str, _Planned], sub_paths: list[_SubPath]
) -> dict[str, tuple[Mount, ...]]:
    result: dict[str, tuple[Mount, ...]] = {}
    for c_index, container in enumerate(containers):
        mounts: list[Mount] = []
        for m_index, mount in enumerate(container.volume_mounts):
            path = f"{group}[{c_index}].volumeMounts[{m_index}]"
            planned = plans.get(mount.name)
            if planned is None:
                raise PodSpecError(f"{path}.name", f"no volume named {mount.name!r} in spec.volumes")
            mounts.append(_mount(planned, mount, path, sub_paths))
        result[container.name] = tuple(mounts)
    return result


def plan_volumes(
    pod: Pod,
    job_dir: Path | str,
    *,
    allowed_host_paths: Sequence[str],
    limits: VolumeLimits = VolumeLimits(),
) -> VolumePlan:
    """Validate the pod's volumes and plan their files under `job_dir` (the path the job sees) and every
    container's mounts; nothing is written. Raises PodSpecError naming the field; every check, `limits`
    included, is made here."""
    root = os.path.abspath(job_dir)
    plans = _plan(pod, root, allowed_host_paths, limits)
    sub_paths: list[_SubPath] = []
    mounts = {
        **_container_mounts(pod.init_containers, "spec.initContainers", plans, sub_paths),
        **_container_mounts(pod.containers, "spec.containers", plans, sub_paths),
    }
    files = tuple(
        WrittenFile(os.path.join(planned.base, *item.rel), item.mode, len(item.content), item.secret)
        for planned in plans.values()
        for item in planned.files.values()
    )
    return VolumePlan(mounts=mounts, files=files, volumes=tuple(plans.values()), sub_paths=tuple(sub_paths))


def write_volumes(plan: VolumePlan, job_dir: Path) -> None:
    """Write a plan's volume files and dirs into `job_dir` (which must exist: the job dir, or a stage
    that becomes it), walking with O_NOFOLLOW dir fds; the subPaths are checked and made."""
    root = os.path.abspath(job_dir)
    job_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for planned in plan.volumes:
            _write(job_fd, planned)
        for sub in plan.sub_paths:
            _write_sub_path(job_fd, root, sub)
    finally:
        os.close(job_fd)


def materialise_volumes(
    pod: Pod,
    job_dir: Path,
    *,
    allowed_host_paths: Sequence[str],
    limits: VolumeLimits = VolumeLimits(),
) -> VolumePlan:
    """plan_volumes for `job_dir`, then write_volumes into it (a backend plans its whole job dir first and
    writes it with its other files: core/podrunner/jobdir.py write_planned)."""
    plan = plan_volumes(pod, job_dir, allowed_host_paths=allowed_host_paths, limits=limits)
    write_volumes(plan, job_dir)
    return plan
