"""Durable store of pod UID -> backend job and lifecycle phase (SQLite on local disk).

The in-memory dict is the working copy. ``put`` writes a change through before it returns; ``put_soon``
(what a submission learned: the job id, the phase after it) is written behind by one writer thread, in
order with every other write, several per transaction. A ``kill -9`` before such a write lands leaves
the record as it was before the submission ("submitting"), which recovery finishes by looking the job
up (``find_job``), never by a second submission. So any ``kill -9`` leaves a record recovery can finish.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from interlink_plugins.core.records.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

# schema version -> the statements that bring the previous version to it (run in order, once)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the job id in its own indexed column, so adoption and lookups need no JSON scan
    2: (
        "ALTER TABLE pods ADD COLUMN job_id TEXT NOT NULL DEFAULT ''",
        "UPDATE pods SET job_id = COALESCE(json_extract(data, '$.job_id'), '')",
        "CREATE INDEX IF NOT EXISTS pods_job_id ON pods (job_id)",
    ),
    # 2 -> 3: the layout of each job dir, recorded (never re-derived from files the job controls). A pod
    # adopted from the Go plugin's dir is the one kind of record with neither a submission nor images.
    3: (
        "UPDATE pods SET data = json_set(data, '$.layout', CASE WHEN json_extract(data, '$.submit') = '{}' "
        "AND COALESCE(json_extract(data, '$.meta.images'), '{}') = '{}' THEN 'go' ELSE 'runner' END)",
    ),
}

Layout = Literal[
    "runner",  # our pod runner's files (c/<container>/...): every job dir this plugin created
    "go",  # the Go SLURM plugin's files, found by the start-up scan of dirs this plugin did not create
]

Phase = Literal[
    "submitting",  # recorded, submission not confirmed (recovery looks the job up before resubmitting)
    "waiting-backend",  # backend unreachable or refusing for now; retried until the deadline
    "submitted",  # the backend has the job
    "failed-submit",  # gave up: reported Failed, reason SubmitFailed
    "deleting",  # delete asked; cancel sent or pending (tombstone while the backend is down)
]


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    job_dir: str
    init_names: list[str]
    main_names: list[str]
    phase: Phase = "submitting"
    job_id: str = ""
    submit: dict[str, Any] = field(default_factory=dict)  # backend-specific, e.g. the sbatch argv
    created_at: float = 0.0
    deadline_at: float = 0.0
    last_error: str = ""
    final_status: dict[str, Any] | None = None  # frozen terminal status (terminal states never go back)
    delete_after: float = 0.0  # when the hard cancel follows the graceful one
    delete_hard_sent: bool = False
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # stored as "meta" (its name in the state file)
    layout: Layout = "runner"  # who writes the job dir's state files (chosen once, see Layout)

    @classmethod
    def from_summary(cls, summary: dict[str, Any], *, job_dir: str, created_at: float, **fields: Any) -> PodRecord:
        """A record from core.model.pod.pod_summary (at create) or a pod.json / labels (at adoption)."""
        return cls(
            uid=str(summary["uid"]),
            namespace=str(summary.get("namespace", "")),
            name=str(summary.get("name", "")),
            job_dir=job_dir,
            init_names=list(summary.get("init_names", [])),
            main_names=list(summary.get("main_names", [])),
            created_at=created_at,
            lifecycle=Lifecycle.from_json({k: summary[k] for k in ("images", "sidecars", "grace_seconds")
                                           if k in summary}),
            **fields,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodRecord:
        """A record as the state file has it (keys this version does not know are left out)."""
        known = {f.name for f in fields(cls)} - {"lifecycle"}
        return cls(**{k: v for k, v in data.items() if k in known}, lifecycle=Lifecycle.from_json(data.get("meta")))

    def to_json(self) -> dict[str, Any]:
        """The record as the state file has it: its lifecycle under "meta", by the keys it always had.

        The values are the record's own (no deep copy, which was most of a save's CPU): serialise the
        result before the record changes again, as ``_put_row`` does."""
        data = {name: getattr(self, name) for name in _STORED_FIELDS}
        data["meta"] = self.lifecycle.to_json()
        return data

    @property
    def pod_jid(self) -> str:
        return self.job_id or f"pending-{self.uid}"


# what to_json stores, by field name (the lifecycle goes under "meta")
_STORED_FIELDS = tuple(f.name for f in fields(PodRecord) if f.name != "lifecycle")


class StateSchemaError(RuntimeError):
    """The state was written by a newer version (schema above ours): never misread it."""


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def _schema_of(db: sqlite3.Connection) -> int | None:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "pods" not in tables:
        return None
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() if "meta" in tables else None
    return 1 if row is None else int(row[0])


def state_summary(path: Path) -> tuple[int | None, int]:
    """(schema version, pods tracked) of a state file, read-only; (None, 0) for an empty one."""
    db = _read_only(path)
    try:
        version = _schema_of(db)
        return version, (db.execute("SELECT count(*) FROM pods").fetchone()[0] if version else 0)
    finally:
        db.close()


def read_records(path: Path) -> list[PodRecord]:
    """The records of a state file, read-only (a running plugin may hold it): no migration, nothing created."""
    db = _read_only(path)
    try:
        version = _schema_of(db)
        if version is None:
            return []
        if version > SCHEMA_VERSION:
            raise StateSchemaError(f"state {path} has schema {version}, newer than this plugin ({SCHEMA_VERSION})")
        return [PodRecord.from_json(json.loads(data)) for (data,) in db.execute("SELECT data FROM pods")]
    finally:
        db.close()


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the connection: held while writing
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate(path)
        self.records: dict[str, PodRecord] = {}
        for _uid, data in self._db.execute("SELECT uid, data FROM pods"):
            record = PodRecord.from_json(json.loads(data))
            self.records[record.uid] = record
        self._queued: list[_Row] = []  # written behind, oldest first
        self._queue_lock = threading.Condition(threading.Lock())
        self._writer: threading.Thread | None = None
        self._closing = False

    def _migrate(self, path: Path) -> None:
        """Create the schema, or upgrade an older one in a transaction (a crash leaves the old one)."""
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if row is None and "pods" not in tables:
            self._db.execute(
                "CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL, job_id TEXT NOT NULL DEFAULT '')"
            )
            self._db.execute("CREATE INDEX pods_job_id ON pods (job_id)")
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return
        version = 1 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StateSchemaError(f"state {path} has schema {version}, newer than this plugin ({SCHEMA_VERSION})")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target]:
                    self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(target),))
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, uid: str) -> PodRecord | None:
        return self.records.get(uid)

    def put(self, record: PodRecord) -> None:
        """Write ``record`` through (after every write queued before it); blocking."""
        self._write([_put_row(record)])
        self.records[record.uid] = record

    def put_soon(self, record: PodRecord) -> None:
        """Keep ``record`` now and write it behind: for what recovery can find again if it is lost."""
        row = _put_row(record)  # as it is now: later changes of the object come with their own write
        self.records[record.uid] = record
        with self._queue_lock:
            self._queued.append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_behind, name="state-writer", daemon=True)
                self._writer.start()
            self._queue_lock.notify()

    def remove(self, uid: str) -> None:
        self._write([(uid, None, "")])
        self.records.pop(uid, None)

    def flush(self) -> None:
        """Every write queued so far is in the file."""
        self._write([])

    def _write(self, rows: list[_Row]) -> None:
        with self._lock:
            with self._queue_lock:
                behind, self._queued = self._queued, []
            if not behind and not rows:
                return
            try:
                self._commit([*behind, *rows])
            except BaseException:
                with self._queue_lock:  # kept, in order, for the next attempt; the caller's own write failed
                    self._queued[:0] = behind
                raise

    def _commit(self, rows: list[_Row]) -> None:
        """One transaction for ``rows``, in order (a removal is a row without data). Under ``_lock``."""
        self._db.execute("BEGIN")
        try:
            for uid, data, job_id in rows:
                if data is None:
                    self._db.execute("DELETE FROM pods WHERE uid = ?", (uid,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO pods (uid, data, job_id) VALUES (?, ?, ?)",
                                     (uid, data, job_id))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write_behind(self) -> None:
        while True:
            with self._queue_lock:
                while not self._queued and not self._closing:
                    self._queue_lock.wait()
                if self._closing:
                    return
            try:
                self._write([])
            except sqlite3.Error:  # the next write through (or close) retries what is queued; said once here
                log.exception("state: writing queued records failed; retried with the next write")
                time.sleep(1)

    def __iter__(self) -> Iterator[PodRecord]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)

    def close(self) -> None:
        with self._queue_lock:
            self._closing = True
            self._queue_lock.notify()
        if self._writer is not None:
            self._writer.join()
        self.flush()
        with self._lock:
            self._db.close()


_Row = tuple[str, str | None, str]  # uid, the record's JSON (None: remove it), job id


def _put_row(record: PodRecord) -> _Row:
    return record.uid, json.dumps(record.to_json(), separators=(",", ":")), record.job_id
