"""SshRunner: the CommandRunner protocol over a small pool of persistent SSH connections (paramiko).

One connection carries up to ``max_sessions`` channels at once (OpenSSH's ``MaxSessions``, 10 by
default); a command takes one channel for its run, a log stream (``tail -F``) holds one for its
whole life. Connections are opened on demand up to ``pool_size`` and kept, so a 100-pod run costs
sshd a handful of logins, not one per command.

Safety and failure rules:

* The host key is checked against ``known_hosts`` before authentication: an unknown host or a
  wrong entry fails every command, naming host and fingerprints, and nothing is executed.
* The private key (and its OpenSSH certificate) is read again on every (re)connect, so a
  certificate renewed on disk (CINECA's last 12 h) is picked up without a restart.
* Every command has a timeout; on expiry its channel is closed. A failed connect is retried
  with an exponential back-off; meanwhile commands fail fast (``CommandFailed`` naming host and
  command), which the backends turn into "backend unavailable" (deferred submission, 200s).
* A command whose channel could not even be opened is retried once on a fresh connection (it
  never ran); a command that was started is never re-run here.

The remote side receives one string per command: the argv joined with ``shlex.join`` (the SSH
protocol carries a command line, and the remote login shell splits it back into the same words).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paramiko

from interlink_plugins.core.commands.local import CommandFailed, CommandResult

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_BYTES = 1 << 16
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. ``jump`` is an optional bastion reached first (same key, same known_hosts)."""

    host: str
    user: str
    port: int = 22
    key_file: str = ""
    certificate_file: str = ""
    known_hosts: str = ""
    jump: SshTarget | None = None
    connect_timeout: float = 10.0
    keepalive: float = 15.0

    @property
    def label(self) -> str:
        via = f" via {self.jump.label}" if self.jump else ""
        return f"{self.user}@{self.host}:{self.port}{via}"


@dataclass(frozen=True)
class SshPoolSettings:
    pool_size: int = 2
    max_sessions: int = 10
    stream_share: float = 0.5  # at most this share of all sessions may be held by log streams


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyError(paramiko.SSHException):
    pass


def _load_key(target: SshTarget) -> paramiko.PKey:
    if not target.key_file:
        raise paramiko.AuthenticationException("no SshKeyFile configured")
    key = paramiko.PKey.from_path(target.key_file)
    if target.certificate_file:
        key.load_certificate(target.certificate_file)
    return key


def _check_host_key(transport: paramiko.Transport, target: SshTarget) -> None:
    offered = transport.get_remote_server_key()
    name = _known_hosts_name(target.host, target.port)
    if not target.known_hosts:
        raise HostKeyError(
            f"no SshKnownHosts configured: refusing {name} ({offered.get_name()} {fingerprint(offered)})"
        )
    try:
        known = paramiko.HostKeys(target.known_hosts)
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts {target.known_hosts}: {exc.strerror}") from exc
    entries = known.lookup(name)
    if not entries:
        raise HostKeyError(
            f"host {name} is not in {target.known_hosts} (it offers {offered.get_name()} {fingerprint(offered)})"
        )
    expected = entries.get(offered.get_name())
    if expected is None or expected.asbytes() != offered.asbytes():
        listed = ", ".join(f"{kind} {fingerprint(k)}" for kind, k in entries.items())
        raise HostKeyError(
            f"host key mismatch for {name}: it offers {offered.get_name()} {fingerprint(offered)}, "
            f"{target.known_hosts} lists {listed}"
        )


def open_transport(target: SshTarget) -> paramiko.Transport:
    """Connect, verify the host key, authenticate (blocking). The jump host, if any, first."""
    jump_transport: paramiko.Transport | None = None
    sock: Any
    if target.jump is not None:
        jump_transport = open_transport(target.jump)
        try:
            sock = jump_transport.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=target.connect_timeout
            )
        except Exception:
            jump_transport.close()
            raise
    else:
        sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
        # without TCP_NODELAY every exec waits on Nagle + delayed ACK (~45 ms instead of ~4 ms)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = target.connect_timeout
        transport.start_client(timeout=target.connect_timeout)
        _check_host_key(transport, target)
        transport.auth_publickey(target.user, _load_key(target))
        if not transport.is_authenticated():
            raise paramiko.AuthenticationException("public key refused")
        transport.set_keepalive(int(target.keepalive))
    except BaseException:
        transport.close()
        if jump_transport is not None:
            jump_transport.close()
        raise
    if jump_transport is not None:
        transport._il_jump = jump_transport  # type: ignore[attr-defined]  # kept alive with it
    return transport


