"""A volume mount as the runtimes need it: a path in the job directory bound into the container."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mount:
    source: str  # absolute path as the job sees it (under the job dir, or an allowed hostPath)
    target: str  # absolute path inside the container
    read_only: bool = False
    is_file: bool = False  # a subPath (or item) bound as a single file


@dataclass(frozen=True)
class WrittenFile:
    """A file the plugin wrote into the job dir (listed by `render`, masked when secret)."""

    path: str
    mode: int
    size: int
    secret: bool
