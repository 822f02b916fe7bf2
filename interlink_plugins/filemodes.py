"""Modes of what the plugin keeps and reads.

The process runs with umask 077: whatever it creates is its own. StateDir (the SQLite state, the SSH
mirrors, HTCondor tokens) is 0700 and its DB 0600, tightened at every start if an older version or an
admin left them open. Directories made on the way to the data root are traverse-only (0711): the jobs'
uids reach their job dirs and list nothing. Files that hold secrets (keys, tokens, passwords, the config)
are named in a warning when other local users can read them.
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path

from interlink_plugins.core.errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
TRAVERSE_ONLY = 0o711


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def make_dirs(path: Path, mode: int) -> None:
    """Create the missing components of `path`, each with exactly `mode` (whatever the umask)."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        os.chmod(directory, mode)


def private_dir(path: Path, what: str) -> None:
    """`path` exists, is a directory of the plugin's uid and is 0700 (made so when it was looser)."""
    make_dirs(path, 0o700)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{what} {path} is owned by uid {info.st_uid}, not by the plugin's uid {os.geteuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
        log.info("%s %s was mode %04o: made 0700", what, path, stat.S_IMODE(info.st_mode))


def private_files(*paths: Path) -> None:
    """Existing files of the plugin's uid among `paths` lose any group/other permission."""
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
            log.info("%s was mode %04o: made private", path, stat.S_IMODE(info.st_mode))


def secure_state(state_dir: Path, db: Path) -> None:
    """StateDir 0700 and the SQLite DB (with its -wal and -shm) 0600, before the DB is opened."""
    private_dir(state_dir, "StateDir")
    private_files(db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))


def writable_by_others(path: Path, what: str) -> str | None:
    """A warning when users other than the plugin's can create entries in the directory `path` (the data
    root: they could plant what looks like a job directory)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o022:
        return None
    return (f"{what} {path} (mode {mode:04o}) is writable by other users: they can plant entries where job "
            "directories go; make it 0711 (or 0755), owned by the plugin's user")


def readable_by_others(path: Path, what: str) -> str | None:
    """A warning when users other than the plugin's can read `path` (a key, token, password or config):
    world-readable, group-readable by a group other than the plugin's own, or owned by another user."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # a missing file is reported where it is read
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o004:
        who = "every local user"
    elif mode & 0o040 and info.st_gid != os.getegid():
        who = f"group {_group_name(info.st_gid)}"
    elif info.st_uid not in (0, os.geteuid()):
        who = f"its owner uid {info.st_uid}"
    else:
        return None
    return (f"{what} {path} (mode {mode:04o}) is readable by {who}, not only by the plugin: "
            "chmod 0600 (or 0640 with the plugin's own group)")


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} ({gid})"
    except KeyError:
        return str(gid)