def close_transport(transport: paramiko.Transport) -> None:
    with contextlib.suppress(Exception):
        transport.close()
    jump = getattr(transport, "_il_jump", None)
    if jump is not None:
        with contextlib.suppress(Exception):
            jump.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timed out ({text})"
    return text


@dataclass(eq=False)
class _Conn:
    transport: paramiko.Transport
    sessions: int = 0
    streams: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.transport.is_active()


class SshPool:
    """Persistent connections, channel slots per connection, reconnect back-off (asyncio side)."""

    def __init__(self, target: SshTarget, settings: SshPoolSettings | None = None) -> None:
        self.target = target
        self.settings = settings or SshPoolSettings()
        self._conns: list[_Conn] = []
        self._cond: asyncio.Condition | None = None
        self._cond_loop: asyncio.AbstractEventLoop | None = None
        self._connecting = False
        self._failed_at = 0.0
        self._backoff = 0.0
        self._last_error = ""
        workers = max(8, self.settings.pool_size * self.settings.max_sessions + 4)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssh")
        self.connects = 0  # logins made (the e2e test compares it with sshd's log)

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._cond_loop is not loop:
            self._cond, self._cond_loop = asyncio.Condition(), loop
        return self._cond

    def _stream_cap(self) -> int:
        total = self.settings.pool_size * self.settings.max_sessions
        return max(1, int(total * self.settings.stream_share))

    async def acquire(self, *, stream: bool, timeout: float) -> _Conn:
        """A connection with a free channel slot (opening one if needed); the slot is taken."""
        cond = self._condition()
        deadline = time.monotonic() + timeout
        async with cond:
            while True:
                self._conns = [c for c in self._conns if c.alive or c.sessions]
                live = [c for c in self._conns if c.alive]
                if stream and sum(c.streams for c in live) >= self._stream_cap():
                    raise CommandFailed(
                        ["ssh"], f"ssh {self.target.label}: {self._stream_cap()} log streams already open (the limit)"
                    )
                free = [c for c in live if c.sessions < self.settings.max_sessions]
                if free:
                    conn = min(free, key=lambda c: c.sessions)
                    conn.sessions += 1
                    conn.streams += 1 if stream else 0
                    return conn
                if len(live) < self.settings.pool_size and not self._connecting:
                    self._check_backoff()
                    self._connecting = True
                    try:
                        conn = await self._connect()
                    finally:
                        self._connecting = False
                        cond.notify_all()
                    conn.sessions += 1
                    conn.streams += 1 if stream else 0
                    self._conns.append(conn)
                    return conn
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandFailed(["ssh"], f"ssh {self.target.label}: no free session within {timeout:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), remaining)

    def _check_backoff(self) -> None:
        if self._failed_at and time.monotonic() < self._failed_at + self._backoff:
            wait = self._failed_at + self._backoff - time.monotonic()
            raise CommandFailed(
                ["ssh"], f"ssh {self.target.label} unreachable (next attempt in {wait:.1f}s): {self._last_error}"
            )

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            transport = await loop.run_in_executor(self.executor, open_transport, self.target)
        except Exception as exc:
            self._failed_at = time.monotonic()
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_INITIAL, self._backoff * 2))
            self._last_error = _describe(exc)
            log.warning("ssh %s: connect failed (retry in %.1fs): %s", self.target.label, self._backoff,
                        self._last_error)
            raise CommandFailed(["ssh"], f"ssh {self.target.label}: {self._last_error}") from exc
        if self._failed_at:
            log.info("ssh %s: connected again", self.target.label)
        self._failed_at, self._backoff, self._last_error = 0.0, 0.0, ""
        self.connects += 1
        log.debug("ssh %s: connection %d open in %.3fs", self.target.label, self.connects, time.monotonic() - started)
        return _Conn(transport)

    async def release(self, conn: _Conn, *, stream: bool, broken: bool = False) -> None:
        cond = self._condition()
        async with cond:
            conn.sessions -= 1
            conn.streams -= 1 if stream else 0
            if broken and conn.alive:
                close_transport(conn.transport)
            if not conn.alive and conn.sessions == 0:
                with contextlib.suppress(ValueError):
                    self._conns.remove(conn)
            cond.notify_all()

    def drop(self, conn: _Conn) -> None:
        """Forget a connection that failed (its transport is closed)."""
        close_transport(conn.transport)

    async def close(self) -> None:
        for conn in self._conns:
            close_transport(conn.transport)
        self._conns.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)


