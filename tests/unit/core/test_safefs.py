"""core/safefs: a path the job controls is never followed, never read unbounded, never blocks, and a root
plugin touches a job-owned dir as its owner. Every case is a real file system object planted here."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from interlink_plugins.core import safefs

JOB_UID = 4399  # an unprivileged uid (no account needed: only the kernel's checks matter)


def job_dir(tmp_path: Path, *, owner: int | None = None) -> safefs.Location:
    path = tmp_path / "data" / "ns-uid"
    (path / "c" / "main").mkdir(parents=True)
    if owner is not None:
        for item in (path, path / "c", path / "c" / "main"):
            os.chown(item, owner, owner)
    return safefs.job_location(path)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "root-only"
    path.write_text("root secret\n")
    path.chmod(0o600)
    return path


def test_symlinks_anywhere_below_the_root_are_refused(tmp_path: Path, secret: Path) -> None:
    job = job_dir(tmp_path)
    state = job.path / "c" / "main"
    (state / "reason").symlink_to(secret)
    (job.path / "c" / "linked").symlink_to(secret.parent)
    with pytest.raises(safefs.Refused, match="symlink"):
        safefs.read_bytes(job / "c" / "main" / "reason")
    with pytest.raises(safefs.Refused, match="symlink"):
        safefs.read_bytes(job / "c" / "linked" / "root-only")
    with pytest.raises(safefs.Refused):
        safefs.open_file(job / "c" / "main" / "reason")
    assert safefs.kind(job / "c" / "main" / "reason") == "a symlink"
    assert safefs.read_bytes(job / "c" / "main" / "missing") is None
    assert safefs.read_bytes(job / "nothere" / "x") is None


def test_fifos_sockets_and_dirs_are_refused_without_blocking(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    state = job.path / "c" / "main"
    os.mkfifo(state / "exit")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(state / "started"))
        (state / "reason").mkdir()
        started = time.monotonic()
        with safefs.open_dir(job / "c" / "main") as directory:
            found = directory.read_many(("exit", "started", "reason", "finished"))
        assert time.monotonic() - started < 1
    assert found.found == {}
    assert found.refused == {"exit": "a FIFO", "started": "a socket", "reason": "a directory"}


def test_reads_are_bounded_whatever_the_file_size(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    with open(job.path / "c" / "main" / "reason", "wb") as huge:
        huge.truncate(300 << 20)
    data = safefs.read_bytes(job / "c" / "main" / "reason")
    assert data == b"\0" * safefs.STATE_BYTES


@pytest.mark.skipif(os.geteuid() != 0, reason="a root plugin's case")
def test_a_job_owned_dir_is_read_as_its_owner(tmp_path: Path, secret: Path) -> None:
    """Attack: a hard link to a root-only file in the job's dir (possible where protected_hardlinks is off, or
    for a file the job may link). Read as the dir's owner, the kernel refuses it."""
    groups = os.getgroups()
    job = job_dir(tmp_path, owner=JOB_UID)
    os.link(secret, job.path / "c" / "main" / "reason")  # root may link it; the job's uid reads it as itself
    (job.path / "c" / "main" / "exit").write_text("1\n")
    os.chown(job.path / "c" / "main" / "exit", JOB_UID, JOB_UID)
    with safefs.open_dir(job / "c" / "main") as directory:
        assert safefs.acting_uid() == JOB_UID
        found = directory.read_many(("exit", "reason"))
    assert found.found == {"exit": b"1\n"} and found.refused == {"reason": "a file its directory's owner may not open"}
    assert safefs.acting_uid() == 0 and os.getgroups() == groups
    with pytest.raises(safefs.Refused, match="may not open"):
        safefs.read_bytes(job / "c" / "main" / "reason")
    assert safefs.read_bytes(safefs.Location(tmp_path, ("root-only",))) == b"root secret\n"  # root again


@pytest.mark.skipif(os.geteuid() != 0, reason="a root plugin's case")
def test_the_owner_identity_is_per_thread(tmp_path: Path, secret: Path) -> None:
    job = job_dir(tmp_path, owner=JOB_UID)
    inside, done = threading.Event(), threading.Event()

    def hold() -> None:
        with safefs.open_dir(job / "c"):
            inside.set()
            done.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    assert inside.wait(10)
    try:
        assert safefs.acting_uid() == 0
        assert secret.read_text() == "root secret\n"  # this thread is still the plugin
    finally:
        done.set()
        worker.join()


def test_writes_replace_a_planted_symlink_never_its_target(tmp_path: Path, secret: Path) -> None:
    job = job_dir(tmp_path)
    (job.path / "pod.json").symlink_to(secret)
    safefs.write_bytes(job / "pod.json", b"{}")
    assert secret.read_text() == "root secret\n" and (job.path / "pod.json").read_text() == "{}"
    (job.path / "log").symlink_to(secret)
    with pytest.raises(safefs.Refused):
        safefs.append_bytes(job / "log", b"appended")
    (job.path / "sub").symlink_to(secret.parent)
    with pytest.raises(safefs.Refused):
        safefs.write_bytes(job / "sub" / "root-only", b"x")
    assert secret.read_text() == "root secret\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="a root plugin's case")
def test_remove_tree_never_follows_and_removes_everything_the_job_made(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "keep").write_text("keep")
    job = job_dir(tmp_path, owner=JOB_UID)
    (job.path / "volumes").symlink_to(precious)
    (job.path / "c" / "main" / "up").symlink_to(precious / "sub")
    deep = job.path / "deep"
    for _ in range(safefs.MAX_DEPTH * 2 + 3):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "up").symlink_to(precious)
    locked = job.path / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    for path in [job.path / "deep", *(job.path / "deep").rglob("*"), job.path / "locked", locked, locked / "f"]:
        os.lchown(path, JOB_UID, JOB_UID)
    locked.chmod(0)
    (job.path / "locked").chmod(0o500)
    assert safefs.remove_tree(job) == []
    assert not job.path.exists()
    assert (precious / "sub" / "keep").read_text() == "keep"
    assert safefs.acting_uid() == 0


def test_remove_tree_of_a_symlink_removes_the_symlink(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ns-uid").symlink_to(precious)
    assert safefs.remove_tree(safefs.Location(tmp_path / "data", ("ns-uid",))) == []
    assert not (tmp_path / "data" / "ns-uid").is_symlink() and (precious / "keep").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_tree_changes_symlinks_never_their_targets(tmp_path: Path, secret: Path) -> None:
    job = job_dir(tmp_path)
    (job.path / "c" / "main" / "link").symlink_to(secret)
    (job.path / "file").write_text("x")
    safefs.chown_tree(job, JOB_UID, JOB_UID)
    assert os.stat(secret).st_uid == 0
    assert os.lstat(job.path / "c" / "main" / "link").st_uid == JOB_UID
    assert {os.lstat(p).st_uid for p in [job.path, *job.path.rglob("*")]} == {JOB_UID}
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_locations_refuse_components_that_climb() -> None:
    for bad in ("..", ".", "", "a\0b"):
        with pytest.raises(ValueError):
            safefs.Location(Path("/data"), (bad,))
    assert (safefs.Location(Path("/data")) / "a/b").parts == ("a", "b")
