"""The runner-files change token (RunnerFiles.version), checked against the REAL pod runner.

The poller reuses a pod's status while the token is unchanged, so the property that matters is: two
moments with the same trusted token have the same runner files. It is checked by sampling token and
files while a real runner goes through init, failures, back-off restarts and its end.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from interlink_plugins.core.podrunner import statefiles as runnerfiles
from interlink_plugins.core.podrunner.statefiles import RunnerFiles
from interlink_plugins.core.records.state import PodRecord
from tests.unit.core.podrunner.test_render import init, main, plan_for, sh, write_runner


def test_an_unchanged_token_means_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 50 ms is above the coarse clock tick file systems stamp mtimes with (a few ms), as 1 s is for NFS
    monkeypatch.setattr(runnerfiles, "SETTLE_NS", 50_000_000)
    job_dir = tmp_path / "job"
    counter = tmp_path / "attempts"
    flaky = sh('n=$(cat "$1" 2>/dev/null || echo 0); echo $((n+1)) >"$1"; sleep 0.2; [ "$n" -ge 2 ]', str(counter))
    plan = plan_for(job_dir, init("prep", sh("sleep 0.3")), main("work", flaky, policy="OnFailure"),
                    main("side", sh("sleep 0.5; exit 3")))
    record = PodRecord(uid="u", namespace="ns", name="p", job_dir=str(job_dir), init_names=["prep"],
                       main_names=["work", "side"], phase="submitted", job_id="1")
    files = RunnerFiles()
    script = write_runner(plan)
    proc = subprocess.Popen(["bash", str(script)], cwd=job_dir, start_new_session=True)
    seen: dict[tuple[int, ...], object] = {}
    snapshots, trusted = set(), 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            done = proc.poll() is not None
            version = files.version(record)
            snapshot = files.snapshot(record)
            snapshots.add(tuple(sorted(snapshot.items())))
            if version is not None:
                trusted += 1
                assert seen.setdefault(version, snapshot) == snapshot, "files changed, token did not"
            if done and (job_dir / "pod.exit").exists():
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.wait(timeout=5) == 3
    # positive controls: the runner went through many states, and most samples were trusted
    assert len(snapshots) >= 6, len(snapshots)
    assert len(seen) >= 3 and trusted > 50, (len(seen), trusted)


def test_a_recent_change_is_not_trusted(tmp_path: Path) -> None:
    record = PodRecord(uid="u", namespace="ns", name="p", job_dir=str(tmp_path), init_names=[], main_names=["c"],
                       phase="submitted", job_id="1")
    (tmp_path / "c" / "c").mkdir(parents=True)
    assert RunnerFiles().version(record) is None  # just written: the next change may share its mtime
