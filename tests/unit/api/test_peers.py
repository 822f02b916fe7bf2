"""api/peers.py and api/access.py: the caller of a real connection, as the kernel reports it."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from interlink_plugins.api.access import ClientPolicy
from interlink_plugins.api.peers import Caller, identify


@contextmanager
def accepted(family: int, listen: str, connect: str, *, dual_stack: bool = False) -> Iterator[socket.socket]:
    """A real loopback connection: yields the server side (the client stays open meanwhile)."""
    with socket.socket(family, socket.SOCK_STREAM) as server:
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        server.bind((listen, 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection((connect, port), timeout=5):
            conn, _ = server.accept()
            with conn:
                yield conn


def test_a_unix_peer_is_its_kernel_credentials() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        caller = identify(mine)
    assert (caller.uid, caller.pid, caller.where, caller.local) == (os.geteuid(), os.getpid(), "unix socket", True)
    assert os.getegid() in caller.gids


@pytest.mark.parametrize(("family", "listen", "connect", "dual"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1", False),
    (socket.AF_INET6, "::1", "::1", False),
    (socket.AF_INET6, "::", "127.0.0.1", True),  # an IPv4 client seen as ::ffff:127.0.0.1 (systemd's default)
])
def test_a_tcp_peer_is_the_owner_of_its_socket_in_the_kernel_table(family: int, listen: str, connect: str,
                                                                   dual: bool) -> None:
    with accepted(family, listen, connect, dual_stack=dual) as conn:
        caller = identify(conn)
    assert caller.uid == os.geteuid() and caller.local and caller.gids == ()


def test_a_peer_whose_socket_is_closed_is_not_identified_and_not_let_in() -> None:
    """A client that closed its socket before the check: the kernel keeps it (FIN_WAIT) with uid 0 and no
    inode. That is nobody, not root; and a local peer without a uid is refused even when remote peers are
    allowed. A reset connection cannot even be asked (the guard drops it)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        socket.create_connection(server.getsockname(), timeout=5).close()  # FIN
        conn, _ = server.accept()
        with conn:
            caller = identify(conn)
        reset = socket.create_connection(server.getsockname(), timeout=5)
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()  # RST
        conn, _ = server.accept()
        with conn, pytest.raises(OSError):
            identify(conn)
    assert caller.uid is None and caller.local
    assert not ClientPolicy(own_uid=os.geteuid(), uids=frozenset({os.geteuid()}), gids=frozenset(),
                            allow_remote=True).allows(caller)


def test_the_policy_admits_uids_groups_and_remote_peers_only_as_configured() -> None:
    policy = ClientPolicy(own_uid=1000, uids=frozenset({1000, 1001}), gids=frozenset({0}), allow_remote=False)
    unix = Caller(uid=2000, gids=(2000, 0), pid=1, where="unix socket", local=True)
    assert policy.allows(Caller(uid=1001, gids=(), pid=None, where="x", local=True))
    assert policy.allows(unix)  # a kernel-reported supplementary group
    assert not policy.allows(Caller(uid=2000, gids=(2000,), pid=1, where="unix socket", local=True))
    assert policy.allows(Caller(uid=0, gids=(), pid=None, where="x", local=True))  # root's account is in gid 0
    remote = Caller(uid=None, gids=(), pid=None, where="192.0.2.1:5", local=False)
    assert not policy.allows(remote)
    assert ClientPolicy(own_uid=1000, uids=frozenset({1000}), gids=frozenset(), allow_remote=True).allows(remote)
    assert "uid 1000" in policy.describe() and "uid 1001" in policy.describe() and "gid 0" in policy.describe()
