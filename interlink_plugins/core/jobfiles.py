"""Job directories that live only on the cluster (DataTransfer: sftp): written, read and followed over SSH.

* Writing: the job dir is first built in a local stage (the same code as a local job dir:
  volumes, pod runner, helpers, env files), its scripts naming the cluster path; ``upload``
  then copies the stage over SFTP: the job dir is created 0700 before anything goes in, every
  file is written with the mode it has in the stage (secrets keep item.mode / defaultMode, in a
  private dir), symlinks stay symlinks. Nothing is written on the cluster at /create: the upload
  is part of the submission, so an unreachable login node defers the pod like any outage.
* Reading the runner's state: ONE remote ``grep`` per poll prints every small state file of every
  tracked pod (``c/<container>/*`` and ``pod.exit``; logs, env files, FIFOs and temp files
  excluded), which is mirrored into a private local dir that the usual readers
  (``read_pod_files``) use unchanged.
* Logs: a read downloads the log into a local copy (only the part it does not have yet, when the
  copy is a prefix of the remote file); a follow streams ``tail -F`` over one channel into a
  private local file that the usual follower reads; a lost connection is resumed at the offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import posixpath
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from interlink_plugins.core.runner import CommandFailed
from interlink_plugins.core.ssh import SshRunner

log = logging.getLogger(__name__)

# state files never transferred: logs (read on demand), private files (env), pipes, temp files
DUMP_EXCLUDES = ("log", "log.prev", "*.nul", ".*", "*.tmp.*", "*.tmp")
DUMP_BATCH = 200  # pods per dump command (keeps the command line small)
HEAD_BYTES = 4096  # compared to decide that a local log copy is a prefix of the remote log
FOLLOW_RETRY_SECONDS = 1.0


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


def parse_dump(output: bytes) -> dict[str, bytes]:
    """``grep -H -Z -a '' FILES`` output -> path -> content (lines joined with newlines)."""
    files: dict[str, list[bytes]] = {}
    for line in output.split(b"\n"):
        path, sep, text = line.partition(b"\0")
        if not sep:
            continue
        files.setdefault(os.fsdecode(path), []).append(text)
    return {path: b"\n".join(lines) + b"\n" for path, lines in files.items()}


def dump_argv(job_dirs: Iterable[str]) -> list[str]:
    """One command printing every small state file of these job dirs (GNU grep)."""
    argv = ["grep", "-R", "-H", "-Z", "-a", "-s", "-D", "skip"]
    argv += [f"--exclude={pattern}" for pattern in DUMP_EXCLUDES]
    argv += ["-e", "", "--"]
    for job_dir in job_dirs:
        argv += [posixpath.join(job_dir, "c"), posixpath.join(job_dir, "pod.exit")]
    return argv


@dataclass
class _Mirror:
    """What the local mirror of one job dir holds (relative path -> content)."""

    files: dict[str, bytes] = field(default_factory=dict)


def sync_mirror(local: Path, current: dict[str, bytes], wanted: dict[str, bytes]) -> None:
    """Make the local mirror hold exactly ``wanted`` (only changed files are written)."""
    for rel in set(current) - set(wanted):
        with contextlib.suppress(FileNotFoundError):
            (local / rel).unlink()
    for rel, content in wanted.items():
        if current.get(rel) == content:
            continue
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, target)


# --------------------------------------------------------------------------- logs (blocking)


def fetch_into(sftp: paramiko.SFTPClient, remote: str, local: Path) -> bool:
    """Bring the local copy up to date with the remote file; False (copy removed) when it does not exist."""
    try:
        size = sftp.stat(remote).st_size or 0
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            with contextlib.suppress(FileNotFoundError):
                local.unlink()
            return False
        raise
    local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    have = local.stat().st_size if local.exists() else 0
    with sftp.open(remote, "rb") as handle:
        if 0 < have <= size:
            head = min(have, HEAD_BYTES)
            with local.open("rb") as mine:
                same = mine.read(head) == handle.read(head)
            if same:
                if have == size:
                    return True
                handle.seek(have)
                handle.prefetch(size - have)
                with local.open("ab") as out:
                    shutil.copyfileobj(handle, out, 1 << 16)
                return True
            handle.seek(0)
        # a new file (restart) or a first fetch: replace the copy atomically (readers keep the old one)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        handle.prefetch(size)
        with tmp.open("wb") as out:
            shutil.copyfileobj(handle, out, 1 << 16)
        os.replace(tmp, local)
    return True


@dataclass
class LogFeed:
    """A private local file a remote ``tail -F`` keeps appending to; ``close`` stops it."""

    path: Path
    task: asyncio.Task[None]

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

    def mirror_dir(self, job_dir: str) -> Path:
        return self.local_root / "mirror" / self._check(job_dir)

    def log_copy(self, job_dir: str, container: str, *, previous: bool) -> Path:
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
        shutil.rmtree(self.mirror_dir(job_dir), ignore_errors=True)
        shutil.rmtree(self.stage_dir(job_dir), ignore_errors=True)

    # --- runner state ------------------------------------------------------------------

    async def refresh(self, job_dirs: list[str]) -> None:
        """Mirror the state files of these job dirs: one remote command per DUMP_BATCH pods."""
        for start in range(0, len(job_dirs), DUMP_BATCH):
            batch = job_dirs[start : start + DUMP_BATCH]
            result = await self.ssh.run(dump_argv(batch), timeout=self.timeout)
            self.dumps += 1
            if result.returncode not in (0, 1, 2):  # 1: nothing matched, 2: some path missing (-s)
                raise CommandFailed(["grep"], f"ssh {self.ssh.label}: grep exited {result.returncode}: "
                                    f"{result.error_text}")
            found = parse_dump(result.stdout)
            await asyncio.to_thread(self._apply, batch, found)

    def _apply(self, batch: list[str], found: dict[str, bytes]) -> None:
        per_dir: dict[str, dict[str, bytes]] = {job_dir: {} for job_dir in batch}
        for path, content in found.items():
            for job_dir in batch:
                prefix = job_dir.rstrip("/") + "/"
                if path.startswith(prefix):
                    rel = path[len(prefix) :]
                    if ".." not in rel.split("/"):
                        per_dir[job_dir][rel] = content
                    break
        for job_dir, wanted in per_dir.items():
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
        local = self.local_root / "feeds" / f"{uuid.uuid4().hex}.log"
        local.touch(mode=0o600)
        first = await self.ssh.stream(_tail_argv(remote, 0), open_timeout=self.timeout, keep_stdin=True)
        task = asyncio.create_task(self._pump(first, remote, local), name=f"follow {remote}")
        return LogFeed(local, task)

    async def _pump(self, chunks: AsyncIterator[bytes], remote: str, local: Path) -> None:
        offset = 0
        while True:
            try:
                with local.open("ab") as out:
                    async for chunk in chunks:
                        out.write(chunk)
                        out.flush()
                        offset += len(chunk)
            except CommandFailed as exc:
                log.info("follow of %s interrupted: %s", remote, exc.detail)
            finally:
                with contextlib.suppress(Exception):
                    await chunks.aclose()  # type: ignore[attr-defined]
            # the channel ended (connection lost): resume after what we have
            while True:
                await asyncio.sleep(FOLLOW_RETRY_SECONDS)
                try:
                    chunks = await self.ssh.stream(_tail_argv(remote, offset), open_timeout=self.timeout,
                                                   keep_stdin=True)
                    break
                except CommandFailed as exc:
                    log.info("follow of %s: reconnect failed: %s", remote, exc.detail)


# `tail -F` never ends by itself and sshd does not signal a session's process when the channel
# closes: the shell keeps stdin open and kills tail once stdin ends (channel or connection gone).
_TAIL_SCRIPT = 'tail -c "+$1" -F -- "$2" 2>/dev/null & t=$!; cat >/dev/null; kill "$t" 2>/dev/null'


def _tail_argv(remote: str, offset: int) -> list[str]:
    return ["sh", "-c", _TAIL_SCRIPT, "il-follow", str(offset + 1), remote]
