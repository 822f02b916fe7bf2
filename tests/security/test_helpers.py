"""Attacks on the shared runtime helpers (<data root>/helpers/<sha256>/): every job runs them, so a job
user who could plant or alter one would run code in every other user's job. Defence (core/podrunner/helpers.py):
the plugin owns them read-only and uses a copy only when it is exactly what it writes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from interlink_plugins.core import safefs
from interlink_plugins.core.commands.remotefiles import stage_helpers
from interlink_plugins.core.podrunner import helpers
from tests.harness import PluginProcess, exit_codes
from tests.podfactory import container, pod_body

EVIL = b"#!/bin/bash\ntouch /tmp/pwned\n"
NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")


def _fresh() -> helpers.HelperSet:
    # a set of its own per test: the per-process "checked" record of one test does not carry over
    return helpers.make_set({**helpers.helper_set().texts(), "id.txt": os.urandom(8).hex()})


def _runner(hs: helpers.HelperSet, root: Path) -> Path:
    return Path(hs.dir_below(root)) / "pod_runner.sh"


def _plant(target: Path, hs: helpers.HelperSet, evil: bytes = EVIL) -> None:
    target.mkdir(parents=True)
    for name, data in hs.files:
        (target / name).write_bytes(evil if name == "pod_runner.sh" else data)
        os.chmod(target / name, helpers.FILE_MODE)
    os.chmod(target, helpers.DIR_MODE)  # as the plugin's copy but for what the attack changes


def test_copies_are_plugin_owned_read_only_and_atomic(tmp_path: Path) -> None:
    hs = _fresh()
    where = Path(helpers.ensure_local(tmp_path, hs))
    assert stat.S_IMODE(os.stat(tmp_path / "helpers").st_mode) == 0o711  # as the data root: traverse only
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o511
    for name, data in hs.files:
        info = os.lstat(where / name)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o555 and info.st_uid == os.geteuid()
        assert (where / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "helpers")) == [hs.digest]  # no temp dir left behind
    assert helpers.ensure_local(tmp_path, hs) == str(where)


def test_a_planted_copy_is_replaced_before_use(tmp_path: Path) -> None:
    """Attack: a job user creates helpers/<hash>/ (the hash is public: the plugin's version) with a pod
    runner of their own before the plugin writes it."""
    hs = _fresh()
    (tmp_path / "helpers").mkdir(mode=0o755)
    _plant(tmp_path / "helpers" / hs.digest, hs)
    helpers.ensure_local(tmp_path, hs)
    assert _runner(hs, tmp_path).read_bytes() == dict(hs.files)["pod_runner.sh"]


def test_a_copy_altered_after_the_check_is_replaced(tmp_path: Path) -> None:
    """Attack: the copy is changed after the plugin checked it (same inode, new content)."""
    hs = _fresh()
    runner = _runner(hs, Path(helpers.ensure_local(tmp_path, hs)).parent.parent)
    os.chmod(runner.parent, 0o755)
    os.chmod(runner, 0o755)
    runner.write_bytes(EVIL)
    os.chmod(runner, helpers.FILE_MODE)
    os.chmod(runner.parent, helpers.DIR_MODE)  # only the content differs
    helpers.ensure_local(tmp_path, hs)
    assert runner.read_bytes() == dict(hs.files)["pod_runner.sh"]


def test_a_symlinked_copy_is_never_followed(tmp_path: Path) -> None:
    """Attack: helpers/<hash> is a symlink to a dir the attacker controls (content as the plugin's, so a
    content check alone would pass); it is replaced by a real dir, the attacker's dir untouched."""
    hs = _fresh()
    theirs = tmp_path / "theirs"
    _plant(theirs, hs, evil=dict(hs.files)["pod_runner.sh"])
    (tmp_path / "data" / "helpers").mkdir(parents=True, mode=0o755)
    (tmp_path / "data" / "helpers" / hs.digest).symlink_to(theirs)
    where = Path(helpers.ensure_local(tmp_path / "data", hs))
    assert not where.is_symlink() and where.is_dir()
    assert sorted(os.listdir(theirs)) == sorted(name for name, _ in hs.files)


def test_a_symlinked_helpers_dir_is_refused(tmp_path: Path) -> None:
    hs = _fresh()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "helpers").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(safefs.Refused):
        helpers.ensure_local(tmp_path / "data", hs)
    assert os.listdir(tmp_path / "elsewhere") == []


