"""Bind sources re-checked right before a container starts, without following symlinks.

A container that can write into a volume (an emptyDir, a writable hostPath) can replace a directory
another container binds with a subPath by a symlink (``rm -rf /vol/sub && ln -s / /vol/sub``); the
runtime would follow it when the next container starts and bind the host's ``/``. The volumes were
checked when the pod was created, but containers of one pod start one after the other, so the check
runs again for every container, right before its start: each component of the source below its root
(the job dir, or the AllowedHostPaths entry of a hostPath) is opened with ``O_PATH|O_NOFOLLOW`` from
the one before; a symlink, a missing component or a non-directory on the way is a refusal that names
the volume, and the container waits (``CreateContainerConfigError``) instead of starting.

The SLURM pod runner does the same check in bash (``check_binds`` in templates/pod_runner.sh).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from interlink_plugins.core.volumes.mounts import Mount

REASON = "CreateContainerConfigError"  # the kubelet's waiting reason for a subPath it refuses
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class BindSource:
    """One bind source to re-check: `source` must stay below `root` through real directories."""

    root: str
    source: str
    what: str  # "volume 'cache' subPath 'sub'"

    def to_json(self) -> list[str]:
        return [self.root, self.source, self.what]

    @classmethod
    def from_json(cls, data: Iterable[object]) -> BindSource:
        root, source, what = (str(item) for item in data)
        return cls(root, source, what)


def bind_sources(mounts: Iterable[Mount]) -> tuple[BindSource, ...]:
    """The sources of `mounts` that have a root to stay below."""
    return tuple(BindSource(m.root, m.source, m.what or m.source) for m in mounts if m.root)


class Refused(Exception):
    """A bind source that must not be bound now (the message says why)."""


def refusal(binds: Iterable[BindSource]) -> str:
    """Why one of `binds` must not be bound now ("" when every one is fine)."""
    for bind in binds:
        try:
            os.close(open_source(bind))
        except Refused as exc:
            return str(exc)
    return ""


def open_source(bind: BindSource) -> int:
    """An ``O_PATH`` fd of the source, reached from its root without following a symlink (the caller
    closes it); Refused naming the volume when a component is a symlink, missing or not a directory."""
    try:
        return _open(bind.root, bind.source)
    except Refused as exc:
        raise Refused(f"{bind.what}: {exc}; refused (the source is re-checked before each container start)") from None


def _open(root: str, source: str) -> int:
    root = root.rstrip("/") or "/"
    if source != root and not source.startswith(root if root == "/" else root + "/"):
        raise Refused(f"{source!r} is not below {root!r}")
    parts = [p for p in source[len(root):].split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Refused(f"{source!r} has a '.' or '..' component")
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the admin's / the plugin's own path
    except OSError as exc:
        raise Refused(f"{root!r} cannot be opened ({os.strerror(exc.errno or 0)})") from None
    try:
        walked = root
        for index, part in enumerate(parts):
            walked = os.path.join(walked, part)
            try:
                next_fd = os.open(part, _PATH_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise Refused(f"{walked!r} does not exist") from None
                raise Refused(f"{walked!r} cannot be opened ({os.strerror(exc.errno or 0)})") from None
            os.close(fd)
            fd = next_fd
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise Refused(f"{walked!r} is a symlink (to {_link_text(walked)!r})")
            if index < len(parts) - 1 and not stat.S_ISDIR(mode):
                raise Refused(f"{walked!r} is not a directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_text(path: str) -> str:
    try:
        return os.readlink(path)[:200]
    except OSError:
        return "?"
