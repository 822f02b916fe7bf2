"""Attacks on the Podman backend's own run files (podman/jobfiles.py): ``pod.json`` and a run's ``error``
are read back after a restart. Something that can write in the job dir (a bind or emptyDir below it, a
user on the host) plants a symlink, a FIFO or a huge file there. Defence: every read goes through
core/safefs (no symlink followed, no FIFO opened blocking, bounded)."""

from __future__ import annotations

import json
import os
import resource
import threading
from pathlib import Path

from interlink_plugins.podman import jobfiles

SECRET = {"create": True, "reason": "Leaked", "message": "secret", "at": 1.0}  # a file the job must not show


def _run_dir(job: Path) -> Path:
    run = job / "c" / "app" / "1"
    run.mkdir(parents=True)
    return run


def test_a_plain_error_file_is_read(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "job")
    (run / "error").write_text(json.dumps({"message": "no such image", "at": 1.0}))
    assert jobfiles.read_run_files(tmp_path / "job", "app", "1", ended=False) == (False, "no such image", None)


def test_a_symlinked_error_file_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(SECRET))
    run = _run_dir(tmp_path / "job")
    (run / "error").symlink_to(outside)
    assert jobfiles.stored_create_error(tmp_path / "job", "app") is None
    assert jobfiles.read_run_files(tmp_path / "job", "app", "1", ended=False)[1] == ""


def test_a_fifo_as_error_or_pod_json_does_not_block(tmp_path: Path) -> None:
    job = tmp_path / "job"
    run = _run_dir(job)
    os.mkfifo(run / "error")
    os.mkfifo(job / "pod.json")
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.extend([
        jobfiles.read_run_files(job, "app", "1", ended=False), jobfiles.read_spec(job),
        jobfiles.stored_create_error(job, "app")]), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a read blocked on a FIFO"
    assert results == [(False, "", None), None, None]


def test_a_huge_error_file_is_not_read_whole(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "job")
    with (run / "error").open("wb") as handle:  # sparse: 4 GiB that would take the plugin's memory
        handle.truncate(4 << 30)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert jobfiles.read_run_files(tmp_path / "job", "app", "1", ended=False)[1] == ""
    assert jobfiles.stored_create_error(tmp_path / "job", "app") is None
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mib < 256, f"the plugin's peak memory grew {grown_mib:.0f} MiB reading it"


def test_a_symlinked_pod_json_is_not_followed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (tmp_path / "other.json").write_text(json.dumps({"podman": {}}))
    (job / "pod.json").symlink_to(tmp_path / "other.json")
    assert jobfiles.read_spec(job) is None
