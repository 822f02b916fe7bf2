"""HTCondor spool mode's live-log copies (htcondor/livelogs.py): merged and caught up through core/safefs; each
record's state source (htcondor/runnerstate.py) in both data modes."""

from __future__ import annotations

import os
from pathlib import Path

from interlink_plugins.backends import parse_config, policy_from_config
from interlink_plugins.core import safefs
from interlink_plugins.core.backend import JobInfo
from interlink_plugins.core.commands.local import LocalRunner
from interlink_plugins.core.records.state import PodRecord
from interlink_plugins.htcondor import livelogs
from interlink_plugins.htcondor.backend import HTCondorBackend
from interlink_plugins.htcondor.runnerstate import from_chirp as _from_chirp


def test_merge_appends_what_is_new_and_replaces_a_new_run(tmp_path: Path) -> None:
    copy = safefs.Location(tmp_path, (".live", "c", "log"))
    livelogs.merge(copy, b"a\n")
    livelogs.merge(copy, b"a\nb\n")
    assert (tmp_path / ".live" / "c" / "log").read_bytes() == b"a\nb\n"
    livelogs.merge(copy, b"new run\n")
    assert (tmp_path / ".live" / "c" / "log").read_bytes() == b"new run\n"


def test_a_planted_symlink_is_replaced_never_written_through(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    (tmp_path / ".live" / "c").mkdir(parents=True)
    (tmp_path / ".live" / "c" / "log").symlink_to(secret)
    livelogs.merge(safefs.Location(tmp_path, (".live", "c", "log")), b"root only\nmore\n")
    assert secret.read_text() == "root only\n"
    assert (tmp_path / ".live" / "c" / "log").read_bytes() == b"root only\nmore\n"


def test_catch_up_streams_the_rest_of_the_retrieved_log(tmp_path: Path) -> None:
    (tmp_path / "c" / "c").mkdir(parents=True)
    final = tmp_path / "c" / "c" / "log"
    final.write_bytes(b"x" * 3_000_000 + b"end\n")
    copy = safefs.Location(tmp_path, (".live", "c", "log"))
    livelogs.merge(copy, b"x" * 1000)
    livelogs.catch_up(copy, safefs.Location(tmp_path, ("c", "c", "log")))
    assert (tmp_path / ".live" / "c" / "log").read_bytes() == final.read_bytes()
    other = tmp_path / "c" / "c" / "other"
    other.symlink_to(final)
    livelogs.merge(copy, b"y")
    livelogs.catch_up(copy, safefs.Location(tmp_path, ("c", "c", "other")))  # a symlink: never read
    assert (tmp_path / ".live" / "c" / "log").read_bytes() == b"y"


def test_chirped_fields_are_bounded_like_state_files() -> None:
    files = _from_chirp(["T0", "", "", "0", "", "", "Reason " + "r" * 100_000])
    assert files.reason is not None and len(files.reason[0]) + len(files.reason[1]) < safefs.STATE_BYTES


def _backend(tmp_path: Path, mode: str) -> HTCondorBackend:
    config, _ = parse_config({"Backend": "htcondor", "ContainerRuntime": "none", "DataRootFolder": str(tmp_path / "j"),
                              "StateDir": str(tmp_path / "s"), "InstanceId": "unit", "HTCondorDataMode": mode},
                             environ={})
    return HTCondorBackend(config, LocalRunner(), policy_from_config(config.policy_raw))


def _record(job_dir: Path) -> PodRecord:
    return PodRecord(uid="u", namespace="ns", name="p", job_dir=str(job_dir), init_names=[], main_names=["c"],
                     phase="submitted", job_id="7.0")


STARTED = "2026-11-25T10:00:00Z"


def test_spool_mode_reads_the_chirped_state_until_the_files_are_back_then_the_files(tmp_path: Path) -> None:
    """The record's source (state_source): chirped state and live log copies while the outputs are on the
    execute node; the runner's files once retrieved (pod.exit is back); a held job shows its run ended."""
    backend = _backend(tmp_path, "spool")
    job_dir = tmp_path / "j" / "ns-u"
    (job_dir / "c" / "c").mkdir(parents=True)
    record = _record(job_dir)
    backend._chirped["7.0"] = {"c": [STARTED, "", "", "0", "", "", ""]}
    assert backend.container_snapshot(record)["c"].started == STARTED and backend.container_started(record, "c")
    assert backend.files_version(record) is None and not backend.runner_finished(record)
    assert backend.log_file(record, "c", previous=False).path == job_dir / ".live" / "c" / "log"
    backend._jobs["7.0"] = JobInfo("7.0", "Held", active=True, waiting_reason="Held")
    held = backend.container_snapshot(record)["c"]
    assert held.started == "" and held.restarts == 1 and held.last == (137, STARTED, STARTED)
    # retrieved: the runner's files answer (and the chirped state no longer does)
    del backend._jobs["7.0"]
    for name, text in (("started", STARTED), ("exit", "3"), ("finished", "2026-11-25T10:00:09Z"), ("log", "out\n")):
        (job_dir / "c" / "c" / name).write_text(text)
    (job_dir / "pod.exit").write_text("3")
    files = backend.container_snapshot(record)["c"]
    assert files.exit_code == 3 and files.finished == "2026-11-25T10:00:09Z"
    assert backend.files_version(record) is None and backend.runner_finished(record)
    assert backend.log_file(record, "c", previous=False).path == job_dir / "c" / "c" / "log"


def test_shared_mode_reads_the_runner_files_with_a_change_token(tmp_path: Path) -> None:
    backend = _backend(tmp_path, "shared")
    job_dir = tmp_path / "j" / "ns-u"
    (job_dir / "c" / "c").mkdir(parents=True)
    (job_dir / "c" / "c" / "started").write_text(STARTED)
    record = _record(job_dir)
    backend._chirped["7.0"] = {"c": ["2000-01-01T00:00:00Z", "", "", "0", "", "", ""]}  # never read in shared mode
    assert backend.container_snapshot(record)["c"].started == STARTED
    assert backend.log_file(record, "c", previous=True).path == job_dir / "c" / "c" / "log.prev"
    os.utime(job_dir / "c" / "c", (1, 1))
    os.utime(job_dir / "c", (1, 1))
    os.utime(job_dir, (1, 1))
    assert backend.files_version(record) is not None
