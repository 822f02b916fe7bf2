"""Job directories written by the Go SLURM plugin, adopted at start-up.

The Go plugin's layout (``<DataRootFolder><namespace>-<uid>/``): ``JobID.jid``, ``PodUID.uid``,
``PodNamespace.ns``, ``StartedAt.time`` / ``FinishedAt.time`` (Go ``time.Time.String()``),
``job.sh`` (``runInitCtn NAME ...`` / ``runCtn NAME ...`` lines), per container ``init-NAME.out`` /
``run-NAME.out`` (stdout and stderr merged, plain text) and ``init-NAME.status`` /
``run-NAME.status`` (the exit code, written when the container ended).

Adoption writes our ``pod.json`` beside those files (nothing of the Go layout is changed), so the
service tracks the pod like its own: status from the ``.status`` files and the scheduler, logs
from the ``.out`` files (converted to CRI lines under ``.il-logs/`` at each poll: the write time
of a line is known to within a poll interval, the lines already there get the file's mtime), and
delete through scancel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from interlink_plugins.core.status import ContainerFiles

MARKERS = ("JobID.jid", "PodUID.uid", "PodNamespace.ns")
LOG_DIR = ".il-logs"
_RUN_LINE = re.compile(r"^(runInitCtn|runCtn) ([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\s|$)", re.MULTILINE)
_POD_LINE = re.compile(r"This pod ([^/\s\"']+)/([A-Za-z0-9._-]+) has been submitted")
_FILE = re.compile(r"^(init|run)-([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(out|status)$")
_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})")


@dataclass(frozen=True)
class GoJobDir:
    path: Path
    uid: str
    namespace: str
    job_id: str
    name: str
    init_names: tuple[str, ...]
    main_names: tuple[str, ...]


def is_go_job_dir(path: Path) -> bool:
    """A Go-plugin job dir (and not one of ours: ours has pod-runner.sh); one this user cannot read is not."""
    try:
        return all((path / marker).is_file() for marker in MARKERS) and not (path / "pod-runner.sh").exists()
    except OSError:  # e.g. the 0700 job dir of a job run as another user (sbatch --uid)
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


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


def _mtime(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_go_job_dir(path: Path) -> GoJobDir | None:
    if not is_go_job_dir(path):
        return None
    job_id = _read(path / "JobID.jid")
    uid = _read(path / "PodUID.uid")
    namespace = _read(path / "PodNamespace.ns")
    if not job_id.isdigit() or not uid or not namespace:
        return None
    script = _read(path / "job.sh")
    init: list[str] = []
    main: list[str] = []
    for kind, name, *_ in _RUN_LINE.findall(script):
        (init if kind == "runInitCtn" else main).append(name)
    pod = _POD_LINE.search(script)
    name = pod.group(1) if pod and pod.group(2) == uid else ""
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(path)):
            found = _FILE.match(entry)
            if found:
                target = init if found.group(1) == "init" else main
                if found.group(2) not in target:
                    target.append(found.group(2))
    return GoJobDir(path, uid, namespace, job_id, name, tuple(init), tuple(main))


def scan(data_root: Path) -> list[GoJobDir]:
    """Every Go-layout job dir directly under the data root."""
    found = []
    try:
        entries = sorted(os.scandir(data_root), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            job = read_go_job_dir(Path(entry.path))
            if job is not None:
                found.append(job)
    return found


def write_pod_json(job: GoJobDir) -> None:
    """Our pod.json (what recovery reads), marking the dir as adopted from the Go plugin."""
    meta = {
        "uid": job.uid,
        "namespace": job.namespace,
        "name": job.name,
        "init_names": list(job.init_names),
        "main_names": list(job.main_names),
        "images": {},
        "sidecars": [],
        "grace_seconds": 30,
        "layout": "go",
    }
    target = job.path / "pod.json"
    tmp = job.path / ".pod.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)


def _prefix(job_dir: Path, container: str) -> str:
    """init- or run-: where the Go plugin put this container's files."""
    for prefix in ("run", "init"):
        if (job_dir / f"{prefix}-{container}.out").exists() or (job_dir / f"{prefix}-{container}.status").exists():
            return prefix
    return "init" if container in _init_names(job_dir) else "run"


def _init_names(job_dir: Path) -> list[str]:
    try:
        meta = json.loads((job_dir / "pod.json").read_text())
    except (OSError, ValueError):
        return []
    names = meta.get("init_names", [])
    return [n for n in names if isinstance(n, str)]


def container_files(job_dir: Path, container: str) -> ContainerFiles:
    """A container's state from the Go plugin's files."""
    prefix = _prefix(job_dir, container)
    out = job_dir / f"{prefix}-{container}.out"
    status = job_dir / f"{prefix}-{container}.status"
    exit_text = _read(status)
    exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else None
    if not out.exists() and exit_code is None:
        return ContainerFiles()
    started = go_time(_read(job_dir / "StartedAt.time")) or _ctime(out) or _mtime(status)
    finished = ""
    if exit_code is not None:
        finished = _mtime(status) or go_time(_read(job_dir / "FinishedAt.time"))
    return ContainerFiles(started=started, finished=finished, exit_code=exit_code)


def _ctime(path: Path) -> str:
    try:
        stamp = path.stat().st_ctime
    except OSError:
        return ""
    first = datetime.fromtimestamp(stamp, UTC)
    try:
        if path.stat().st_size:
            # the ctime moves with each write: take the earlier of ctime and mtime
            first = min(first, datetime.fromtimestamp(path.stat().st_mtime, UTC))
    except OSError:
        pass
    return first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_path(job_dir: Path, container: str) -> Path:
    return job_dir / LOG_DIR / f"{container}.log"


def sync_log(job_dir: Path, container: str) -> Path:
    """Append what the container wrote since the last call to its CRI log; returns the log path.

    The .out file has no times: the new lines get the file's mtime, the time of the last write,
    which is exact for the last line and at most one poll interval late for the others.
    """
    prefix = _prefix(job_dir, container)
    source = job_dir / f"{prefix}-{container}.out"
    target = log_path(job_dir, container)
    offset_file = target.with_suffix(".offset")
    try:
        size = source.stat().st_size
        mtime = datetime.fromtimestamp(source.stat().st_mtime, UTC)
    except OSError:
        return target
    offset_text = _read(offset_file)
    offset = int(offset_text) if offset_text.isdigit() else 0
    if size < offset:  # truncated: start over
        offset = 0
        target.unlink(missing_ok=True)
    if size == offset:
        return target
    finished = (job_dir / f"{prefix}-{container}.status").exists()
    with open(source, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size - offset)
    cut = data.rfind(b"\n") + 1
    if finished:
        cut = len(data)
    if cut == 0:
        return target
    stamp = mtime.strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()
    lines = data[:cut].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    target.parent.mkdir(mode=0o700, exist_ok=True)
    with open(target, "ab") as log:
        log.write(b"".join(stamp + b" stdout F " + line + b"\n" for line in lines))
    tmp = offset_file.with_name(offset_file.name + ".tmp")
    tmp.write_text(str(offset + cut))
    os.replace(tmp, offset_file)
    return target


def runner_finished(job_dir: Path, init_names: list[str], main_names: list[str]) -> bool:
    """The Go job.sh ran to its end: every main container has a .status, or an init one failed."""
    for name in init_names:
        code = _read(job_dir / f"init-{name}.status")
        if code and code != "0":
            return True
    return bool(main_names) and all((job_dir / f"run-{name}.status").exists() for name in main_names)
