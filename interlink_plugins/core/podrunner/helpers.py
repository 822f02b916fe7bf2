"""The runtime helpers: static scripts every job runs, stored once per content hash in the data root.

The static pod runner, ns-exec.sh, apptainer.sh, probe.sh, mpi.sh and podman-secrets.sh are the same
for every pod. They live in ``<data root>/helpers/<sha256>/`` (the hash of every name and content,
so a new plugin version gets a new dir and running jobs keep theirs), written atomically (a private
temp dir renamed into place), files 0555 and dirs 0511 owned by the plugin: a job user can read and run
them, not change them (nor list the dirs, as the data root). The job's runner refers to them by that path.

An existing copy is used only when it is what the plugin would write: the ``helpers`` dir and the
hash dir real directories (no symlink followed) owned by the plugin and writable by nobody else, each
file a regular file owned by the plugin, mode 0555, with the expected bytes, and nothing else in the
dir. Anything else (planted by a job user, altered, left half-written) is moved aside and replaced.
The full check is made once per process; afterwards an ``lstat`` of every entry must match what was
checked (inode, size, mode, owner, ctime), or the full check runs again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import secrets
import stat
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from interlink_plugins.core import safefs

HELPERS_DIR = "helpers"
FILE_MODE = 0o555
DIR_MODE = 0o511  # the data root's stance: other uids traverse, read the files by name, list nothing
_PARENT_MODE = 0o711
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Fingerprint = tuple[tuple[str, int, int, int, int, int, int], ...]


@dataclass(frozen=True)
class HelperSet:
    """The helpers as name -> bytes (sorted by name) and the hash naming their directory."""

    files: tuple[tuple[str, bytes], ...]
    digest: str

    def dir_below(self, data_root: str | Path) -> str:
        """``<data_root>/helpers/<digest>``: where the job finds them."""
        return posixpath.join(str(data_root), HELPERS_DIR, self.digest)

    def texts(self) -> dict[str, str]:
        return {name: data.decode() for name, data in self.files}


def make_set(files: dict[str, str]) -> HelperSet:
    """A HelperSet of ``files`` (name -> text); the digest covers every name and content."""
    items = tuple(sorted((name, text.encode()) for name, text in files.items()))
    digest = hashlib.sha256()
    for name, data in items:
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return HelperSet(items, digest.hexdigest())


@lru_cache(maxsize=1)
def helper_set() -> HelperSet:
    """The plugin's helpers: the static pod runner and the runtimes' and probes' scripts."""
    from interlink_plugins.core.podrunner.render import STATIC_RUNNER, static_runner
    from interlink_plugins.core.runtimes.containers import helper_files
    from interlink_plugins.core.runtimes.probes import probe_helper_files

    return make_set({**helper_files(), **probe_helper_files(), STATIC_RUNNER: static_runner()})


class HelperTampered(Exception):
    """An existing helper copy is not exactly what the plugin writes (the reason in the message)."""


# --------------------------------------------------------------------------- local data root

_lock = threading.Lock()
_checked: dict[tuple[str, str], Fingerprint | None] = {}


