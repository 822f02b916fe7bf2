"""Who is on the other end of an API connection, as the kernel knows it.

interLink sends no credentials, so the caller is identified by the kernel, once per connection: on a unix
socket SO_PEERCRED (uid, gid and pid at connect time) and SO_PEERGROUPS; on TCP the owner uid of the
peer's socket in this network namespace's socket table (/proc/net/tcp and tcp6), found by the peer's
address and port. A TCP peer that is not in the table is on another host, or its socket is gone (closed:
the table then shows uid 0 and no inode): it has no uid.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_UCRED = struct.Struct("3i")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Caller:
    uid: int | None  # None: not identified (a peer on another host, or a socket already gone)
    gids: tuple[int, ...]  # from the kernel (unix socket); empty over TCP: the account's groups apply
    pid: int | None
    where: str  # "unix socket" or the peer's address:port
    local: bool  # the peer is on this host (an unidentified local peer is never let in)


def identify(sock: Any) -> Caller:
    """The caller of an accepted connection (`sock`: a socket or asyncio's/uvloop's view of one)."""
    if sock.family == socket.AF_UNIX:
        return _unix_caller(sock)
    return _tcp_caller(sock)


def _unix_caller(sock: Any) -> Caller:
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Caller(uid=uid, gids=(gid, *_peer_groups(sock)), pid=pid, where="unix socket", local=True)


def _peer_groups(sock: Any) -> tuple[int, ...]:
    for count in (64, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * count)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return ()  # an older kernel: the primary gid only
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return ()


def _tcp_caller(sock: Any) -> Caller:
    peer_host, peer_port = sock.getpeername()[:2]
    our_host, our_port = sock.getsockname()[:2]
    peer, ours = _plain(peer_host), _plain(our_host)
    uid = socket_owner((peer, peer_port), (ours, our_port))
    where = f"[{peer}]:{peer_port}" if peer.version == 6 else f"{peer}:{peer_port}"
    return Caller(uid=uid, gids=(), pid=None, where=where, local=uid is not None or is_local_address(peer))


def socket_owner(peer: tuple[IpAddress, int], ours: tuple[IpAddress, int]) -> int | None:
    """The uid owning the socket whose local end is `peer` and remote end is `ours`, from the kernel's
    table; None when no such socket is open in this network namespace."""
    port_suffix = f":{peer[1]:04X}"
    for table in TCP_TABLES:
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) < 10 or not fields[1].endswith(port_suffix):
                        continue
                    if _endpoint(fields[1]) == peer and _endpoint(fields[2]) == ours:
                        # inode 0: no process holds the socket any more (closed: FIN_WAIT, TIME_WAIT), and
                        # the kernel shows uid 0 for it: that identifies nobody
                        return int(fields[7]) if fields[9] != "0" else None
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return None


def _endpoint(text: str) -> tuple[IpAddress, int]:
    """ "0100007F:1F90" (the address as the kernel's words in host byte order) -> (127.0.0.1, 8080)."""
    address, port = text.split(":")
    words = [int(address[i : i + 8], 16) for i in range(0, len(address), 8)]
    raw = struct.pack(f"={len(words)}I", *words)
    return _plain(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)), int(port, 16)


def _plain(host: str) -> IpAddress:
    """An address with any IPv6 scope dropped and an IPv4-mapped IPv6 address as IPv4."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_local_address(address: IpAddress) -> bool:
    """Whether `address` belongs to this host: loopback, or one the kernel lets us bind."""
    if address.is_loopback:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True
