"""Files in directories a job controls (job dirs, the Go plugin's dirs, the SSH mirror): never followed.

A job owns its job dir: it can replace any file or directory in it with a symlink, a FIFO, a device
node, a socket, a hard link or a huge sparse file, at any moment. Every access of the plugin below a
trusted root (the admin's DataRootFolder, the plugin's StateDir) goes through this module:

* the path below the root is walked one component at a time from a directory fd, each opened
  ``O_PATH|O_NOFOLLOW|O_DIRECTORY``: a symlink anywhere below the root is refused, never followed;
* a file is opened ``O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`` relative to its directory fd and must be a
  regular file by ``fstat`` (a FIFO, device or socket is refused without blocking, a directory too);
* reads are bounded (``STATE_BYTES`` for a runner state file, whatever the file's size);
* writes go to an ``O_CREAT|O_EXCL|O_NOFOLLOW`` temp file renamed within the same directory fd;
* removal and ownership walks work on directory fds with ``unlinkat``/``fchownat`` and never follow a
  symlink (a job that swaps a subdir for a symlink to ``/etc`` gets its symlink removed, nothing else);
* a root plugin touching a directory owned by another uid does it AS that uid: the walking thread
  takes the owner's fsuid/fsgid and no supplementary groups (all per thread on Linux) until the access
  ends, so the kernel refuses whatever that uid could not touch itself (hard links to root-only files
  included).

Everything here blocks: call it from a worker thread (``run`` uses the dedicated job-dir pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import os
import platform
import pwd
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

STATE_BYTES = 4096
"""A runner state file (exit, started, reason, ...) is read up to this many bytes; the rest is ignored."""
MAX_DEPTH = 32
"""Directory fds held at once by a tree walk; a deeper subtree is moved up to the top and walked again."""

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {
    stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device", stat.S_IFDIR: "a directory", stat.S_IFREG: "a regular file",
}


class Refused(OSError):
    """A path the plugin will not use: a symlink, FIFO, device, socket or directory where a file was expected."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EPERM, f"{path} is {kind}: refused")
        self.path = path
        self.kind = kind


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


@dataclass(frozen=True)
class Location:
    """A path below a trusted ``root``: the root is opened as given (the admin's path may hold symlinks),
    every part below it is walked without following symlinks."""

    root: Path
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in self.parts:
            if not part or part in (".", "..") or "/" in part or "\0" in part:
                raise ValueError(f"not a path component: {part!r}")

    def __truediv__(self, name: str) -> Location:
        return Location(self.root, (*self.parts, *(p for p in name.split("/") if p)))

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else self.root.name

    @property
    def parent(self) -> Location:
        if not self.parts:
            raise ValueError(f"{self.root} is the trusted root")
        return Location(self.root, self.parts[:-1])

    def __str__(self) -> str:
        return str(self.path)


def job_location(job_dir: str | Path) -> Location:
    """A job dir: its parent (the data root) is trusted, the job dir itself is not."""
    path = Path(job_dir)
    return Location(path.parent, (path.name,))


def below(root: Path, path: Path) -> Location:
    """``path`` (lexically under ``root``) as a Location of that root."""
    return Location(root, path.relative_to(root).parts)


# --------------------------------------------------------------------------- identity (per thread)

_LIBC = ctypes.CDLL(None, use_errno=True)
# setgroups as a raw syscall: per thread (glibc's wrapper changes every thread of the process)
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "ppc64le": 81, "s390x": 206}.get(platform.machine())


@functools.lru_cache(maxsize=256)
def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 65534  # nogroup: an unknown uid gets no group of ours


def _set_groups(groups: list[int]) -> None:
    if _SYS_SETGROUPS is None:
        return
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _LIBC.syscall(_SYS_SETGROUPS, len(groups), array) != 0:
        raise OSError(ctypes.get_errno(), "setgroups (this thread)")


