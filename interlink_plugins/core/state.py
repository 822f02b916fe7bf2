"""Durable store of pod UID -> backend job and lifecycle phase (SQLite on local disk).

The in-memory dict is the working copy; every change is written through before the HTTP answer
goes out, so a ``kill -9`` at any point leaves a record that recovery can finish.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1

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
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_jid(self) -> str:
        return self.job_id or f"pending-{self.uid}"


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL)")
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(f"state {path} has schema {row[0]}, newer than this plugin ({SCHEMA_VERSION})")
        self.records: dict[str, PodRecord] = {}
        for _uid, data in self._db.execute("SELECT uid, data FROM pods"):
            record = PodRecord(**json.loads(data))
            self.records[record.uid] = record

    def get(self, uid: str) -> PodRecord | None:
        return self.records.get(uid)

    def put(self, record: PodRecord) -> None:
        data = json.dumps(asdict(record), separators=(",", ":"))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pods VALUES (?, ?)", (record.uid, data))
        self.records[record.uid] = record

    def remove(self, uid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pods WHERE uid = ?", (uid,))
        self.records.pop(uid, None)

    def __iter__(self) -> Iterator[PodRecord]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)

    def close(self) -> None:
        with self._lock:
            self._db.close()