def remote_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command line sent over SSH: every word quoted, env through env(1)."""
    if not argv:
        raise ValueError("empty argv")
    words = list(argv)
    if env:
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    return shlex.join(words)


class _Cancelled(Exception):
    pass


class _NotStarted(Exception):
    """The channel could not be opened or the exec request failed: the command never ran."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _open_exec(transport: paramiko.Transport, command: str, deadline: float) -> paramiko.Channel:
    try:
        chan = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _NotStarted(exc) from exc
    try:
        chan.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        chan.close()
        raise _NotStarted(exc) from exc
    return chan


def _exec_blocking(
    transport: paramiko.Transport,
    command: str,
    stdin: bytes | None,
    deadline: float,
    cancel: threading.Event,
) -> tuple[int, bytes, bytes]:
    """Run one command on a new channel; (exit status, stdout, stderr). Raises on timeout."""
    chan = _open_exec(transport, command, deadline)
    try:
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        out: list[bytes] = []
        err: list[bytes] = []
        fd = chan.fileno()
        while True:
            got = False
            if chan.recv_ready():
                out.append(chan.recv(READ_BYTES))
                got = True
            if chan.recv_stderr_ready():
                err.append(chan.recv_stderr(READ_BYTES))
                got = True
            if got:
                continue
            if chan.eof_received or chan.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if cancel.is_set():
                raise _Cancelled
            select.select([fd], [], [], min(remaining, 0.5))
        remaining = deadline - time.monotonic()
        if not chan.status_event.wait(max(0.0, remaining)):
            raise TimeoutError
        return chan.recv_exit_status(), b"".join(out), b"".join(err)
    finally:
        chan.close()


def _recv_some(chan: paramiko.Channel, wait: float) -> bytes | None:
    """Stdout bytes available within ``wait`` seconds (b"" if none yet), None at the end of the stream."""
    if not chan.recv_ready():
        if chan.eof_received or chan.closed:
            return None
        select.select([chan.fileno()], [], [], wait)
    if chan.recv_ready():
        return bytes(chan.recv(READ_BYTES))
    while chan.recv_stderr_ready():
        chan.recv_stderr(READ_BYTES)  # drained so a chatty stderr never stalls the channel
    return None if (chan.eof_received or chan.closed) and not chan.recv_ready() else b""


