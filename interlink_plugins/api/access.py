"""Who may call the API: the plugin's own uid, AllowedClientUids and AllowedClientGids.

A unix-socket caller's groups are the kernel's (SO_PEERCRED, SO_PEERGROUPS); a TCP caller's are those
of its account in the user database. With AllowNetworkBind, a peer on another host cannot be identified
and is let in: only the network (a firewall) keeps others out then.
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from dataclasses import dataclass, field

from interlink_plugins.api.peers import Caller
from interlink_plugins.config import Config

GROUPS_CACHE_SECONDS = 60.0


@dataclass
class ClientPolicy:
    own_uid: int
    uids: frozenset[int]  # the plugin's own uid included
    gids: frozenset[int]
    allow_remote: bool  # AllowNetworkBind: peers on other hosts, which have no uid, are let in
    _groups: dict[int, tuple[float, frozenset[int]]] = field(default_factory=dict, repr=False)

    def allows(self, caller: Caller) -> bool:
        if caller.uid is None:
            return self.allow_remote and not caller.local
        if caller.uid in self.uids:
            return True
        if not self.gids:
            return False
        groups = set(caller.gids) | self.account_groups(caller.uid)
        return not self.gids.isdisjoint(groups)

    def account_groups(self, uid: int) -> frozenset[int]:
        """The groups of `uid`'s account (primary and supplementary), cached for a minute: a TCP caller's
        groups are not in the kernel's socket table, and the user database may be a slow directory."""
        now = time.monotonic()
        cached = self._groups.get(uid)
        if cached is not None and now - cached[0] < GROUPS_CACHE_SECONDS:
            return cached[1]
        try:
            account = pwd.getpwuid(uid)
            groups = frozenset(os.getgrouplist(account.pw_name, account.pw_gid))
        except KeyError:
            groups = frozenset()
        self._groups[uid] = (now, groups)
        return groups

    def describe(self) -> str:
        """For the start-up log line and `check`: who may call."""
        parts = [f"uid {self.own_uid}{_user(self.own_uid, 'the plugin')}"]
        parts += [f"uid {uid}{_user(uid)}" for uid in sorted(self.uids - {self.own_uid})]
        parts += [f"gid {gid}{_group(gid)}" for gid in sorted(self.gids)]
        text = ", ".join(parts)
        if self.allow_remote:
            text += "; and any peer on another host (AllowNetworkBind: not identified)"
        return text


def client_policy(config: Config) -> ClientPolicy:
    own = os.geteuid()
    return ClientPolicy(
        own_uid=own,
        uids=frozenset({own, *config.allowed_client_uids}),
        gids=frozenset(config.allowed_client_gids),
        allow_remote=config.allow_network_bind,
    )


def _user(uid: int, role: str = "") -> str:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = ""
    words = [word for word in (name, role) if word]
    return f" ({', '.join(words)})" if words else ""


def _group(gid: int) -> str:
    try:
        return f" ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return ""
