"""Job directories written by the Go SLURM plugin, adopted at start-up.

The Go plugin's layout (``<DataRootFolder><namespace>-<uid>/``): ``JobID.jid``, ``PodUID.uid``,
``PodNamespace.ns``, ``StartedAt.time`` / ``FinishedAt.time`` (Go ``time.Time.String()``),
``job.sh`` (``runInitCtn NAME ...`` / ``runCtn NAME ...`` lines), per container ``init-NAME.out`` /
``run-NAME.out`` (stdout and stderr merged, plain text) and ``init-NAME.status`` /
``run-NAME.status`` (the exit code, written when the container ended).

Only the start-up scan of dirs this plugin did not create finds this layout, and the record keeps it
(``PodRecord.layout = "go"``): a dir is never re-classified from its files, which its job controls.
Adoption writes nothing into the Go dir: the service tracks the pod like its own, status from the
``.status`` files and the scheduler, logs from the ``.out`` files converted to CRI lines in a private
copy under ``StateDir/go-logs/`` (at each poll: the write time of a line is known to within a poll
interval, the lines already there get the file's mtime), and delete through scancel. Every read of
the Go dir goes through core/safefs (no symlink followed, regular files only, bounded).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from interlink_plugins.core import safefs
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.core.records.status import ContainerFiles

MARKERS = ("JobID.jid", "PodUID.uid", "PodNamespace.ns")
LOG_DIR = "go-logs"  # under StateDir
JOB_SCRIPT_BYTES = 1 << 20  # job.sh is read up to this much (container names and the pod's name)
SYNC_BYTES = 4 << 20  # .out bytes converted per poll and container (the rest at the next polls)
_RUN_LINE = re.compile(r"^(runInitCtn|runCtn) ([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\s|$)", re.MULTILINE)
_POD_LINE = re.compile(r"This pod ([^/\s\"']+)/([A-Za-z0-9._-]+) has been submitted")
_FILE = re.compile(r"^(init|run)-([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(out|status)$")
_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})")
# what makes a dir not a Go dir we can adopt: gone, not a real dir, or unreadable (e.g. the 0700 job dir of a
# job run as another user, seen by a plugin that is not root)
_MISSING = (FileNotFoundError, NotADirectoryError, PermissionError, safefs.Refused)


@dataclass(frozen=True)
class GoJobDir:
    path: Path
    uid: str
    namespace: str
    job_id: str
    name: str
    init_names: tuple[str, ...]
    main_names: tuple[str, ...]


def _read(directory: safefs.Dir, name: str, limit: int = safefs.STATE_BYTES) -> str:
    try:
        return directory.read(name, limit).decode(errors="replace").strip()
    except (OSError, safefs.Refused):
        return ""


def _is_file(directory: safefs.Dir, name: str) -> bool:
    try:
        return stat.S_ISREG(directory.lstat(name).st_mode)
    except OSError:
        return False


def _is_go(directory: safefs.Dir) -> bool:
    """The Go layout (and not one of ours: ours has pod-runner.sh and the runner's c/)."""
    names = set(directory.names())
    if "pod-runner.sh" in names or "c" in names:
        return False
    return all(_is_file(directory, marker) for marker in MARKERS)


def is_go_job_dir(job_dir: safefs.Location) -> bool:
    try:
        with safefs.open_dir(job_dir) as directory:
            return _is_go(directory)
    except _MISSING:
        return False


def go_time(text: str) -> str:
    """Go's `2006-01-02 15:04:05.999999999 -0700 MST` as RFC 3339 UTC ("" when it does not parse)."""
    match = _GO_TIME.match(text.strip())
    if not match:
        return ""
    date, clock, fraction, offset = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    try:
        local = datetime.strptime(f"{date} {clock}.{micros} {offset}", "%Y-%m-%d %H:%M:%S.%f %z")
    except ValueError:
        return ""
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_go_job_dir(job_dir: safefs.Location) -> GoJobDir | None:
    try:
        with safefs.open_dir(job_dir) as directory:
            if not _is_go(directory):
                return None
            job_id = _read(directory, "JobID.jid")
            uid = _read(directory, "PodUID.uid")
            namespace = _read(directory, "PodNamespace.ns")
            if not job_id.isdigit() or not uid or not namespace:
                return None
            script = _read(directory, "job.sh", JOB_SCRIPT_BYTES)
            entries = directory.names()
    except _MISSING:
        return None
    init: list[str] = []
    main: list[str] = []
    for kind, name, *_ in _RUN_LINE.findall(script):
        (init if kind == "runInitCtn" else main).append(name)
    pod = _POD_LINE.search(script)
    name = pod.group(1) if pod and pod.group(2) == uid else ""
    for entry in entries:
        found = _FILE.match(entry)
        if found:
            target = init if found.group(1) == "init" else main
            if found.group(2) not in target:
                target.append(found.group(2))
    return GoJobDir(job_dir.path, uid, namespace, job_id, name, tuple(init), tuple(main))


def scan(data_root: Path) -> list[GoJobDir]:
    """Every Go-layout job dir directly under the data root (start-up only)."""
    found = []
    for name in safefs.names(safefs.Location(data_root)):
        job = read_go_job_dir(safefs.Location(data_root, (name,)))
        if job is not None:
            found.append(job)
    return found


def summary(job: GoJobDir) -> dict[str, object]:
    """What the state record of an adopted Go dir starts from (pod.json of our own dirs)."""
    return {
        "uid": job.uid,
        "namespace": job.namespace,
        "name": job.name,
        "init_names": list(job.init_names),
        "main_names": list(job.main_names),
        "images": {},
        "sidecars": [],
        "grace_seconds": 30,
    }


def _prefix(directory: safefs.Dir, container: str, init_names: list[str]) -> str:
    """init- or run-: where the Go plugin put this container's files."""
    for prefix in ("run", "init"):
        if _is_file(directory, f"{prefix}-{container}.out") or _is_file(directory, f"{prefix}-{container}.status"):
            return prefix
    return "init" if container in init_names else "run"


def _container_files(directory: safefs.Dir, container: str, init_names: list[str]) -> ContainerFiles:
    prefix = _prefix(directory, container, init_names)
    out, status = f"{prefix}-{container}.out", f"{prefix}-{container}.status"
    exit_text = _read(directory, status)
    exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else None
    out_info = _regular(directory, out)
    if out_info is None and exit_code is None:
        return ContainerFiles()
    status_info = _regular(directory, status)
    started = go_time(_read(directory, "StartedAt.time"))
    if not started and out_info is not None:
        # the ctime moves with each write: take the earlier of ctime and mtime
        first = min(out_info.st_ctime, out_info.st_mtime) if out_info.st_size else out_info.st_ctime
        started = _stamp(first)
    if not started and status_info is not None:
        started = _stamp(status_info.st_mtime)
    finished = ""
    if exit_code is not None:
        finished = _stamp(status_info.st_mtime) if status_info else go_time(_read(directory, "FinishedAt.time"))
    return ContainerFiles(started=started, finished=finished, exit_code=exit_code)


def _regular(directory: safefs.Dir, name: str) -> os.stat_result | None:
    try:
        info = directory.lstat(name)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def container_files(job_dir: safefs.Location, container: str, init_names: list[str]) -> ContainerFiles:
    """A container's state from the Go plugin's files."""
    try:
        with safefs.open_dir(job_dir) as directory:
            return _container_files(directory, container, init_names)
    except _MISSING:
        return ContainerFiles()


def sync_log(job_dir: safefs.Location, copy: safefs.Location, container: str, init_names: list[str]) -> None:
    """Append what the container wrote since the last call to its private CRI copy (``copy``.log, the
    offset in ``copy``.offset): at most SYNC_BYTES a call, read without following any symlink.

    The .out file has no times: the new lines get the file's mtime, the time of the last write,
    which is exact for the last line and at most one poll interval late for the others.
    """
    target, offset_file = copy.parent / f"{copy.name}.log", copy.parent / f"{copy.name}.offset"
    offset_text = (safefs.read_bytes(offset_file) or b"").decode(errors="replace").strip()
    offset = int(offset_text) if offset_text.isdigit() else 0
    try:
        with safefs.open_dir(job_dir) as directory:
            prefix = _prefix(directory, container, init_names)
            finished = _is_file(directory, f"{prefix}-{container}.status")
            with directory.open(f"{prefix}-{container}.out") as source:
                info = os.fstat(source.fileno())
                if info.st_size < offset:  # truncated: start over
                    offset = 0
                    safefs.remove_file(target)
                if info.st_size == offset:
                    return
                source.seek(offset)
                data = source.read(min(info.st_size - offset, SYNC_BYTES))
    except _MISSING:
        return
    cut = data.rfind(b"\n") + 1
    if finished or (cut == 0 and len(data) == SYNC_BYTES):
        cut = len(data)  # the end of a finished file, or a line longer than a whole read
    if cut == 0:
        return
    stamp = datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()
    lines = data[:cut].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    safefs.append_bytes(target, b"".join(stamp + b" stdout F " + line + b"\n" for line in lines))
    safefs.write_bytes(offset_file, str(offset + cut).encode())


def runner_finished(job_dir: safefs.Location, init_names: list[str], main_names: list[str]) -> bool:
    """The Go job.sh ran to its end: every main container has a .status, or an init one failed."""
    try:
        with safefs.open_dir(job_dir) as directory:
            for name in init_names:
                code = _read(directory, f"init-{name}.status")
                if code and code != "0":
                    return True
            return bool(main_names) and all(_is_file(directory, f"run-{name}.status") for name in main_names)
    except _MISSING:
        return False


class GoLayoutFiles:
    """The RunnerStateSource of a job dir adopted from the Go plugin (record.layout == "go")."""

    def __init__(self, state_dir: Path) -> None:
        self.logs = safefs.Location(state_dir, (LOG_DIR,))

    def copy(self, record: PodRecord, container: str) -> safefs.Location:
        """The private CRI copy of a container's .out (``<copy>.log``, ``<copy>.offset``)."""
        return self.logs / Path(record.job_dir).name / container

    def snapshot(self, record: PodRecord) -> dict[str, ContainerFiles]:
        job_dir = safefs.job_location(record.job_dir)
        snapshot = {}
        for name in record.init_names + record.main_names:
            snapshot[name] = container_files(job_dir, name, record.init_names)
            with contextlib.suppress(OSError):
                sync_log(job_dir, self.copy(record, name), name, record.init_names)
        return snapshot

    def version(self, record: PodRecord) -> tuple[int, ...] | None:
        return None  # the Go plugin's layout is not written by rename: always read it

    def log(self, record: PodRecord, container: str, *, previous: bool) -> safefs.Location:
        copy = self.copy(record, container)
        if previous:
            return copy.parent / f"{container}.previous"  # the Go layout keeps no previous run: never exists
        with contextlib.suppress(OSError):
            sync_log(safefs.job_location(record.job_dir), copy, container, record.init_names)
        return copy.parent / f"{container}.log"

    def started(self, record: PodRecord, container: str) -> bool:
        return bool(container_files(safefs.job_location(record.job_dir), container, record.init_names).started)

    def finished(self, record: PodRecord) -> bool:
        return runner_finished(safefs.job_location(record.job_dir), record.init_names, record.main_names)

    def forget(self, record: PodRecord) -> None:
        safefs.remove_tree(self.logs / Path(record.job_dir).name)
