"""SQLite state: write-through records, schema migration on upgrade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from interlink_plugins.core.state import SCHEMA_VERSION, PodRecord, StateStore


def record(uid: str, job_id: str = "") -> PodRecord:
    return PodRecord(uid=uid, namespace="ns", name="p", job_dir="/j", init_names=[], main_names=["c"], job_id=job_id,
                     phase="submitted" if job_id else "submitting")


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    store.put(record("a", "1"))
    store.put(record("b"))
    store.remove("b")
    store.close()
    again = StateStore(tmp_path / "s.sqlite")
    assert list(again.records) == ["a"] and again.records["a"].job_id == "1"


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO pods VALUES (?, ?)", ("old", json.dumps(record("old", "77").to_json())))
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.records["old"].job_id == "77"
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    assert db.execute("SELECT job_id FROM pods WHERE uid='old'").fetchone()[0] == "77"


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this plugin"):
        StateStore(path)


def test_a_version_2_database_records_each_job_dirs_layout(tmp_path: Path) -> None:
    """Schema 3: the layout comes from the record (a Go-plugin dir was adopted with neither a submission nor
    images), never from the job dir's files."""
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL, job_id TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO meta VALUES ('schema', '2')")
    ours = record("ours", "1").to_json()
    ours.pop("layout")
    ours.update(submit={"argv": ["sbatch"]}, meta={"images": {"c": "busybox"}})
    adopted = record("adopted", "2").to_json()
    adopted.pop("layout")
    adopted.update(meta={"images": {}, "sidecars": [], "grace_seconds": 30})
    for uid, data in (("ours", ours), ("adopted", adopted)):
        db.execute("INSERT INTO pods VALUES (?, ?, ?)", (uid, json.dumps(data), data["job_id"]))
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.records["ours"].layout == "runner" and store.records["adopted"].layout == "go"
    store.close()
