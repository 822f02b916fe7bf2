"""A volume mount as the runtimes need it: a path in the job directory bound into the container."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mount:
    source: str  # absolute path as the job sees it (under the job dir, or an allowed hostPath)
    target: str  # absolute path inside the container
    read_only: bool = False
    is_file: bool = False  # a subPath (or item) bound as a single file
    # the directory the source must stay below: the job dir, or the AllowedHostPaths entry holding a
    # hostPath. Every component of the source below it is re-checked right before each container
    # start (core/volumes/bindcheck.py, the runner's check_binds): none may be a symlink ("" = not checked)
    root: str = field(default="", compare=False)
    what: str = field(default="", compare=False)  # for refusals: "volume 'cache' subPath 'sub'"


@dataclass(frozen=True)
class WrittenFile:
    """A file the plugin wrote into the job dir (listed by `render`, masked when secret)."""

    path: str
    mode: int
    size: int
    secret: bool
