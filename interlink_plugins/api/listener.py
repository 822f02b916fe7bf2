"""Where the API listens, made safe before the first connection, and the server that runs on it.

- A unix socket (`Socket`): its directory is made 0700 (0750 with `SocketGroup`) when missing; an
  existing directory, or any directory above it, that others can write (or swap: owned by another user)
  stops start-up; the socket is 0600 (0660 with `SocketGroup`).
- TCP: a loopback `BindAddress`, or another one with `AllowNetworkBind` (warned at every start).
- Sockets passed by systemd (LISTEN_FDS): the same checks on what they are bound to.
Every connection then passes the caller check of api/guard.py.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlink_plugins.api.access import client_policy
from interlink_plugins.api.guard import guarded_protocol
from interlink_plugins.config import Config, loopback_host
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.filemodes import TRAVERSE_ONLY, make_dirs

log = logging.getLogger("interlink_plugins")

# interLink's client keeps idle connections for 120 s: the server must not close them first, or a
# request sent on a connection the server is closing fails (no retry on POST)
KEEP_ALIVE_SECONDS = 125
SYSTEMD_FIRST_FD = 3
BACKLOG = 2048


@dataclass
class Listener:
    sock: socket.socket
    where: str  # for the start-up line and `check`
    owned_path: Path | None = None  # a socket file this process made (removed at exit)


def open_listeners(config: Config, environ: Mapping[str, str] | None = None) -> list[Listener]:
    """The listening sockets of the API, checked; ConfigError names what is unsafe."""
    environ = os.environ if environ is None else environ
    count = environ.get("LISTEN_FDS", "")
    if count.isdigit() and int(count) >= 1 and environ.get("LISTEN_PID") == str(os.getpid()):
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # not for the commands the plugin runs
        return [adopt_passed_socket(fd, config) for fd in range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count))]
    if config.socket:
        return [bind_unix(Path(config.socket), config.socket_group)]
    return bind_tcp(config.bind_address, config.sidecar_port, allow_network=config.allow_network_bind)


def serve(app: Any, config: Config, listeners: list[Listener]) -> None:
    """Run the API on `listeners` until SIGTERM/SIGINT; every connection goes through the guard."""
    import uvicorn

    policy = client_policy(config)
    log.info("API callers allowed: %s", policy.describe())
    server = uvicorn.Server(uvicorn.Config(
        app,
        http=guarded_protocol(policy, config.request_read_timeout),
        ws="none",
        lifespan="on",
        proxy_headers=False,  # identity comes from the kernel, never from headers
        limit_concurrency=config.max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=5,
        log_config=None,  # uvicorn's loggers go through ours (logsetup: same JSON, same level)
        log_level=None,
    ))
    try:
        server.run(sockets=[listener.sock for listener in listeners])
    finally:
        for listener in listeners:
            _remove_own_socket(listener)


def describe_exposure(config: Config) -> list[tuple[bool, str]]:
    """For `check` and `render`: where the API would listen and who may call it, (ok, line) each."""
    lines: list[tuple[bool, str]] = []
    if config.socket:
        path = Path(config.socket)
        modes = "0660 in a 0750 directory" if config.socket_group is not None else "0600 in a 0700 directory"
        try:
            check_socket_dir(path.parent, missing_ok=True)
            lines.append((True, f"API on unix socket {path} ({modes})"))
        except ConfigError as exc:
            lines.append((False, f"API on unix socket {path}: {exc}"))
        if config.allowed_client_uids and config.socket_group is None:
            lines.append((False, "AllowedClientUids lists other users, but without SocketGroup only the plugin's uid "
                                 "can connect() to a 0600 socket"))
    elif loopback_host(config.bind_address):
        lines.append((True, f"API on http://{config.bind_address}:{config.sidecar_port} (loopback: callers "
                            "identified by uid)"))
    else:
        lines.append((True, f"API on http://{config.bind_address}:{config.sidecar_port}: NOT loopback "
                            "(AllowNetworkBind): callers from other hosts are not identified, firewall the port"))
    lines.append((True, f"API callers allowed: {client_policy(config).describe()}"))
    return lines


# --- unix socket ---------------------------------------------------------------------------


def bind_unix(path: Path, group: int | None) -> Listener:
    directory = path.parent
    if not os.path.lexists(directory):
        make_dirs(directory.parent, TRAVERSE_ONLY)
        make_dirs(directory, 0o750 if group is not None else 0o700)
        if group is not None:
            _chgrp(directory, group)
    check_socket_dir(directory)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket file is born 0600: never open, even for an instant
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Socket: cannot bind {path}: {exc.strerror}") from exc
    finally:
        os.umask(previous)
    if group is not None:
        _chgrp(path, group)
        os.chmod(path, 0o660)
    sock.listen(BACKLOG)
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    return Listener(sock, f"unix socket {path} (mode {mode:04o})", owned_path=path)


def check_socket_dir(directory: Path, *, missing_ok: bool = False) -> None:
    """Refuse a socket directory that another user could write or swap: group/world-writable, or owned by
    someone other than the plugin or root; the same for every directory above it (sticky ones, like /tmp,
    may be world-writable: nobody can rename what is ours in them)."""
    own = os.geteuid()
    current = Path(os.path.abspath(directory))
    first = True
    while True:
        try:
            info = os.stat(current)
        except FileNotFoundError:
            if not missing_ok:
                raise ConfigError(f"Socket: directory {current} does not exist") from None
            current, first = current.parent, False
            continue
        writable = stat.S_IMODE(info.st_mode) & 0o022
        if info.st_uid not in (0, own):
            raise ConfigError(f"Socket: directory {current} is owned by uid {info.st_uid}: that user could replace "
                              "the plugin's socket")
        if writable and (first or not info.st_mode & stat.S_ISVTX):
            raise ConfigError(f"Socket: directory {current} is writable by group or others (mode "
                              f"{stat.S_IMODE(info.st_mode):04o}): another user could replace the plugin's socket")
        if current == current.parent:
            return
        current, first = current.parent, False


def _remove_stale_socket(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigError(f"Socket: {path} exists and is not a socket left by this plugin's uid")
    os.unlink(path)


def _chgrp(path: Path, group: int) -> None:
    try:
        os.chown(path, -1, group, follow_symlinks=False)
    except PermissionError:
        name = _group_name(group)
        raise ConfigError(f"SocketGroup: cannot give {path} to group {name}: the plugin's user is not a "
                          "member") from None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _remove_own_socket(listener: Listener) -> None:
    """At exit, the socket file this process made (not one that replaced it meanwhile)."""
    if listener.owned_path is None:
        return
    with contextlib.suppress(OSError):
        if os.lstat(listener.owned_path).st_ino == os.fstat(listener.sock.fileno()).st_ino:
            os.unlink(listener.owned_path)


# --- TCP ---------------------------------------------------------------------------------------


def bind_tcp(host: str, port: int, *, allow_network: bool) -> list[Listener]:
    """Every address `host` resolves to, as uvicorn binds them (localhost: 127.0.0.1 and ::1)."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"BindAddress: cannot resolve {host!r}: {exc}") from exc
    listeners: list[Listener] = []
    for family, kind, proto, _name, address in dict.fromkeys((f, t, p, "", a) for f, t, p, _n, a in found):
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            for made in listeners:
                made.sock.close()
            raise ConfigError(f"cannot listen on {address[0]}:{port}: {exc.strerror}") from exc
        listeners.append(Listener(sock, ""))
        try:
            listeners[-1].where = _tcp_where(sock, allow_network)
        except ConfigError:
            for made in listeners:
                made.sock.close()
            raise
        sock.listen(BACKLOG)
    return listeners


