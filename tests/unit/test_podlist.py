"""`interlink-plugin pods`: the tracked pods from the state file, read-only, as a table or JSON."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from interlink_plugins.core.records.lifecycle import Lifecycle
from interlink_plugins.core.records.state import PodRecord, StateStore
from interlink_plugins.podlist import age_text, pod_rows

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def terminated(code: int, reason: str) -> dict[str, object]:
    return {"containers": [{"name": "c", "state": {"terminated": {"exitCode": code, "reason": reason}}}],
            "initContainers": []}


def records() -> list[PodRecord]:
    def pod(name: str, age: float, **fields: object) -> PodRecord:
        return PodRecord(uid=f"uid-{name}", namespace="physics", name=name, job_dir="/j", init_names=[],
                         main_names=["c"], created_at=NOW - age, **fields)  # type: ignore[arg-type]

    return [
        pod("queued", 30, phase="submitted", job_id="41"),
        pod("running", 7200, phase="submitted", job_id="42", lifecycle=Lifecycle(node="cn017")),
        pod("done", 4000, phase="submitted", job_id="43", lifecycle=Lifecycle(node="cn018"),
            final_status=terminated(0, "Completed")),
        pod("oom", 90000, phase="submitted", job_id="44", lifecycle=Lifecycle(node="cn018"),
            final_status=terminated(137, "OOMKilled")),
        pod("waiting", 5, phase="waiting-backend", lifecycle=Lifecycle(waiting_reason="BackendUnavailable")),
        pod("refused", 600, phase="failed-submit", final_status=terminated(1, "SubmitFailed")),
        pod("going", 65, phase="deleting", job_id="45", lifecycle=Lifecycle(node="cn001")),
    ]


def test_rows_carry_phase_reason_node_and_age(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    for record in records():
        store.put(record)
    store.close()
    rows = {row.name: row for row in pod_rows(tmp_path / "state.sqlite", now=NOW)}
    assert [row.name for row in pod_rows(tmp_path / "state.sqlite", now=NOW)] == [
        "oom", "running", "done", "refused", "going", "queued", "waiting"]  # oldest first
    assert (rows["queued"].phase, rows["queued"].job_id, rows["queued"].node) == ("Pending", "41", "")
    assert (rows["running"].phase, rows["running"].node, rows["running"].age_seconds) == ("Running", "cn017", 7200)
    assert (rows["done"].phase, rows["done"].reason) == ("Succeeded", "")
    assert (rows["oom"].phase, rows["oom"].reason) == ("Failed", "OOMKilled")
    assert (rows["waiting"].phase, rows["waiting"].reason, rows["waiting"].job_id) == (
        "Pending", "BackendUnavailable", "")
    assert (rows["refused"].phase, rows["refused"].reason) == ("Failed", "SubmitFailed")
    assert rows["going"].phase == "Terminating"
    assert [age_text(s) for s in (5, 65, 7200, 90000)] == ["5s", "1m", "2h", "1d"]
    assert pod_rows(tmp_path / "absent.sqlite") == []


def test_the_command_reads_a_running_plugins_state_without_touching_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db_path = state / "state-site1.sqlite"
    # a schema-1 state (as an older release left it): read as it is, never migrated by a listing
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE pods (uid TEXT PRIMARY KEY, data TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    for record in records():
        db.execute("INSERT INTO pods VALUES (?, ?)", (record.uid, json.dumps(record.to_json())))
    db.commit()
    db.close()
    before = db_path.read_bytes()
    config = tmp_path / "plugin.yaml"
    config.write_text(f"Backend: slurm\nContainerRuntime: none\nInstanceId: site1\nStateDir: {state}\n"
                      f"DataRootFolder: {tmp_path / 'jobs'}\n")
    cli = [sys.executable, "-m", "interlink_plugins.cli", "pods", "--config", str(config)]
    table = subprocess.run(cli, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE/NAME", "UID", "JOB", "PHASE", "NODE", "AGE"]
    running = next(line for line in lines if line.startswith("physics/running "))
    assert running.split()[1:5] == ["uid-running", "42", "Running", "cn017"]
    waiting = next(line for line in lines if line.startswith("physics/waiting "))
    assert "Pending (BackendUnavailable)" in waiting and waiting.split()[2] == "-"
    listed = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    items = json.loads(listed.stdout)
    assert {item["name"]: item["phase"] for item in items}["oom"] == "Failed"
    assert set(items[0]) == {"namespace", "name", "uid", "job_id", "phase", "reason", "node", "age_seconds"}
    assert db_path.read_bytes() == before and not list(state.glob("*-wal"))  # nothing written, not migrated
