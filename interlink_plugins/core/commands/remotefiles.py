"""Job directories that live only on the cluster (DataTransfer: sftp): written, read and followed over SSH.

* Writing: the job dir is first built in a local stage (the same code as a local job dir:
  volumes, pod runner, helpers, env files), its scripts naming the cluster path; ``upload``
  then copies the stage over SFTP: the job dir is created 0700 before anything goes in, every
  file is written with the mode it has in the stage (secrets keep item.mode / defaultMode, in a
  private dir), symlinks stay symlinks. Nothing is written on the cluster at /create: the upload
  is part of the submission, so an unreachable login node defers the pod like any outage.
* Reading the runner's state: ONE remote command per poll (``find -P`` piped into ``tar``) archives
  every runner state file of every tracked pod (``c/<container>/<state file>`` and ``pod.exit``):
  no symlink followed (find -P, tar opens O_NOFOLLOW|O_NONBLOCK), regular files of at most
  ``DUMP_FILE_BYTES`` only, each framed by its tar header (a newline or NUL in a name the job chose
  cannot forge another file), the whole output capped at ``DUMP_BYTES``. Only the exact layout of
  each pod's own job dir is taken, and mirrored (through core/safefs) into a private local dir that
  the usual readers use unchanged; a job dir whose path holds a control character is never asked for.
* Logs: a read downloads the log into a local copy (only the part it does not have yet, when the
  copy is a prefix of the remote file); a follow streams ``tail -F`` over one channel into a
  private local file that the usual follower reads; a lost connection is resumed at the offset.
  That copy lags the remote log (tail polls a file on a network filesystem once a second, a lost
  connection takes a while to reopen): once the container ended, the follow waits until the copy
  holds the remote log's last byte (``LogFeed.caught_up``), so that it ends with the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from io import FileIO
from pathlib import Path

import paramiko

from interlink_plugins.core import safefs
from interlink_plugins.core.commands.local import CommandFailed
from interlink_plugins.core.commands.ssh import SshRunner
from interlink_plugins.core.podrunner.helpers import DIR_MODE, FILE_MODE, HELPERS_DIR, HelperSet
from interlink_plugins.core.records.status import STATE_FILES

log = logging.getLogger(__name__)

DUMP_FILE_BYTES = 8192  # a state file bigger than this is left out of the dump
DUMP_BYTES = 16 << 20  # the dump's output is cut here (a job that swaps a file for a huge one mid-dump)
DUMP_BATCH = 200  # pods per dump command (keeps the command line small)
HEAD_BYTES = 4096  # compared to decide that a local log copy is a prefix of the remote log
FOLLOW_RETRY_SECONDS = 1.0
FOLLOW_CATCH_UP_SECONDS = 30.0  # how long a follow waits for its copy to catch up once the container ended
_DUMPED = (*STATE_FILES, "pod.exit")
# find prints the regular state files of each job dir (NUL-separated), tar archives them without following
# symlinks (it opens O_NOFOLLOW|O_NONBLOCK and reads the size it stat'ed), head caps the whole
_DUMP_SCRIPT = (
    'find -P "$@" -maxdepth 2 -type f -size -{size}c \\( {names} \\) -print0 2>/dev/null'
    " | tar --null --no-recursion --ignore-failed-read -P -cf - -T - 2>/dev/null | head -c {cap}"
)


def _control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _safe_name(job_dir: str) -> str:
    name = posixpath.basename(job_dir.rstrip("/"))
    if not name or name in (".", "..") or "/" in name:
        raise ValueError(f"not a job dir: {job_dir!r}")
    return name


# --------------------------------------------------------------------------- upload (blocking)


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """mkdir -p over SFTP (modes of existing parents untouched)."""
    missing: list[str] = []
    current = path
    while current not in ("", "/"):
        try:
            sftp.stat(current)
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, None):
                raise
            missing.append(current)
            current = posixpath.dirname(current)
    for directory in reversed(missing):
        with contextlib.suppress(OSError):
            sftp.mkdir(directory)
        sftp.stat(directory)


def _sftp_remove_file(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError):
        sftp.remove(path)


def _remote_helpers_ok(sftp: paramiko.SFTPClient, target: str, helpers: HelperSet, uid: int) -> bool:
    """The copy at ``target`` is exactly the plugin's: real dir and regular files owned by ``uid``, mode
    0555, the expected names and bytes (lstat: a symlink is never followed)."""
    try:
        info = sftp.lstat(target)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode or 0) or info.st_uid != uid or stat.S_IMODE(info.st_mode or 0) != DIR_MODE:
        return False
    expected = dict(helpers.files)
    if sorted(sftp.listdir(target)) != sorted(expected):
        return False
    for name, data in expected.items():
        path = posixpath.join(target, name)
        found = sftp.lstat(path)
        mode = found.st_mode or 0
        if not stat.S_ISREG(mode) or found.st_uid != uid or stat.S_IMODE(mode) != FILE_MODE:
            return False
        if found.st_size != len(data):
            return False
        with sftp.open(path, "rb") as handle:
            if handle.read(len(data) + 1) != data:
                return False
    return True


def _sftp_remove_tree_flat(sftp: paramiko.SFTPClient, path: str) -> None:
    """Remove a helpers copy (files only below it; a symlink is removed as itself)."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(sftp.lstat(path).st_mode or 0):
            sftp.remove(path)
            return
        sftp.chmod(path, 0o700)
        for name in sftp.listdir(path):
            _sftp_remove_file(sftp, posixpath.join(path, name))
        sftp.rmdir(path)


