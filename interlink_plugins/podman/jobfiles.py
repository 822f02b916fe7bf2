"""The files of a Podman pod's job directory: planned once at prepare (``plan_job_files``, pure) and
written by one writer (``write_job_files``), written per container run, read back after a restart (the
plugin keeps no other state).

``pod.json`` (the spec the plugin runs from), the private env files, ``stop-requested`` (a delete
was asked for), and per run ``c/<container>/<run>/`` with ``oom`` (written by conmon) and ``error``
(a run podman could not create or start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlink_plugins.core import safefs
from interlink_plugins.core.podrunner.jobdir import PLAN_COUNTER, JobFile, make_job_dir, write_planned
from interlink_plugins.core.volumes.materialise import VolumePlan
from interlink_plugins.podman.hooks import read_killed
from interlink_plugins.podman.plan import CreateError
from interlink_plugins.podman.spec import PodSpec

STOP_MARKER = "stop-requested"

RunFiles = tuple[bool, str, tuple[str, str] | None]  # (oom file, start error, why the plugin killed it)


SPEC_MAX = 8 << 20  # pod.json: a pod spec with its volumes' sources, far below this
RUN_FILE_MAX = 64 << 10  # an error record of a run


def _run_file(job_dir: Path, container: str, run: int | str, name: str) -> safefs.Location:
    return safefs.job_location(job_dir) / "c" / container / str(run) / name


def _read_json(loc: safefs.Location, limit: int) -> Any:
    """A JSON file of the job dir, read bounded and never through a symlink; FileNotFoundError when absent."""
    raw = safefs.read_bytes(loc, limit + 1)
    if raw is None:
        raise FileNotFoundError(str(loc))
    if len(raw) > limit:
        raise ValueError(f"{loc}: over {limit} bytes")
    return json.loads(raw)


def load_spec(job_dir: Path) -> PodSpec:
    """The spec in ``pod.json``; OSError, ValueError, KeyError or TypeError when it cannot be read."""
    return PodSpec.from_json(_read_json(safefs.job_location(job_dir) / "pod.json", SPEC_MAX)["podman"])


def read_spec(job_dir: Path) -> PodSpec | None:
    """The spec in ``pod.json``, None when it cannot be read."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return load_spec(job_dir)
    return None


@dataclass(frozen=True)
class PodPlan:
    """Everything a prepare puts in a pod's job dir, planned once (pure): the dry run shows it, the create
    writes it (``write_job_files``)."""

    spec: PodSpec
    volumes: VolumePlan
    files: tuple[JobFile, ...]  # pod.json, then the private env files and secret values: all 0600

    @property
    def pod_json(self) -> str:
        return next(f.data for f in self.files if f.path == "pod.json").decode()


def plan_job_files(job_dir: Path, spec: PodSpec, volumes: VolumePlan, pod_json: str) -> PodPlan:
    """The plan of a pod's job dir: its volumes, ``pod.json`` and the spec's private files (below the job dir)."""
    PLAN_COUNTER.count += 1
    private = (JobFile(os.path.relpath(path, job_dir), content, 0o600) for path, content in spec.private_files)
    return PodPlan(spec, volumes, (JobFile("pod.json", pod_json.encode(), 0o600), *private))


def write_job_files(plan: PodPlan, job_dir: Path) -> None:
    """The local writer: the job dir made private (0700; a symlink or another uid's dir is refused), the
    volumes, ``pod.json`` and the private files through core/safefs (atomic, no symlink followed; ``c/``
    and its container dirs as mkdir makes them); a stop marker of an earlier submission is removed."""
    make_job_dir(job_dir)
    write_planned(job_dir, plan.volumes, plan.files, dir_mode=0o777)  # less the umask, as the run dirs
    safefs.remove_file(safefs.job_location(job_dir) / STOP_MARKER)


def write_text(path: Path, text: str) -> None:
    """A small file, atomically (its directory created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def create_error_text(error: CreateError) -> str:
    """A create error as the run directory keeps it, so a restarted plugin reports it at once."""
    return json.dumps({"create": True, "reason": error.reason, "message": error.message, "at": time.time(),
                       "attempts": error.attempts})


def start_error_text(message: str) -> str:
    """A start error (the container exists but could not start) as the run directory keeps it."""
    return json.dumps({"message": message, "at": time.time()})


def stored_create_error(job_dir: Path, container: str) -> CreateError | None:
    """The create error recorded in a container's last run directory, if any."""
    runs = run_numbers(job_dir / "c" / container)
    if not runs:
        return None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        data = _read_json(_run_file(job_dir, container, runs[-1], "error"), RUN_FILE_MAX)
        if data.get("create"):
            return CreateError(runs[-1], str(data["reason"]), str(data["message"]), float(data["at"]),
                               int(data.get("attempts", 1)))
    return None


def read_run_files(job_dir: Path, container: str, run: str, *, ended: bool) -> RunFiles:
    """What a run's directory says: conmon's OOM file, a start error, why the plugin killed it (ended)."""
    killed = read_killed(job_dir, container, run) if ended else None
    error = ""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        data = _read_json(_run_file(job_dir, container, run, "error"), RUN_FILE_MAX)
        error = "" if data.get("create") else str(data.get("message", ""))
    return safefs.lstat(_run_file(job_dir, container, run, "oom")) is not None, error, killed


def run_numbers(directory: Path) -> list[int]:
    """The run numbers under a container's directory, in order."""
    try:
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    except OSError:
        return []


def remove_runs_before(directory: Path, keep_from: int) -> None:
    """Remove the directories of a container's runs before ``keep_from``."""
    for number in run_numbers(directory):
        if number < keep_from:
            shutil.rmtree(directory / str(number), ignore_errors=True)


def empty_tree(root: Path, parts: Sequence[str]) -> None:
    """A fresh ``root/parts...`` of empty directories, 0755 (a missing workingDir to copy in)."""
    shutil.rmtree(root, ignore_errors=True)
    root.joinpath(*parts).mkdir(parents=True, mode=0o755)
    for directory in [root, *(root.joinpath(*parts[: i + 1]) for i in range(len(parts)))]:
        directory.chmod(0o755)