def ensure_local(data_root: Path, helpers: HelperSet) -> str:
    """The helpers' dir below ``data_root``, checked (and written when missing or not as expected).

    Blocking; raises safefs.Refused when ``<data_root>/helpers`` is not a directory the plugin owns
    alone (it is never written through)."""
    key = (str(data_root), helpers.digest)
    with _lock:
        root_fd = os.open(data_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the admin's path
        try:
            parent_fd = _open_parent(root_fd, data_root)
            try:
                known = _checked.get(key)
                if known is not None and _fingerprint(parent_fd, helpers) == known:
                    return helpers.dir_below(data_root)
                _checked.pop(key, None)
                try:
                    _verify(parent_fd, helpers)
                except FileNotFoundError:
                    _install(parent_fd, helpers)
                except HelperTampered:
                    _move_aside(parent_fd, helpers.digest)
                    _install(parent_fd, helpers)
                _verify(parent_fd, helpers)
                _checked[key] = _fingerprint(parent_fd, helpers)
            finally:
                os.close(parent_fd)
        finally:
            os.close(root_fd)
    return helpers.dir_below(data_root)


def _open_parent(root_fd: int, data_root: Path) -> int:
    """``<data_root>/helpers``, made 0711 when missing; a symlink, another owner or a dir others may
    write is refused."""
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(HELPERS_DIR, _PARENT_MODE, dir_fd=root_fd)
        made = True
    shown = str(data_root / HELPERS_DIR)
    info = os.stat(HELPERS_DIR, dir_fd=root_fd, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        raise safefs.Refused(shown, safefs.kind_of(info.st_mode))
    if info.st_uid != os.geteuid() and not info.st_mode & 0o022 and not made:
        # the dir of an earlier identity of the plugin (a site moving it from its own user to root, or
        # back; the other's 0711 dir cannot even be opened): never used, moved aside whole (the rename
        # follows nothing) and made anew
        aside = f"{HELPERS_DIR}.uid-{info.st_uid}.{secrets.token_hex(4)}"
        os.rename(HELPERS_DIR, aside, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        return _open_parent(root_fd, data_root)
    try:
        fd = os.open(HELPERS_DIR, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped since the lstat
            raise safefs.Refused(shown, "replaced while checked") from None
        raise
    if made:
        os.fchmod(fd, _PARENT_MODE)  # umask-proof: job users traverse it
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or opened.st_uid != os.geteuid() \
            or opened.st_mode & 0o022:
        os.close(fd)
        raise safefs.Refused(shown, f"owned by uid {opened.st_uid} with mode {stat.S_IMODE(opened.st_mode):o} "
                                    "(must be the plugin's, writable by nobody else)")
    return fd


def _owned_read_only(info: os.stat_result, mode: int) -> bool:
    return info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == mode


def _verify(parent_fd: int, helpers: HelperSet) -> None:
    """Raise FileNotFoundError when the copy is missing, HelperTampered when it is not as written."""
    try:
        fd = os.open(helpers.digest, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HelperTampered(f"{helpers.digest} is not a directory ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not _owned_read_only(info, DIR_MODE):
            raise HelperTampered(f"{helpers.digest}: uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}")
        expected = dict(helpers.files)
        present = sorted(os.listdir(fd))
        if present != sorted(expected):
            raise HelperTampered(f"{helpers.digest} holds {present}")
        for name, data in expected.items():
            try:
                file_fd = os.open(name, _READ_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise HelperTampered(f"{name}: {exc.strerror}") from None
            try:
                file_info = os.fstat(file_fd)
                if not stat.S_ISREG(file_info.st_mode) or not _owned_read_only(file_info, FILE_MODE):
                    raise HelperTampered(f"{name}: {safefs.kind_of(file_info.st_mode)}, uid {file_info.st_uid}, "
                                         f"mode {stat.S_IMODE(file_info.st_mode):o}")
                if file_info.st_size != len(data) or _read_all(file_fd, len(data) + 1) != data:
                    raise HelperTampered(f"{name}: content differs")
            finally:
                os.close(file_fd)
    finally:
        os.close(fd)


def _read_all(fd: int, limit: int) -> bytes:
    chunks = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _fingerprint(parent_fd: int, helpers: HelperSet) -> Fingerprint | None:
    """lstat of the hash dir and each file: what must not have changed since the full check."""
    try:
        entries = [("", os.stat(helpers.digest, dir_fd=parent_fd, follow_symlinks=False))]
        for name, _data in helpers.files:
            path = f"{helpers.digest}/{name}"  # the dir was checked: not a symlink unless its inode changed
            entries.append((name, os.stat(path, dir_fd=parent_fd, follow_symlinks=False)))
    except OSError:
        return None
    return tuple((name, i.st_dev, i.st_ino, i.st_mode, i.st_uid, i.st_size, i.st_ctime_ns) for name, i in entries)


def _install(parent_fd: int, helpers: HelperSet) -> None:
    """Write the helpers into a private temp dir, then rename it to the hash dir."""
    tmp = f".tmp-{secrets.token_hex(8)}"
    os.mkdir(tmp, 0o700, dir_fd=parent_fd)
    try:
        fd = os.open(tmp, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            for name, data in helpers.files:
                file_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                  dir_fd=fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(file_fd, view):]
                    os.fchmod(file_fd, FILE_MODE)
                finally:
                    os.close(file_fd)
            os.fchmod(fd, DIR_MODE)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, helpers.digest, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _remove(parent_fd, tmp)  # another process installed it meanwhile: verified by the caller
    except BaseException:
        _remove(parent_fd, tmp)
        raise


def _move_aside(parent_fd: int, name: str) -> None:
    """Rename a copy that failed the check out of the way, then remove it (never followed)."""
    aside = f".bad-{secrets.token_hex(8)}"
    os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    _remove(parent_fd, aside)


def _remove(parent_fd: int, name: str) -> None:
    """Remove ``name`` below the helpers dir, a symlink or file as itself, a dir with safefs.remove_tree."""
    with contextlib.suppress(FileNotFoundError):
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=parent_fd)
            return
        with contextlib.suppress(OSError):
            os.chmod(name, 0o700, dir_fd=parent_fd, follow_symlinks=False)
        safefs.remove_tree(safefs.Location(Path(f"/proc/self/fd/{parent_fd}"), (name,)))