class SshRunner:
    """``CommandRunner`` over SSH: same argv, timeout and result contract as ``LocalRunner``."""

    def __init__(self, target: SshTarget, settings: SshPoolSettings | None = None) -> None:
        self.pool = SshPool(target, settings)
        self.target = target

    @property
    def label(self) -> str:
        return self.target.label

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        command = remote_command(argv, env)
        started = time.monotonic()
        deadline = started + timeout
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            conn = await self._acquire(argv, deadline)
            cancel = threading.Event()
            broken = False
            try:
                future = loop.run_in_executor(
                    self.pool.executor, _exec_blocking, conn.transport, command, stdin, deadline, cancel
                )
                status, out, err = await asyncio.shield(future)
            except asyncio.CancelledError:
                cancel.set()
                raise
            except TimeoutError:
                raise CommandFailed(
                    argv, f"ssh {self.label}: timed out after {timeout:g}s (channel closed)"
                ) from None
            except _NotStarted as exc:
                broken = True
                if attempt == 1:
                    log.info("ssh %s: connection lost before %s started; retrying on a new one", self.label, argv[0])
                    continue
                raise CommandFailed(argv, f"ssh {self.label}: {_describe(exc.cause)}") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                broken = True
                raise CommandFailed(argv, f"ssh {self.label}: {_describe(exc)}") from exc
            finally:
                await self.pool.release(conn, stream=False, broken=broken)
            result = CommandResult(tuple(argv), status if status >= 0 else 255, out, err, time.monotonic() - started)
            log.debug("ssh ran %s rc=%s in %.3fs", argv[0], result.returncode, result.seconds)
            return result
        raise AssertionError("unreachable")

    async def stream(
        self, argv: Sequence[str], *, open_timeout: float, keep_stdin: bool = False
    ) -> AsyncIterator[bytes]:
        """Start ``argv`` and return its stdout as it comes (a long-lived channel, e.g. ``tail -F``).

        The channel is opened before this returns (CommandFailed if the host cannot be reached); it
        holds one session slot until the iterator is closed. With ``keep_stdin`` the command's stdin
        stays open until then, so it can tell when the stream is gone.
        """
        command = remote_command(argv)
        deadline = time.monotonic() + open_timeout
        loop = asyncio.get_running_loop()
        try:
            conn = await self.pool.acquire(stream=True, timeout=open_timeout)
        except CommandFailed as exc:
            raise CommandFailed(argv, exc.detail) from None
        try:
            chan = await loop.run_in_executor(self.pool.executor, _open_exec, conn.transport, command, deadline)
        except _NotStarted as exc:
            await self.pool.release(conn, stream=True, broken=True)
            raise CommandFailed(argv, f"ssh {self.label}: {_describe(exc.cause)}") from exc
        except BaseException:
            await self.pool.release(conn, stream=True)
            raise
        if not keep_stdin:
            chan.shutdown_write()
        return self._chunks(conn, chan)

    async def _chunks(self, conn: _Conn, chan: paramiko.Channel) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.run_in_executor(self.pool.executor, _recv_some, chan, 0.5)
                if data is None:
                    return
                if data:
                    yield data
        finally:
            chan.close()
            await self.pool.release(conn, stream=True)

    async def sftp(self, work: Callable[[paramiko.SFTPClient], T], *, timeout: float, what: str) -> T:
        """Run ``work`` (blocking) with an SFTP session on a pooled connection, within ``timeout``."""
        argv = ["sftp", what]
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            conn = await self._acquire(argv, deadline)
            broken = False
            try:
                return await asyncio.wait_for(
                    loop.run_in_executor(self.pool.executor, _with_sftp, conn.transport, work, deadline),
                    max(0.1, deadline - time.monotonic()),
                )
            except TimeoutError:
                broken = True
                raise CommandFailed(argv, f"ssh {self.label}: sftp {what} timed out after {timeout:g}s") from None
            except _NotStarted as exc:
                broken = True
                if attempt == 1:
                    continue
                raise CommandFailed(argv, f"ssh {self.label}: sftp {what}: {_describe(exc.cause)}") from exc
            except (paramiko.SSHException, EOFError) as exc:
                broken = True
                raise CommandFailed(argv, f"ssh {self.label}: sftp {what}: {_describe(exc)}") from exc
            finally:
                await self.pool.release(conn, stream=False, broken=broken)
        raise AssertionError("unreachable")

    async def _acquire(self, argv: Sequence[str], deadline: float) -> _Conn:
        try:
            return await self.pool.acquire(stream=False, timeout=max(0.1, deadline - time.monotonic()))
        except CommandFailed as exc:
            raise CommandFailed(argv, exc.detail) from None

    async def close(self) -> None:
        await self.pool.close()


def _with_sftp(transport: paramiko.Transport, work: Callable[[paramiko.SFTPClient], T], deadline: float) -> T:
    try:
        chan = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
        chan.invoke_subsystem("sftp")
        client = paramiko.SFTPClient(chan)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _NotStarted(exc) from exc
    try:
        chan.settimeout(max(0.1, deadline - time.monotonic()))
        return work(client)
    finally:
        client.close()


def target_from_config(config: Any) -> SshTarget:
    """The SshTarget of the plugin config (Ssh* keys); the jump host shares key and known_hosts."""
    import getpass
    import os

    user = config.ssh_user or getpass.getuser()
    known_hosts = config.ssh_known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    jump: SshTarget | None = None
    if config.ssh_jump_host:
        jump_user, _, rest = config.ssh_jump_host.rpartition("@")
        jump_host, _, jump_port = rest.partition(":")
        jump = SshTarget(
            host=jump_host, user=jump_user or user, port=int(jump_port or 22), key_file=config.ssh_key_file,
            certificate_file=config.ssh_certificate_file, known_hosts=known_hosts,
            connect_timeout=config.ssh_connect_timeout,
        )  # fmt: skip
    return SshTarget(
        host=config.ssh_host, user=user, port=config.ssh_port, key_file=config.ssh_key_file,
        certificate_file=config.ssh_certificate_file, known_hosts=known_hosts, jump=jump,
        connect_timeout=config.ssh_connect_timeout,
    )  # fmt: skip


_RUNNERS: dict[tuple[SshTarget, SshPoolSettings], SshRunner] = {}


def ssh_runner(config: Any) -> SshRunner:
    """The one SshRunner (one pool) of this config: the CLI's command runner and the backend's file access."""
    settings = SshPoolSettings(pool_size=config.ssh_pool_size, max_sessions=config.ssh_max_sessions)
    key = (target_from_config(config), settings)
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = _RUNNERS[key] = SshRunner(key[0], settings)
    return runner
