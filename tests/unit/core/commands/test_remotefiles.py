"""SSH runner and remote job files: the parts that need no login node (the e2e suite has the real one)."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import shlex
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import paramiko
import pytest

from interlink_plugins.backends import parse_config
from interlink_plugins.core import safefs
from interlink_plugins.core.commands.local import CommandFailed
from interlink_plugins.core.commands.remotefiles import (
    RemoteJobFiles,
    _tail_argv,
    dump_argv,
    parse_dump,
    state_path,
    sync_mirror,
    upload_tree,
)
from interlink_plugins.core.commands.ssh import (
    HostKeyError,
    SshRunner,
    SshTarget,
    _check_host_key,
    fingerprint,
    remote_command,
    target_from_config,
)
from interlink_plugins.core.errors import ConfigError


@pytest.mark.parametrize(
    "argv",
    [["echo", "a b", "$(touch x)", "`x`", "it's", "", "a\nb", "*", "--", "é"], ["sbatch", "--comment=il:u@i", "/j d/x"]],
)
def test_remote_command_gives_the_remote_shell_the_same_words(argv: list[str]) -> None:
    line = remote_command(argv)
    assert shlex.split(line) == argv
    # the remote login shell (sh here) splits it back into exactly these words, running nothing
    out = subprocess.run(["sh", "-c", "printf '%s\\0' " + remote_command(argv[1:] or [""])], capture_output=True,
                         check=True)
    assert out.stdout.split(b"\0")[:-1] == [a.encode() for a in (argv[1:] or [""])]


def test_remote_command_env_goes_through_env() -> None:
    assert shlex.split(remote_command(["squeue"], {"A": "x y"})) == ["env", "A=x y", "squeue"]


class _FakeTransport:
    def __init__(self, key: paramiko.PKey) -> None:
        self.key = key

    def get_remote_server_key(self) -> paramiko.PKey:
        return self.key


def test_host_key_mismatch_and_unknown_host_name_host_and_fingerprints(tmp_path: Path) -> None:
    keys = []
    for name in ("offered", "other"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
        keys.append(paramiko.Ed25519Key.from_private_key_file(str(tmp_path / name)))
    offered, other = keys
    known = tmp_path / "known_hosts"
    known.write_text(f"[login.example]:2222 {other.get_name()} {other.get_base64()}\n")
    target = SshTarget(host="login.example", port=2222, user="u", known_hosts=str(known))
    with pytest.raises(HostKeyError) as err:
        _check_host_key(_FakeTransport(offered), target)  # type: ignore[arg-type]
    text = str(err.value)
    assert "[login.example]:2222" in text and fingerprint(offered) in text and fingerprint(other) in text
    with pytest.raises(HostKeyError, match="is not in"):
        _check_host_key(_FakeTransport(offered), SshTarget(host="other", user="u", known_hosts=str(known)))  # type: ignore[arg-type]
    known.write_text(f"[login.example]:2222 {offered.get_name()} {offered.get_base64()}\n")
    _check_host_key(_FakeTransport(offered), target)  # type: ignore[arg-type]


def test_unreachable_host_fails_fast_with_backoff_naming_host_and_command() -> None:
    async def main() -> tuple[str, str]:
        runner = SshRunner(SshTarget(host="127.0.0.1", port=1, user="u", key_file="/nonexistent", known_hosts="/x",
                                     connect_timeout=2))
        with pytest.raises(CommandFailed) as first:
            await runner.run(["squeue", "-h"], timeout=5)
        with pytest.raises(CommandFailed) as second:
            await runner.run(["sbatch", "x"], timeout=5)
        await runner.close()
        return str(first.value), str(second.value)

    first, second = asyncio.run(main())
    assert first.startswith("squeue: ssh u@127.0.0.1:1") and "refused" in first.lower()
    assert second.startswith("sbatch: ssh u@127.0.0.1:1 unreachable (next attempt in")


def test_ssh_config_keys() -> None:
    config, warnings = parse_config(
        {"SshHost": "login.hpc", "SshUser": "me", "SshPort": 2222, "SshJumpHost": "bastion.hpc:2200",
         "SshKeyFile": "/k", "SshCertificateFile": "/k-cert.pub", "SshKnownHosts": "/kh", "DataTransfer": "sftp"},
        environ={},
    )
    assert not warnings
    target = target_from_config(config)
    assert (target.host, target.port, target.user, target.certificate_file) == ("login.hpc", 2222, "me", "/k-cert.pub")
    assert target.jump is not None and (target.jump.host, target.jump.port, target.jump.user) == ("bastion.hpc", 2200, "me")
    for key, value in (("SshJumpHost", "a b"), ("DataTransfer", "nfs"), ("SshPoolSize", 0),
                       ("ApptainerOptions", {"privileged": True}), ("ImageOverrides", {"x": "relative.sif"}),
                       ("RegistryCredentials", {"reg.io": {"Username": "u", "Password": "a\nb"}})):
        with pytest.raises(ConfigError, match=key):
            parse_config({key: value}, environ={})


def _dump(job_dirs: list[str]) -> bytes:
    """The real dump command (sh, GNU find and tar, head) run here, as the login node runs it."""
    out = subprocess.run(dump_argv(job_dirs), capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dump_takes_regular_state_files_only(tmp_path: Path) -> None:
    job = tmp_path / "data" / "ns-1"
    (job / "c" / "a").mkdir(parents=True)
    for name, text in (("started", "T1\n"), ("exit", "0\n"), ("log", "x\n"), ("env.nul", "S=secret\0"),
                       ("exit.tmp.123", "9\n"), ("waiting", "Reason two\nlines\n")):
        (job / "c" / "a" / name).write_text(text)
    os.mkfifo(job / "c" / "a" / ".stdout")
    os.mkfifo(job / "c" / "a" / "ready")
    secret = tmp_path / "secret"
    secret.write_text("login-node secret\n")
    (job / "c" / "a" / "reason").symlink_to(secret)
    with open(job / "c" / "a" / "last", "wb") as huge:
        huge.truncate(300 << 20)  # sparse: never sent
    (job / "pod.exit").write_text("0\n")
    dump = parse_dump(_dump([str(job), str(tmp_path / "data" / "missing")]))
    assert dump.complete
    assert dump.files == {f"{job}/c/a/started": b"T1\n", f"{job}/c/a/exit": b"0\n", f"{job}/pod.exit": b"0\n",
                          f"{job}/c/a/waiting": b"Reason two\nlines\n"}
    with pytest.raises(ValueError, match="control characters"):
        dump_argv([str(tmp_path / "data" / "ns\n-2")])


def test_a_newline_in_a_name_never_forges_another_pods_state(tmp_path: Path) -> None:
    """Attack: pod A makes `c/x\n<B's job dir>/c/main/` and an `exit` in it; the line-based dump gave
    B the exit code A wrote. Tar frames every name; only each job dir's exact layout is taken."""
    data = tmp_path / "data"
    attacker, victim = data / "ns-a", data / "ns-b"
    (victim / "c" / "main").mkdir(parents=True)
    (victim / "c" / "main" / "started").write_text("T0\n")
    forged = attacker / "c" / f"x\n{victim}" / "c" / "main"
    forged.mkdir(parents=True)
    (forged / "exit").write_text("42\n")
    (attacker / "c" / "y\n").mkdir(parents=True)
    (attacker / "c" / "y\n" / "exit").write_text("7\n")
    dump = parse_dump(_dump([str(attacker), str(victim)]))
    files = RemoteJobFiles(None, str(data), tmp_path / "local", timeout=1)  # type: ignore[arg-type]
    files._apply([str(attacker), str(victim)], dump)
    mirror = tmp_path / "local" / "mirror"
    assert sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*") if p.is_file()) == ["ns-b/c/main/started"]
    assert state_path(str(attacker), f"{attacker}/c/x\n{victim}/c/main/exit") is None
    assert state_path(str(victim), f"{victim}/c/main/exit") == "c/main/exit"