def stage_helpers(sftp: paramiko.SFTPClient, data_root: str, helpers: HelperSet) -> bool:
    """``<data_root>/helpers/<digest>`` on the SSH host, checked, and written (a temp dir renamed into
    place) when missing or not as the plugin writes it. Returns whether it was written."""
    parent = posixpath.join(data_root, HELPERS_DIR)
    target = posixpath.join(parent, helpers.digest)
    _sftp_makedirs(sftp, data_root)  # as upload_tree does for a job dir
    with contextlib.suppress(OSError):
        sftp.mkdir(parent, 0o711)
    tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}")
    sftp.mkdir(tmp, 0o700)
    try:
        uid = sftp.lstat(tmp).st_uid  # the SSH user, as the remote sees it
        parent_info = sftp.lstat(parent)
        parent_mode = parent_info.st_mode or 0
        if not stat.S_ISDIR(parent_mode) or parent_info.st_uid != uid or parent_mode & 0o022:
            raise safefs.Refused(parent, f"owned by uid {parent_info.st_uid} with mode {stat.S_IMODE(parent_mode):o} "
                                         "(must be the plugin's, writable by nobody else)")
        if uid is not None and _remote_helpers_ok(sftp, target, helpers, uid):
            return False
        for name, data in helpers.files:
            with sftp.open(posixpath.join(tmp, name), "wb") as handle:
                handle.write(data)
            sftp.chmod(posixpath.join(tmp, name), FILE_MODE)
        sftp.chmod(tmp, DIR_MODE)
        with contextlib.suppress(OSError):
            sftp.lstat(target)
            aside = posixpath.join(parent, f".bad-{uuid.uuid4().hex}")
            sftp.rename(target, aside)
            _sftp_remove_tree_flat(sftp, aside)
        sftp.rename(tmp, target)
        if uid is None or not _remote_helpers_ok(sftp, target, helpers, uid):
            raise safefs.Refused(target, "not the plugin's helpers after writing them")
        return True
    finally:
        _sftp_remove_tree_flat(sftp, tmp)