class _Identity:
    """The calling thread's file-system identity: the plugin's until a directory owned by another uid is
    entered (a root plugin only), then that uid's with its primary group and no supplementary groups."""

    def __init__(self, *, switch: bool = True) -> None:
        self.uid: int | None = None
        self._groups: list[int] | None = None  # the thread's groups while switched (to restore)
        self._switch = switch

    def enter(self, owner: int) -> None:
        """Act as ``owner`` from now on (only a root plugin switches, and only once, away from root)."""
        if not self._switch or self._groups is not None or owner == 0 or os.geteuid() != 0:
            return
        groups = os.getgroups()
        try:
            _set_groups([])
        except OSError:
            raise PermissionError(errno.EPERM, f"cannot act as uid {owner} (setgroups: no CAP_SETGID)") from None
        self._groups = groups
        _LIBC.setfsgid(_primary_gid(owner))
        _LIBC.setfsuid(owner)
        if _LIBC.setfsuid(-1) != owner:  # setfsuid answers the previous value: the current one
            self.leave()
            raise PermissionError(errno.EPERM, f"cannot act as uid {owner} (setfsuid)")
        self.uid = owner

    def leave(self) -> None:
        """Back to the plugin's own identity (its capabilities come back with fsuid 0)."""
        if self._groups is None:
            return
        _LIBC.setfsuid(os.geteuid())
        _LIBC.setfsgid(os.getegid())
        _set_groups(self._groups)
        self.uid, self._groups = None, None


@contextlib.contextmanager
def _access(*, switch: bool = True) -> Iterator[_Identity]:
    identity = _Identity(switch=switch)
    try:
        yield identity
    finally:
        identity.leave()


def acting_uid() -> int:
    """The fsuid of the calling thread (tests and diagnostics)."""
    return int(_LIBC.setfsuid(-1))


# --------------------------------------------------------------------------- walking


