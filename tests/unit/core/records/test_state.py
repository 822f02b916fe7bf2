"""SQLite state: records written through or behind (in order), schema migration on upgrade."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from interlink_plugins.core.records.lifecycle import Lifecycle
from interlink_plugins.core.records.state import SCHEMA_VERSION, PodRecord, StateStore, read_records


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


# a schema-3 state as the plugin wrote it while the lifecycle was an untyped dict (every key it ever set)
TODAYS_ROWS = {
    "throttled": {
        "uid": "throttled", "namespace": "ns", "name": "p", "job_dir": "/j/ns-throttled", "init_names": ["i"],
        "main_names": ["c"], "phase": "waiting-backend", "job_id": "", "submit": {"argv": ["sbatch", "job.sh"]},
        "created_at": 1800000000.0, "deadline_at": 1800000900.0, "last_error": "QOSMaxSubmitJobPerUserLimit",
        "final_status": None, "delete_after": 0.0, "delete_hard_sent": False,
        "meta": {"images": {"i": "busybox", "c": "alpine:3"}, "sidecars": ["i"], "grace_seconds": 45,
                 "field_notes": {"c": ["hostNetwork: the job shares the node's network"]},
                 "waiting_reason": "SubmitThrottled", "submit_attempts": 3, "submit_refused": True, "throttled": 2,
                 "retry_at": 1800000020.0},
        "layout": "runner",
    },
    "deleting": {
        "uid": "deleting", "namespace": "ns", "name": "q", "job_dir": "/j/ns-deleting", "init_names": [],
        "main_names": ["c"], "phase": "deleting", "job_id": "42", "submit": {"argv": ["sbatch"]},
        "created_at": 1800000000.0, "deadline_at": 1800000900.0, "last_error": "", "final_status": None,
        "delete_after": 1800000100.0, "delete_hard_sent": False,
        "meta": {"images": {"c": "alpine:3"}, "sidecars": [], "grace_seconds": 30, "submit_attempts": 1,
                 "node": "cn017", "delete_graceful_sent": True, "a_key_of_a_newer_plugin": {"kept": 1}},
        "layout": "runner",
    },
    "adopted": {
        "uid": "adopted", "namespace": "ns", "name": "", "job_dir": "/j/ns-adopted", "init_names": [],
        "main_names": ["c"], "phase": "submitted", "job_id": "43", "submit": {}, "created_at": 1800000000.0,
        "deadline_at": 0.0, "last_error": "", "final_status": None, "delete_after": 0.0, "delete_hard_sent": False,
        "meta": {}, "layout": "go",
    },
}


def todays_state(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL, job_id TEXT NOT NULL DEFAULT '')")
    db.execute("CREATE INDEX pods_job_id ON pods (job_id)")
    db.execute("INSERT INTO meta VALUES ('schema', '3')")
    for uid, data in TODAYS_ROWS.items():
        db.execute("INSERT INTO pods VALUES (?, ?, ?)", (uid, json.dumps(data), data["job_id"]))
    db.commit()
    db.close()


def test_a_state_written_before_the_lifecycle_was_typed_loads_and_is_written_back_alike(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    todays_state(path)
    store = StateStore(path)
    assert [r.lifecycle for r in read_records(path)] == [r.lifecycle for r in store]  # `interlink-plugin pods`
    throttled, deleting, adopted = (store.records[uid].lifecycle for uid in ("throttled", "deleting", "adopted"))
    assert throttled == Lifecycle(
        images={"i": "busybox", "c": "alpine:3"}, sidecars=["i"], grace_seconds=45,
        field_notes={"c": ["hostNetwork: the job shares the node's network"]}, waiting_reason="SubmitThrottled",
        submit_attempts=3, submit_refused=True, throttled=2, retry_at=1800000020.0,
    )
    assert (deleting.node, deleting.delete_graceful_sent, deleting.submit_attempts, deleting.grace) == (
        "cn017", True, 1, 30.0)
    assert adopted == Lifecycle() and adopted.grace == 30.0  # Kubernetes' default when the pod did not say
    assert store.records["throttled"].deadline_at == 1800000900.0 and store.records["adopted"].layout == "go"
    for record in store:
        store.put(record)
    store.close()
    db = sqlite3.connect(path)
    written = {uid: json.loads(data) for uid, data in db.execute("SELECT uid, data FROM pods")}
    db.close()
    # the same keys and values an older plugin reads (an adopted pod's meta says it has no images, as before)
    for uid in ("throttled", "deleting"):
        assert written[uid] == TODAYS_ROWS[uid]
    assert written["adopted"] == {**TODAYS_ROWS["adopted"], "meta": {"images": {}, "sidecars": []}}
    store = StateStore(path)
    assert store.records["deleting"].lifecycle.extra == {"a_key_of_a_newer_plugin": {"kept": 1}}
    store.close()


def test_a_lifecycle_of_the_wrong_types_is_its_defaults() -> None:
    """At adoption the lifecycle comes from a pod.json in the job dir, which the job may have rewritten."""
    lifecycle = Lifecycle.from_json({"images": ["not", "a", "map"], "sidecars": "i", "grace_seconds": "forever",
                                     "field_notes": {"c": 7}, "retry_at": None, "submit_attempts": True})
    assert lifecycle == Lifecycle(field_notes={"c": []})


def _stored(path: Path) -> dict[str, tuple[str, str]]:
    """uid -> (phase, job id) as a reader of the file sees it now."""
    return {r.uid: (r.phase, r.job_id) for r in read_records(path)}


def test_written_behind_records_land_in_order_with_every_write_through(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    first = record("a")
    store.put(first)  # through: in the file before put returns
    assert _stored(path) == {"a": ("submitting", "")}
    submitted = record("a", job_id="7")
    store.put_soon(submitted)
    assert store.get("a") is submitted  # the working copy has it at once
    later = record("a", job_id="7")
    later.phase = "deleting"
    store.put(later)  # a write through after one behind: the older one never lands over it
    store.put_soon(record("b", job_id="8"))
    store.remove("b")  # likewise a removal after a write behind
    store.flush()
    assert _stored(path) == {"a": ("deleting", "7")}
    store.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    for i in range(50):
        store.put_soon(record(f"p{i}", job_id=str(i)))
    store.close()
    assert _stored(path) == {f"p{i}": ("submitted", str(i)) for i in range(50)}


def test_the_writer_thread_lands_a_write_behind_without_another_write(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    store.put_soon(record("a", job_id="9"))
    deadline = time.monotonic() + 10
    while _stored(path) != {"a": ("submitted", "9")} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _stored(path) == {"a": ("submitted", "9")}
    store.close()


def test_a_failed_write_keeps_what_was_queued_for_the_next(tmp_path: Path) -> None:
    """SQLite refuses a write (here: the table is gone for a moment): the queued record is not dropped."""
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    store._db.execute("ALTER TABLE pods RENAME TO pods_away")  # stand-in for a disk that refuses writes
    with store._queue_lock:  # queue without waking the writer: the next write through carries it
        store._queued.append(("q", json.dumps(record("q").to_json()), ""))
    with pytest.raises(sqlite3.OperationalError):
        store.put(record("a"))
    store._db.execute("ALTER TABLE pods_away RENAME TO pods")
    store.put(record("a"))
    assert set(_stored(path)) == {"q", "a"}
    store.close()