def upload_tree(sftp: paramiko.SFTPClient, stage: Path, remote: str) -> int:
    """Copy the stage into ``remote`` (created 0700 first); returns the number of files written."""
    _sftp_makedirs(sftp, posixpath.dirname(remote))
    with contextlib.suppress(OSError):
        sftp.mkdir(remote, 0o700)
    sftp.chmod(remote, 0o700)  # private before anything goes in (umask-proof)
    count = 0
    dir_modes: list[tuple[str, int]] = []
    for root, dirs, files in os.walk(stage):
        rel = os.path.relpath(root, stage)
        target_root = remote if rel == "." else posixpath.join(remote, *Path(rel).parts)
        for name in sorted(dirs):
            local = os.path.join(root, name)
            target = posixpath.join(target_root, name)
            info = os.lstat(local)
            if stat.S_ISLNK(info.st_mode):
                _sftp_remove_file(sftp, target)
                sftp.symlink(os.readlink(local), target)
                continue
            with contextlib.suppress(OSError):
                sftp.mkdir(target, 0o700)
            dir_modes.append((target, stat.S_IMODE(info.st_mode)))
        for name in sorted(files):
            local = os.path.join(root, name)
            target = posixpath.join(target_root, name)
            info = os.lstat(local)
            _sftp_remove_file(sftp, target)  # a re-upload may meet a 0400 file
            if stat.S_ISLNK(info.st_mode):
                sftp.symlink(os.readlink(local), target)
                continue
            with open(local, "rb") as source, sftp.open(target, "wb") as handle:
                handle.set_pipelined(True)
                handle.chmod(0o600)
                shutil.copyfileobj(source, handle, 1 << 16)
                handle.chmod(stat.S_IMODE(info.st_mode))
            count += 1
    for target, mode in reversed(dir_modes):  # children first: a 0500 dir is closed last
        sftp.chmod(target, mode)
    return count


# --------------------------------------------------------------------------- state dump


def dump_argv(job_dirs: Iterable[str]) -> list[str]:
    """One command archiving every runner state file of these job dirs (GNU find and tar, sh, head)."""
    names = " -o ".join(f"-name {name}" for name in _DUMPED)
    script = _DUMP_SCRIPT.format(size=DUMP_FILE_BYTES + 1, names=names, cap=DUMP_BYTES)
    roots: list[str] = []
    for job_dir in job_dirs:
        if _control(job_dir) or not job_dir.startswith("/"):
            raise ValueError(f"job dir {job_dir!r}: not an absolute path without control characters")
        roots += [posixpath.join(job_dir, "c"), posixpath.join(job_dir, "pod.exit")]
    return ["sh", "-c", script, "il-dump", *roots]


@dataclass
class Dump:
    """The state files a dump brought (path -> content) and whether it came whole; a cut one names the
    file it was cut in, when it got that far."""

    files: dict[str, bytes]
    complete: bool
    cut_in: str = ""


def parse_dump(output: bytes) -> Dump:
    """The dump's tar stream: regular members of at most DUMP_FILE_BYTES, up to where it was cut."""
    files: dict[str, bytes] = {}
    current = ""
    try:
        with tarfile.open(fileobj=io.BytesIO(output), mode="r|") as archive:
            for member in archive:
                current = member.name
                if not member.isreg() or member.size > DUMP_FILE_BYTES:
                    continue
                handle = archive.extractfile(member)
                if handle is not None:
                    data = handle.read(DUMP_FILE_BYTES)
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    files[member.name] = data
                current = ""
    except (tarfile.TarError, EOFError, OSError):
        return Dump(files, complete=False, cut_in=current)
    return Dump(files, complete=True)


def state_path(job_dir: str, path: str) -> str | None:
    """``path`` relative to ``job_dir`` when it is one of that job dir's runner state files exactly
    (``pod.exit``, ``c/<container>/<state file>``), else None."""
    prefix = job_dir.rstrip("/") + "/"
    if not path.startswith(prefix) or _control(path):
        return None
    rel = path[len(prefix) :]
    parts = rel.split("/")
    if parts == ["pod.exit"]:
        return rel
    if len(parts) == 3 and parts[0] == "c" and parts[2] in STATE_FILES and parts[1] not in ("", ".", ".."):
        return rel
    return None


@dataclass
class _Mirror:
    """What the local mirror of one job dir holds (relative path -> content)."""

    files: dict[str, bytes] = field(default_factory=dict)


def sync_mirror(local: safefs.Location, current: dict[str, bytes], wanted: dict[str, bytes]) -> None:
    """Make the local mirror hold exactly ``wanted`` (only changed files are written, through safefs)."""
    for rel in set(current) - set(wanted):
        safefs.remove_file(local / rel)
    for rel, content in wanted.items():
        if current.get(rel) != content:
            safefs.write_bytes(local / rel, content)


# --------------------------------------------------------------------------- logs (blocking)