def _open_regular(dir_fd: int, name: str, shown: str, flags: int = _READ, mode: int = 0o600) -> int:
    try:
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except PermissionError:
        raise Refused(shown, "a file its directory's owner may not open") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP, errno.ENOTDIR):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise exc from None
            raise Refused(shown, kind_of(info.st_mode)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Refused(shown, kind_of(info.st_mode))
    return fd


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        block = os.read(fd, min(left, 1 << 16))
        if not block:
            break
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


@dataclass
class StateFiles:
    """The small files of one directory: their first bytes, and the ones refused (name -> what they are)."""

    found: dict[str, bytes]
    refused: dict[str, str]


class Dir:
    """A directory reached from a trusted root without following symlinks (an O_PATH fd).

    Raises FileNotFoundError / NotADirectoryError for what is missing, Refused for what is not a real
    directory or regular file. Close it (or use it as a context manager).
    """

    def __init__(self, fd: int, loc: Location, identity: _Identity) -> None:
        self.fd = fd
        self.loc = loc
        self._identity = identity

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def child(self, name: str, *, create: bool = False, mode: int = 0o700) -> Dir:
        """The subdirectory ``name`` (made when asked); the identity follows its owner."""
        loc = self.loc / name
        try:
            fd = os.open(name, _DIR, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=self.fd)
            return self.child(name)
        except NotADirectoryError:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            raise Refused(str(loc), kind_of(info.st_mode)) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISDIR(info.st_mode):
                raise Refused(str(loc), kind_of(info.st_mode))
            self._identity.enter(info.st_uid)
        except BaseException:
            os.close(fd)
            raise
        return Dir(fd, loc, self._identity)

    def walk(self, parts: tuple[str, ...], *, create: bool = False, mode: int = 0o700) -> Dir:
        current = Dir(os.dup(self.fd), self.loc, self._identity)
        for part in parts:
            try:
                nxt = current.child(part, create=create, mode=mode)
            finally:
                current.close()
            current = nxt
        return current

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def as_plugin(self) -> None:
        """Act as the plugin again (for what follows in this access): only for an operation that cannot
        reach what the job controls, such as removing an empty directory by name."""
        self._identity.leave()

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def link(self, name: str) -> str | None:
        """The text of the symlink ``name`` (never followed); None when it is not a symlink."""
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError:
            return None

    def open(self, name: str) -> FileIO:
        """A regular file opened for reading (O_NOFOLLOW|O_NONBLOCK); the caller closes it."""
        return FileIO(_open_regular(self.fd, name, str(self.loc / name)), "rb", closefd=True)

    def read(self, name: str, limit: int = STATE_BYTES) -> bytes:
        fd = _open_regular(self.fd, name, str(self.loc / name))
        try:
            return _read_fd(fd, limit)
        finally:
            os.close(fd)

    def read_tail(self, name: str, limit: int) -> bytes:
        """The last ``limit`` bytes of a regular file (a sparse or huge file costs no more)."""
        fd = _open_regular(self.fd, name, str(self.loc / name))
        try:
            os.lseek(fd, max(0, os.fstat(fd).st_size - limit), os.SEEK_SET)
            return _read_fd(fd, limit)
        finally:
            os.close(fd)

    def read_many(self, names: tuple[str, ...], limit: int = STATE_BYTES) -> StateFiles:
        """Several small files (missing ones left out, refused ones named)."""
        out = StateFiles({}, {})
        for name in names:
            try:
                out.found[name] = self.read(name, limit)
            except Refused as exc:
                out.refused[name] = exc.kind
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def names(self) -> list[str]:
        try:
            fd = os.open(".", _LIST, dir_fd=self.fd)
        except PermissionError:
            raise Refused(str(self.loc), "a directory its owner may not list") from None
        try:
            with os.scandir(fd) as listing:
                return sorted(entry.name for entry in listing)
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Replace ``name`` with ``data`` atomically: an O_EXCL temp file renamed in this directory."""
        self.replace_from(name, lambda handle: handle.write(data), mode)

    def open_append(self, name: str, mode: int = 0o600) -> FileIO:
        """A regular file opened to append (created when missing), never through a symlink."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        return FileIO(_open_regular(self.fd, name, str(self.loc / name), flags, mode), "wb", closefd=True)

    def append(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Append to a regular file (created when missing), never through a symlink."""
        with self.open_append(name, mode) as handle:
            handle.write(data)

    def replace_from(self, name: str, fill: Callable[[FileIO], object], mode: int = 0o600) -> None:
        """Replace ``name`` atomically with what ``fill`` writes into a fresh O_EXCL temp file."""
        tmp = _temp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        try:
            with FileIO(fd, "wb", closefd=False) as handle:
                fill(handle)
            os.fchmod(fd, mode)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        finally:
            os.close(fd)

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def chmod(self, mode: int) -> None:
        os.chmod(f"/proc/self/fd/{self.fd}", mode)  # the inode of the fd, never a symlink's target


@contextlib.contextmanager
def open_dir(loc: Location, *, create: bool = False, mode: int = 0o700, as_owner: bool = True) -> Iterator[Dir]:
    """The directory ``loc``, walked from its root; the calling thread acts as its owner until the end.

    ``as_owner=False`` keeps the plugin's identity: only for metadata (stat, readlink), never for content.
    """
    if create:
        loc.root.mkdir(mode=mode, parents=True, exist_ok=True)  # the trusted root: the admin's or ours
    with _access(switch=as_owner) as identity:
        root = Dir(os.open(loc.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), Location(loc.root), identity)
        try:
            target = root.walk(loc.parts, create=create, mode=mode)
        finally:
            root.close()
        try:
            yield target
        finally:
            target.close()


def _temp_name(name: str) -> str:
    return f".{name[:64]}.{secrets.token_hex(4)}.tmp"


# --------------------------------------------------------------------------- one-shot helpers

_MISSING = (FileNotFoundError, NotADirectoryError)


def read_bytes(loc: Location, limit: int = STATE_BYTES) -> bytes | None:
    """At most ``limit`` bytes of a regular file (None when it or a dir on its way does not exist)."""
    try:
        with open_dir(loc.parent) as directory:
            return directory.read(loc.name, limit)
    except _MISSING:
        return None


def read_tail(loc: Location, limit: int) -> bytes | None:
    """The last ``limit`` bytes of a regular file (None when it or a dir on its way does not exist)."""
    try:
        with open_dir(loc.parent) as directory:
            return directory.read_tail(loc.name, limit)
    except _MISSING:
        return None


def lstat(loc: Location) -> os.stat_result | None:
    """``loc`` itself (a symlink is not followed); None when it or a dir on its way is missing or refused."""
    try:
        with open_dir(loc.parent) as directory:
            return directory.lstat(loc.name)
    except (*_MISSING, Refused):
        return None


def kind(loc: Location) -> str | None:
    """What ``loc`` is, without following it ("a regular file", "a symlink", ...); None when missing."""
    info = lstat(loc)
    return None if info is None else kind_of(info.st_mode)


def is_file(loc: Location) -> bool:
    info = lstat(loc)
    return info is not None and stat.S_ISREG(info.st_mode)


def open_file(loc: Location) -> FileIO | None:
    """A regular file opened for reading (None when missing; Refused when not a regular file)."""
    try:
        with open_dir(loc.parent) as directory:
            return directory.open(loc.name)
    except _MISSING:
        return None


def names(loc: Location) -> list[str]:
    """The entries of a directory (empty when missing or refused)."""
    try:
        with open_dir(loc) as directory:
            return directory.names()
    except (*_MISSING, Refused):
        return []


def write_bytes(loc: Location, data: bytes, mode: int = 0o600) -> None:
    """Replace ``loc`` atomically (its missing parent dirs made 0700), never through a symlink."""
    with open_dir(loc.parent, create=True) as directory:
        directory.write(loc.name, data, mode)


def append_bytes(loc: Location, data: bytes, mode: int = 0o600) -> None:
    with open_dir(loc.parent, create=True) as directory:
        directory.append(loc.name, data, mode)


def make_dirs(loc: Location, mode: int = 0o700) -> None:
    """``mkdir -p`` below the root, refusing any symlink on the way."""
    with open_dir(loc, create=True, mode=mode):
        pass


def symlink(loc: Location, target: str) -> None:
    """Make the symlink ``loc`` -> ``target`` (a text the plugin chose) in a directory walked safely."""
    with open_dir(loc.parent, create=True) as directory:
        os.symlink(target, loc.name, dir_fd=directory.fd)


def remove_file(loc: Location) -> None:
    """Unlink ``loc`` (a symlink is removed, not followed); missing is fine."""
    with contextlib.suppress(*_MISSING, Refused), open_dir(loc.parent) as directory:
        directory.unlink(loc.name)


# --------------------------------------------------------------------------- trees


def _subdir(parent: Dir, name: str) -> Dir | None:
    """A real subdirectory, made writable for its owner (None when ``name`` is not a directory)."""
    try:
        sub = parent.child(name)
    except (*_MISSING, Refused):
        return None
    with contextlib.suppress(OSError):
        sub.chmod(0o700)  # a mode the job may have taken away
    return sub


def _clear(directory: Dir, top: Dir, depth: int, left: list[str]) -> None:
    """Remove what ``directory`` holds; subtrees deeper than MAX_DEPTH are moved under ``top`` for later."""
    for name in directory.names():
        try:
            os.unlink(name, dir_fd=directory.fd)
            continue
        except FileNotFoundError:
            continue
        except (IsADirectoryError, PermissionError):
            pass  # a directory (unlinkat answers EISDIR, or EPERM on some file systems)
        except OSError as exc:
            left.append(f"{directory.loc / name}: {exc.strerror}")
            continue
        if depth >= MAX_DEPTH:
            os.rename(name, _temp_name("deep"), src_dir_fd=directory.fd, dst_dir_fd=top.fd)
            continue
        sub = _subdir(directory, name)
        if sub is None:
            left.append(f"{directory.loc / name}: cannot be removed")
            continue
        with sub:
            _clear(sub, top, depth + 1, left)
        try:
            os.rmdir(name, dir_fd=directory.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"{directory.loc / name}: {exc.strerror}")


def remove_tree(loc: Location) -> list[str]:
    """``rm -rf loc`` without following any symlink, as the owner of ``loc``; returns what is left
    (empty: all gone). A symlink or file where the directory was is removed itself."""
    left: list[str] = []
    try:
        with open_dir(loc.parent) as parent:
            top = _subdir(parent, loc.name)
            if top is None:
                parent.unlink(loc.name)
                return left
            with top:
                for _round in range(1000):  # each round takes the subtrees moved up by the one before
                    seen = len(left)
                    _clear(top, top, 0, left)
                    if len(left) > seen or not top.names():
                        break
            parent.as_plugin()  # the now empty dir is an entry of the parent: the parent's owner removes it
            try:
                os.rmdir(loc.name, dir_fd=parent.fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append(f"{loc}: {exc.strerror}")
    except _MISSING:
        pass
    except Refused as exc:
        left.append(str(exc))
    return left


def chown_tree(loc: Location, uid: int, gid: int) -> None:
    """Give a tree the plugin just wrote to ``uid:gid`` (symlinks themselves, never their targets)."""
    with open_dir(loc) as top:
        _chown_below(top, uid, gid, 0)
        os.chown(f"/proc/self/fd/{top.fd}", uid, gid)


def _chown_below(directory: Dir, uid: int, gid: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise OSError(errno.ELOOP, f"{directory.loc}: too deep to hand over")
    for name in directory.names():
        if stat.S_ISDIR(directory.lstat(name).st_mode):
            with directory.child(name) as sub:
                _chown_below(sub, uid, gid, depth + 1)
        os.chown(name, uid, gid, dir_fd=directory.fd, follow_symlinks=False)


def chmod(loc: Location, mode: int) -> None:
    """chmod a directory walked safely (its inode, never a symlink's target)."""
    with open_dir(loc) as directory:
        directory.chmod(mode)


# --------------------------------------------------------------------------- the job-dir worker pool

_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """Worker threads for job-dir access (a stuck read holds one of them, never the event loop)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="jobdir")
        return _POOL


async def run(work: Callable[..., T], *args: object) -> T:
    """``work(*args)`` on a job-dir worker thread."""
    return await asyncio.get_running_loop().run_in_executor(pool(), functools.partial(work, *args))