def test_a_helpers_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    hs = _fresh()
    (tmp_path / "helpers").mkdir()
    os.chmod(tmp_path / "helpers", 0o777)
    with pytest.raises(safefs.Refused):
        helpers.ensure_local(tmp_path, hs)


def test_a_refused_helpers_dir_answers_503_naming_the_data_root_and_leaves_nothing(plugin: PluginProcess) -> None:
    """Attack on the real plugin and SLURM: ``<data root>/helpers`` replaced by a symlink to a dir the
    attacker controls. The create is refused with a 503 naming DataRootFolder (not a bare 500), no job
    dir is left and nothing is submitted; once the admin removes it, the same pod runs."""
    data_root = Path(plugin.config["DataRootFolder"])
    decoy = data_root.parent / "decoy"
    decoy.mkdir()
    shutil.rmtree(data_root / "helpers", ignore_errors=True)  # the plugin made it at start, or not yet
    (data_root / "helpers").symlink_to(decoy)
    body = pod_body("refused-helpers", [container("c", ["sh", "-c", "echo ran"])])
    answer = plugin.client.post("/create", json=body)
    assert answer.status_code == 503, answer.text
    assert str(data_root) in answer.text and "helpers" in answer.text and "symlink" in answer.text
    assert not list(decoy.iterdir()) and plugin.status(body) is None
    assert [p.name for p in data_root.iterdir()] == ["helpers"]  # no job dir left behind
    (data_root / "helpers").unlink()
    plugin.create(body)
    assert exit_codes(plugin.wait_done(body)) == {"c": 0}


@root_only
def test_the_helpers_dir_of_an_earlier_plugin_identity_is_moved_aside_not_used(tmp_path: Path) -> None:
    """A site moves its plugin from its own user to root (the guide's root step): the helpers dir the
    earlier identity made, with a copy that identity could still change, is moved aside whole, never used."""
    hs = _fresh()
    (tmp_path / "helpers").mkdir(mode=0o711)
    planted = tmp_path / "helpers" / hs.digest
    _plant(planted, hs, evil=dict(hs.files)["pod_runner.sh"])
    for path in (tmp_path / "helpers", planted, *planted.iterdir()):
        os.lchown(path, NOBODY, NOBODY)
    where = Path(helpers.ensure_local(tmp_path, hs))
    assert os.lstat(tmp_path / "helpers").st_uid == 0 and os.lstat(where).st_uid == 0
    assert _runner(hs, tmp_path).read_bytes() == dict(hs.files)["pod_runner.sh"]
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"helpers.uid-{NOBODY}.")]
    assert os.lstat(aside).st_uid == NOBODY  # kept as it was, for the admin to look at


def _ensure_local_as_nobody(data_root: Path, hs: helpers.HelperSet) -> str:
    """helpers.ensure_local run by the system Python as uid nobody (the plugin's own user), from a copy
    of the two modules it uses that nobody can read (the checkout may sit below a private dir)."""
    package = data_root.parent / f"{data_root.name}-src"
    source = Path(helpers.__file__).parents[2]
    for module in ("__init__.py", "core/__init__.py", "core/safefs.py", "core/podrunner/__init__.py",
                   "core/podrunner/helpers.py"):
        target = package / "interlink_plugins" / module
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / module).read_bytes() if module.endswith(("safefs.py", "helpers.py")) else b"")
    os.chmod(package, 0o755)
    for path in package.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    code = ("import json, sys; from pathlib import Path; from interlink_plugins.core.podrunner import helpers; "
            "files = json.loads(sys.stdin.read()); "
            "print(helpers.ensure_local(Path(sys.argv[1]), helpers.make_set(files)))")
    try:
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
                               "-c", code, str(data_root)], input=json.dumps(hs.texts()), env={"PYTHONPATH": str(package)},
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(package)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@root_only
def test_roots_helpers_dir_is_moved_aside_by_a_plugin_run_as_its_own_user_again() -> None:
    """The step back (root -> the plugin's own user, or a data root root used first): root's 0711
    helpers dir cannot even be opened by the plugin's user; it is moved aside, and every create worked
    again (it failed every create with a bare PermissionError)."""
    data_root = Path(tempfile.mkdtemp(prefix="il-sec-helpers-", dir="/tmp"))
    try:
        os.chown(data_root, NOBODY, NOBODY)
        (data_root / "helpers").mkdir(mode=0o711)  # root's, as root's plugin made it
        os.chmod(data_root / "helpers", 0o711)
        hs = _fresh()
        where = Path(_ensure_local_as_nobody(data_root, hs))
        assert where.parent == data_root / "helpers" and os.lstat(where.parent).st_uid == NOBODY
        assert _runner(hs, data_root).read_bytes() == dict(hs.files)["pod_runner.sh"]
        (aside,) = [p for p in data_root.iterdir() if p.name.startswith("helpers.uid-0.")]
        assert os.lstat(aside).st_uid == 0  # kept as it was
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