def _regular_or_missing(sftp: paramiko.SFTPClient, remote: str) -> None:
    """safefs.Refused unless ``remote`` is a regular file or does not exist (yet)."""
    try:
        mode = sftp.lstat(remote).st_mode or 0
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    if not stat.S_ISREG(mode):
        raise safefs.Refused(remote, safefs.kind_of(mode))


def _copy(handle: paramiko.SFTPFile, out: FileIO) -> None:
    while block := handle.read(1 << 16):
        out.write(block)


def fetch_into(sftp: paramiko.SFTPClient, remote: str, local: safefs.Location) -> bool:
    """Bring the local copy up to date with the remote file; False (copy removed) when it does not exist.

    SFTP cannot open without following a symlink: the remote path must be a regular file by lstat, and the
    file opened must have the same type, owner and mode (else it was swapped: refused, safefs.Refused).
    """
    try:
        info = sftp.lstat(remote)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            safefs.remove_file(local)
            return False
        raise
    if not stat.S_ISREG(info.st_mode or 0):
        raise safefs.Refused(remote, safefs.kind_of(info.st_mode or 0))
    with safefs.open_dir(local.parent, create=True) as directory, sftp.open(remote, "rb") as handle:
        opened = handle.stat()
        if (opened.st_mode, opened.st_uid) != (info.st_mode, info.st_uid):
            raise safefs.Refused(remote, "not the regular file it was a moment before (swapped)")
        size = opened.st_size or 0
        try:
            have = directory.lstat(local.name).st_size
        except FileNotFoundError:
            have = 0
        if 0 < have <= size:
            head = min(have, HEAD_BYTES)
            with directory.open(local.name) as mine:
                same = mine.read(head) == handle.read(head)
            if same:
                if have == size:
                    return True
                handle.seek(have)
                handle.prefetch(size - have)
                with directory.open_append(local.name) as out:
                    _copy(handle, out)
                return True
            handle.seek(0)
        # a new file (restart) or a first fetch: replace the copy atomically (readers keep the old one)
        handle.prefetch(size)
        directory.replace_from(local.name, lambda out: _copy(handle, out))
    return True


def _size_or_zero(sftp: paramiko.SFTPClient, remote: str) -> int:
    """The size of ``remote`` (0 when it does not exist)."""
    try:
        return sftp.lstat(remote).st_size or 0
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return 0
        raise


@dataclass
class LogFeed:
    """A private local file a remote ``tail -F`` of ``remote`` keeps appending to (``copied`` bytes so far);
    ``close`` stops it. ``remote_size`` reads the remote log's size (CommandFailed: the host is unreachable)."""

    path: Path
    remote: str
    remote_size: Callable[[], Awaitable[int]]
    copied: int = 0
    task: asyncio.Task[None] = field(init=False)
    _end: int | None = field(default=None, init=False)
    _give_up_at: float | None = field(default=None, init=False)

    async def caught_up(self) -> bool:
        """Asked once the remote log is final (its container ended): True once ``path`` holds all of it.

        The remote size is read once (asked again at the next call while the host cannot be reached);
        after FOLLOW_CATCH_UP_SECONDS the answer is True anyway (logged): a copy that cannot catch up
        does not hold the follow open for ever.
        """
        now = asyncio.get_running_loop().time()
        if self._give_up_at is None:
            self._give_up_at = now + FOLLOW_CATCH_UP_SECONDS
        if self._end is None:
            try:
                self._end = await self.remote_size()
            except CommandFailed as exc:
                log.info("follow of %s: its size: %s", self.remote, exc.detail)
            except OSError as exc:
                log.info("follow of %s: its size: %s", self.remote, exc)
        if self._end is not None and self.copied >= self._end:
            return True
        if now >= self._give_up_at:
            log.warning("follow of %s: %d of its %s bytes copied %gs after its container ended: the follow ends",
                        self.remote, self.copied, "?" if self._end is None else self._end, FOLLOW_CATCH_UP_SECONDS)
            return True
        return False

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# --------------------------------------------------------------------------- the facade