def test_a_cut_dump_keeps_the_last_state_of_the_pods_it_did_not_reach(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = [data / f"ns-{i}" for i in range(3)]
    for job in jobs:
        (job / "c" / "main").mkdir(parents=True)
        (job / "c" / "main" / "started").write_text(f"{job.name}\n")
    files = RemoteJobFiles(None, str(data), tmp_path / "local", timeout=1)  # type: ignore[arg-type]
    whole = _dump([str(j) for j in jobs])
    files._apply([str(j) for j in jobs], parse_dump(whole))
    for job in jobs:
        (job / "c" / "main" / "exit").write_text("0\n")
    output = _dump([str(j) for j in jobs])
    with tarfile.open(fileobj=io.BytesIO(output), mode="r|") as archive:
        at = next(m.offset_data for m in archive if m.name.startswith(f"{jobs[1]}/"))
    cut = parse_dump(output[: at + 1])  # ns-0 whole, then the cut inside ns-1's first file
    assert not cut.complete and f"{jobs[0]}/c/main/exit" in cut.files
    files._apply([str(j) for j in jobs], cut)
    mirror = tmp_path / "local" / "mirror"
    assert (mirror / "ns-0" / "c" / "main" / "exit").read_text() == "0\n"
    assert not (mirror / "ns-1" / "c" / "main" / "exit").exists()  # cut or not reached: as it was
    assert not (mirror / "ns-2" / "c" / "main" / "exit").exists()
    assert (mirror / "ns-2" / "c" / "main" / "started").read_text() == "ns-2\n"


def test_the_mirror_is_written_without_following_links(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    where = safefs.Location(tmp_path, ("mirror",))
    sync_mirror(where, {}, {"c/a/exit": b"0\n", "c/a/waiting": b"w\n"})
    sync_mirror(where, {"c/a/exit": b"0\n", "c/a/waiting": b"w\n"}, {"c/a/exit": b"1\n"})
    assert (mirror / "c/a/exit").read_bytes() == b"1\n" and not (mirror / "c/a/waiting").exists()
    target = tmp_path / "target"
    target.mkdir()
    (mirror / "c" / "b").symlink_to(target)
    with pytest.raises(safefs.Refused):
        sync_mirror(where, {}, {"c/b/exit": b"1\n"})
    assert list(target.iterdir()) == []


def test_follow_script_never_interpolates_the_path(tmp_path: Path) -> None:
    path = tmp_path / "it's $(touch x) dir" / "log"
    path.parent.mkdir()
    path.write_text("hello\n")
    argv = _tail_argv(str(path), 2)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"llo\n"  # from offset 2
    proc.stdin.close()  # type: ignore[union-attr]  # the channel is gone: tail is killed
    assert proc.wait(timeout=10) is not None
    assert not (tmp_path / "x").exists()


class _LocalSftp:
    """The SFTPClient calls upload_tree makes, on the local filesystem."""

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(path, mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def remove(self, path: str) -> None:
        os.remove(path)

    def symlink(self, source: str, dest: str) -> None:
        os.symlink(source, dest)

    def open(self, path: str, mode: str) -> Any:
        handle = open(path, mode)  # noqa: SIM115
        handle.set_pipelined = lambda _on: None  # type: ignore[attr-defined]
        handle.chmod = lambda m: os.chmod(path, m)  # type: ignore[attr-defined]
        return handle


def test_upload_keeps_modes_symlinks_and_a_private_job_dir(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "volumes" / "sec").mkdir(parents=True)
    (stage / "volumes" / "sec" / "token").write_bytes(b"s3cret")
    os.chmod(stage / "volumes" / "sec" / "token", 0o400)
    (stage / "emptydir" / "work").mkdir(parents=True)
    os.chmod(stage / "emptydir" / "work", 0o777)
    (stage / "pod-runner.sh").write_text("#!/bin/bash\n")
    os.chmod(stage / "pod-runner.sh", 0o700)
    (stage / "c" / "jobscript").mkdir(parents=True)
    (stage / "c" / "a").symlink_to("jobscript")
    remote = tmp_path / "root" / "data" / "ns-uid"
    for _ in range(2):  # a re-upload (after a crash) meets the 0400 file and rewrites it
        assert upload_tree(_LocalSftp(), stage, str(remote)) == 2  # type: ignore[arg-type]
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)  # noqa: E731
    assert mode(remote) == 0o700 and mode(remote / "volumes/sec/token") == 0o400
    assert (remote / "volumes/sec/token").read_bytes() == b"s3cret"
    assert mode(remote / "emptydir/work") == 0o777 and mode(remote / "pod-runner.sh") == 0o700
    assert os.readlink(remote / "c" / "a") == "jobscript"


def test_fetch_missing_log_removes_the_copy(tmp_path: Path) -> None:
    from interlink_plugins.core.commands.remotefiles import fetch_into

    class Missing:
        def lstat(self, path: str) -> None:
            raise FileNotFoundError(errno.ENOENT, "no such file")

    local = tmp_path / "copy"
    local.write_text("old")
    assert fetch_into(Missing(), "/r/log", safefs.Location(tmp_path, ("copy",))) is False  # type: ignore[arg-type]
    assert not local.exists()


def test_fetch_refuses_a_log_that_is_not_a_regular_file(tmp_path: Path) -> None:
    """Attack: the remote log is a symlink (or FIFO): SFTP would follow it; the lstat check refuses it."""
    from interlink_plugins.core.commands.remotefiles import fetch_into

    class Sftp(_LocalSftp):  # stand-in: SFTP's lstat/open on this host's files
        def lstat(self, path: str) -> os.stat_result:
            return os.lstat(path)

    secret = tmp_path / "secret"
    secret.write_text("login-node secret\n")
    (tmp_path / "log").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    copy = safefs.Location(tmp_path, ("copies", "log"))
    for remote in ("log", "fifo"):
        with pytest.raises(safefs.Refused):
            fetch_into(Sftp(), str(tmp_path / remote), copy)  # type: ignore[arg-type]
    assert not (tmp_path / "copies" / "log").exists()


# --------------------------------------------------------------------------- a Follow of a remote log


class _GatedLocalSsh:
    """STAND-IN for the login node's SshRunner (the e2e suite has the real one): ``stream`` runs the command
    here (the real follow script, a real ``tail -F``) and passes its output on only while ``gate`` is open, as
    a remote tail that polls the file once a second, or a channel being reconnected, lags the remote log;
    ``sftp`` works on this host's files."""

    label = "stand-in"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    async def stream(self, argv: list[str], *, open_timeout: float, keep_stdin: bool = False) -> Any:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        async def chunks() -> Any:
            assert proc.stdout is not None and proc.stdin is not None
            try:
                while data := await proc.stdout.read(1 << 16):
                    await self.gate.wait()
                    yield data
            finally:
                proc.stdin.close()  # the channel is gone: the script kills tail
                await proc.wait()

        return chunks()

    async def sftp(self, work: Any, *, timeout: float, what: str) -> Any:
        class Sftp(_LocalSftp):
            def lstat(self, path: str) -> os.stat_result:
                return os.lstat(path)

        return await asyncio.to_thread(work, Sftp())


def test_a_follow_of_a_remote_log_ends_only_once_its_copy_has_the_last_line(tmp_path: Path) -> None:
    """The container ends while the local copy of its log lags the remote one (the remote tail has not
    polled yet, the connection is being reopened): the Follow delivers every line up to the end, as a
    kubelet's does, and ends then."""
    from interlink_plugins.core.commands.remotefiles import LogFeed
    from interlink_plugins.core.records.state import PodRecord
    from interlink_plugins.core.records.status import ContainerFiles
    from interlink_plugins.core.service import LogRequest
    from tests.podfactory import container, pod_body
    from tests.unit.fakes import FakeBackend, make_service

    ssh = _GatedLocalSsh()

    class RemoteFeeds(FakeBackend):  # its logs are followed through RemoteJobFiles, over the stand-in
        remote_logs = True
        remote: RemoteJobFiles

        async def open_log_feed(self, record: PodRecord, container: str) -> LogFeed:
            return await self.remote.open_feed(record.job_dir, container)

    backend = RemoteFeeds(tmp_path / "jobs")
    backend.remote = RemoteJobFiles(ssh, str(backend.data_root), tmp_path / "local", timeout=5)  # type: ignore[arg-type]
    service, _, _ = make_service(tmp_path, backend)
    body = pod_body("p", [container("c", ["true"])])
    uid = body["pod"]["metadata"]["uid"]

    async def scenario() -> bytes:
        await service.create(body)
        record = service.store.get(uid)
        assert record is not None
        log = Path(record.job_dir) / "c" / "c" / "log"
        log.parent.mkdir(parents=True)
        log.write_bytes(b"2027-01-15T08:00:01.000000000Z stdout F first\n")
        backend.run(uid)
        await service.poll_once()
        stream = await service.open_follow(LogRequest(pod_uid=uid, container="c", follow=True))
        assert await anext(stream) == b"first\n"
        ssh.gate.clear()  # from here the copy lags the remote log
        with log.open("ab") as remote:
            remote.write(b"2027-01-15T08:00:02.000000000Z stdout F last\n")
        backend.files[uid] = {"c": ContainerFiles(started="2027-01-15T08:00:00Z", finished="2027-01-15T08:00:02Z",
                                                  exit_code=0)}
        await service.poll_once()

        async def rest() -> bytes:
            return b"".join([chunk async for chunk in stream])

        after = asyncio.create_task(rest())
        await asyncio.sleep(1.5)  # several of the Follow's reads, and its linger, with the container terminated
        ssh.gate.set()  # the copy catches up
        return await asyncio.wait_for(after, 20)

    assert asyncio.run(scenario()) == b"last\n"


def test_the_catch_up_size_of_a_remote_log_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """Attack: the job replaces its log by a symlink to a huge file; the Follow's catch-up reads the size of
    the link itself (lstat), so the stream waits for nothing it would never copy."""
    from interlink_plugins.core.commands.remotefiles import _size_or_zero

    class Sftp(_LocalSftp):  # stand-in: SFTP's lstat on this host's files
        def lstat(self, path: str) -> os.stat_result:
            return os.lstat(path)

    huge = tmp_path / "huge"
    with huge.open("wb") as out:
        out.truncate(1 << 30)  # sparse: 1 GiB in size, no blocks
    log = tmp_path / "log"
    log.symlink_to(huge)
    sftp: Any = Sftp()
    assert _size_or_zero(sftp, str(log)) == os.lstat(log).st_size < 4096
    assert _size_or_zero(sftp, str(tmp_path / "absent")) == 0