@root_only
def test_a_copy_owned_by_a_job_user_is_replaced_and_job_users_cannot_write() -> None:
    """Attack: a copy with the plugin's exact bytes but owned by a job user (who could change it at any
    time) is not used; the plugin's copy cannot be changed or added to by that user."""
    tmp_path = Path(tempfile.mkdtemp(prefix="il-sec-helpers-", dir="/tmp"))  # traversable by the job user
    try:
        _owned_by_a_job_user(tmp_path)
    finally:
        for path in (tmp_path / "helpers").iterdir():
            os.chmod(path, 0o700)
        shutil.rmtree(tmp_path)


def _owned_by_a_job_user(tmp_path: Path) -> None:
    hs = _fresh()
    os.chmod(tmp_path, 0o755)
    (tmp_path / "helpers").mkdir(mode=0o755)
    planted = tmp_path / "helpers" / hs.digest
    _plant(planted, hs, evil=dict(hs.files)["pod_runner.sh"])
    for path in (planted, *planted.iterdir()):
        os.lchown(path, NOBODY, NOBODY)
    where = Path(helpers.ensure_local(tmp_path, hs))
    assert os.lstat(where).st_uid == 0 and all(os.lstat(p).st_uid == 0 for p in where.iterdir())
    for attempt in (["sh", "-c", f"echo x >> {where / 'pod_runner.sh'}"], ["touch", str(where / "extra")],
                    ["mv", str(where), str(tmp_path / "helpers" / "moved")]):
        result = subprocess.run(attempt, user=NOBODY, group=NOBODY, capture_output=True, timeout=10, check=False)
        assert result.returncode != 0, attempt
    assert subprocess.run(["bash", "-n", str(where / "pod_runner.sh")], user=NOBODY, timeout=10,
                          check=False).returncode == 0  # readable and runnable by the job's user


class _LocalSftp:
    """The SFTPClient calls stage_helpers makes, on the local filesystem."""

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(path, mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def rename(self, old: str, new: str) -> None:
        if os.path.lexists(new):
            raise OSError(17, "exists")  # SFTP rename never replaces
        os.rename(old, new)

    def open(self, path: str, mode: str) -> Any:
        return open(path, mode)


def test_remote_copy_is_staged_once_and_a_planted_one_replaced(tmp_path: Path) -> None:
    """The SSH login node's copy (DataTransfer: sftp): written when missing, kept when right, and a
    planted one (attack as above, on the login node) replaced."""
    hs = _fresh()
    sftp: Any = _LocalSftp()
    tmp_path = tmp_path / "data" / "root"  # not there yet: made as upload_tree makes a job dir's parents
    assert stage_helpers(sftp, str(tmp_path), hs) is True
    assert stage_helpers(sftp, str(tmp_path), hs) is False
    runner = _runner(hs, tmp_path)
    os.chmod(runner.parent, 0o755)
    os.chmod(runner, 0o755)
    runner.write_bytes(EVIL)
    assert stage_helpers(sftp, str(tmp_path), hs) is True
    assert runner.read_bytes() == dict(hs.files)["pod_runner.sh"]
    assert stat.S_IMODE(os.lstat(runner).st_mode) == 0o555 and stat.S_IMODE(os.lstat(runner.parent).st_mode) == 0o511
    assert sorted(os.listdir(tmp_path / "helpers")) == [hs.digest]
