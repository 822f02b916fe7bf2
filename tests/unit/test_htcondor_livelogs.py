"""HTCondor spool mode's live-log copies (htcondor/livelogs.py): merged and caught up through core/safefs."""

from __future__ import annotations

from pathlib import Path

from interlink_plugins.core import safefs
from interlink_plugins.htcondor import livelogs
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