class RemoteJobFiles:
    """Job dirs under ``data_root`` on the SSH host; mirrors and stages under ``local_root`` (private)."""

    def __init__(self, ssh: SshRunner, data_root: str, local_root: Path, *, timeout: float) -> None:
        self.ssh = ssh
        self.data_root = data_root.rstrip("/") or "/"
        self.local_root = local_root
        self.timeout = timeout
        self._mirrors: dict[str, _Mirror] = {}
        self.dumps = 0  # remote state commands run (tests count them)
        self._helpers: set[str] = set()  # helper digests checked on the SSH host by this process
        self._helpers_lock = asyncio.Lock()
        for sub in ("stage", "mirror", "feeds"):
            (local_root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(local_root, 0o700)

    # --- paths -------------------------------------------------------------------------

    def _check(self, job_dir: str) -> str:
        if posixpath.dirname(job_dir.rstrip("/")) != self.data_root:
            raise ValueError(f"{job_dir!r} is not directly under the data root {self.data_root!r}")
        return _safe_name(job_dir)

    def stage_dir(self, job_dir: str) -> Path:
        return self.local_root / "stage" / self._check(job_dir)

    def mirror_dir(self, job_dir: str) -> safefs.Location:
        return safefs.Location(self.local_root / "mirror", (self._check(job_dir),))

    def log_copy(self, job_dir: str, container: str, *, previous: bool) -> safefs.Location:
        return self.mirror_dir(job_dir) / "logs" / container / ("log.prev" if previous else "log")

    # --- writing -----------------------------------------------------------------------

    def new_stage(self, job_dir: str) -> Path:
        """An empty private local dir to build the job dir in (blocking)."""
        stage = self.stage_dir(job_dir)
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(mode=0o700)
        return stage

    async def upload(self, stage: Path, job_dir: str) -> None:
        self._check(job_dir)
        count = await self.ssh.sftp(lambda sftp: upload_tree(sftp, stage, job_dir), timeout=self.timeout,
                                    what=f"upload {job_dir}")
        log.debug("uploaded %d files to %s", count, job_dir)

    async def ensure_helpers(self, helpers: HelperSet) -> None:
        """The static helpers on the SSH host, once per content hash: checked and (re)written on the
        first submit of this process, then trusted for it."""
        async with self._helpers_lock:
            if helpers.digest in self._helpers:
                return
            wrote = await self.ssh.sftp(lambda sftp: stage_helpers(sftp, self.data_root, helpers),
                                        timeout=self.timeout, what=f"helpers {helpers.digest[:12]}")
            if wrote:
                log.info("staged the runtime helpers %s on %s", helpers.digest[:12], self.ssh.label)
            self._helpers.add(helpers.digest)

    def discard_stage(self, stage: Path) -> None:
        if stage.parent == self.local_root / "stage":
            shutil.rmtree(stage, ignore_errors=True)

    async def remove(self, job_dir: str) -> None:
        """rm -rf the remote job dir (only a direct child of the data root), the mirror and the stage."""
        name = self._check(job_dir)
        result = await self.ssh.run(["rm", "-rf", "--", posixpath.join(self.data_root, name)], timeout=self.timeout)
        if not result.ok:
            log.warning("removing %s on %s: %s", job_dir, self.ssh.label, result.error_text)
        self._mirrors.pop(job_dir, None)
        await asyncio.to_thread(safefs.remove_tree, self.mirror_dir(job_dir))
        shutil.rmtree(self.stage_dir(job_dir), ignore_errors=True)

    # --- runner state ------------------------------------------------------------------

    async def refresh(self, job_dirs: list[str]) -> None:
        """Mirror the state files of these job dirs: one remote command per DUMP_BATCH pods. A job dir
        whose path has a control character is never dumped (its mirror stays as it is)."""
        wanted = []
        for job_dir in job_dirs:
            if _control(job_dir):
                log.error("job dir %r has a control character in its path: its runner state is not read", job_dir)
            else:
                wanted.append(job_dir)
        for start in range(0, len(wanted), DUMP_BATCH):
            batch = wanted[start : start + DUMP_BATCH]
            result = await self.ssh.run(dump_argv(batch), timeout=self.timeout)
            self.dumps += 1
            if result.returncode != 0:
                raise CommandFailed(["find"], f"ssh {self.ssh.label}: the state dump exited {result.returncode}: "
                                    f"{result.error_text}")
            dump = parse_dump(result.stdout)
            if not dump.complete:
                log.warning("the runner state dump of %d pods was cut at %d bytes (a state file swapped for a big "
                            "one?): the pods it did not reach keep their last state", len(batch), DUMP_BYTES)
            await asyncio.to_thread(self._apply, batch, dump)

    def _apply(self, batch: list[str], dump: Dump) -> None:
        per_dir: dict[str, dict[str, bytes]] = {job_dir: {} for job_dir in batch}
        last = -1  # the last job dir the dump reached (find goes through them in order)
        for path in [*dump.files, dump.cut_in]:
            for index, job_dir in enumerate(batch):
                if path.startswith(job_dir.rstrip("/") + "/"):
                    last = max(last, index)
                    rel = state_path(job_dir, path)
                    if rel is not None and path in dump.files:
                        per_dir[job_dir][rel] = dump.files[path]
                    break
        for index, (job_dir, wanted) in enumerate(per_dir.items()):
            if not dump.complete and index >= last:
                continue  # a cut dump says nothing about the job dir it was cut in and the ones after
            mirror = self._mirrors.setdefault(job_dir, _Mirror())
            sync_mirror(self.mirror_dir(job_dir), mirror.files, wanted)
            mirror.files = wanted

    # --- logs --------------------------------------------------------------------------

    async def fetch_log(self, job_dir: str, container: str, *, previous: bool) -> bool:
        remote = posixpath.join(job_dir, "c", container, "log.prev" if previous else "log")
        local = self.log_copy(job_dir, container, previous=previous)
        return await self.ssh.sftp(lambda sftp: fetch_into(sftp, remote, local), timeout=self.timeout,
                                   what=f"get {remote}")

    async def open_feed(self, job_dir: str, container: str) -> LogFeed:
        """Start streaming the remote log into a private local file (CommandFailed if unreachable)."""
        remote = posixpath.join(job_dir, "c", container, "log")
        await self.ssh.sftp(lambda sftp: _regular_or_missing(sftp, remote), timeout=self.timeout,
                            what=f"lstat {remote}")
        local = self.local_root / "feeds" / f"{uuid.uuid4().hex}.log"
        local.touch(mode=0o600)
        first = await self.ssh.stream(_tail_argv(remote, 0), open_timeout=self.timeout, keep_stdin=True)

        async def remote_size() -> int:
            return await self.ssh.sftp(lambda sftp: _size_or_zero(sftp, remote), timeout=self.timeout,
                                       what=f"lstat {remote}")

        feed = LogFeed(local, remote, remote_size)
        feed.task = asyncio.create_task(self._pump(first, remote, feed), name=f"follow {remote}")
        return feed

    async def _pump(self, chunks: AsyncIterator[bytes], remote: str, feed: LogFeed) -> None:
        while True:
            try:
                with feed.path.open("ab") as out:
                    async for chunk in chunks:
                        out.write(chunk)
                        out.flush()
                        feed.copied += len(chunk)
            except CommandFailed as exc:
                log.info("follow of %s interrupted: %s", remote, exc.detail)
            finally:
                with contextlib.suppress(Exception):
                    await chunks.aclose()  # type: ignore[attr-defined]
            # the channel ended (connection lost): resume after what we have
            while True:
                await asyncio.sleep(FOLLOW_RETRY_SECONDS)
                try:
                    chunks = await self.ssh.stream(_tail_argv(remote, feed.copied), open_timeout=self.timeout,
                                                   keep_stdin=True)
                    break
                except CommandFailed as exc:
                    log.info("follow of %s: reconnect failed: %s", remote, exc.detail)


# `tail -F` never ends by itself and sshd does not signal a session's process when the channel
# closes: the shell keeps stdin open and kills tail once stdin ends (channel or connection gone).
_TAIL_SCRIPT = 'tail -c "+$1" -F -- "$2" 2>/dev/null & t=$!; cat >/dev/null; kill "$t" 2>/dev/null'


def _tail_argv(remote: str, offset: int) -> list[str]:
    return ["sh", "-c", _TAIL_SCRIPT, "il-follow", str(offset + 1), remote]