def _tcp_where(sock: socket.socket, allow_network: bool) -> str:
    address, port = sock.getsockname()[:2]
    url = f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"
    if loopback_host(address):
        return url
    if not allow_network:
        raise ConfigError(f"the API socket is bound to {address}, not a loopback address: every host that reaches "
                          "it could run jobs as the plugin's user; set AllowNetworkBind: true to allow it")
    log.warning("BindAddress %s is not a loopback address (AllowNetworkBind: true): callers on this host are "
                "checked by uid, callers from other hosts are not identified: only a firewall keeps them out",
                address)
    return url


# --- systemd socket activation -----------------------------------------------------------------


def adopt_passed_socket(fd: int, config: Config) -> Listener:
    """A listening socket passed by systemd (fd 3, 4, ...), checked like one the plugin makes."""
    sock = socket.socket(fileno=fd)
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if not isinstance(name, str) or not name or name.startswith("\0"):
            raise ConfigError(f"the socket passed as fd {fd} is not a unix socket in the filesystem (an abstract "
                              "socket has no permissions)")
        path = Path(name)
        check_socket_dir(path.parent)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o002:
            log.warning("the socket %s passed by systemd is mode %04o: every local user can connect() (SocketMode=); "
                        "each caller is still checked by uid", path, mode)
        return Listener(sock, f"unix socket {path} passed by systemd (mode {mode:04o})")
    where = _tcp_where(sock, config.allow_network_bind)
    return Listener(sock, f"{where} passed by systemd")

