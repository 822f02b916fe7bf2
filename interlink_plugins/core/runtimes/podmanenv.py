"""A container's env for podman without a value in any argv: a private ``--env-file``, plus podman
secrets of type env for the values that file cannot carry.

podman 4.x reads ``--env-file`` line by line (Go ``bufio.Scanner``): a value cannot hold a newline,
loses a final carriage return, and a line of 64 KiB or more fails the whole run (measured with
podman 4.3.1). Such values go through ``podman secret create NAME FILE`` (bytes as they are) and
``--secret=NAME,type=env,target=VAR``; podman resolves them when the container starts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from interlink_plugins.core.errors import PodSpecError

# bufio.MaxScanTokenSize is 64 KiB: stay clear of it (the line ending counts too)
MAX_LINE_BYTES = 60 * 1024
# podman 4.3 (and later): at most 64 of [a-zA-Z0-9-_.], starting and ending with a letter or digit
_SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class PodmanEnv:
    env_file: bytes  # NAME=VALUE lines in podman's --env-file format
    secrets: tuple[tuple[str, str, bytes], ...]  # (secret name, variable, value) of the other values


def fits_env_file(name: str, value: str) -> bool:
    """True when podman's --env-file gives this value back byte for byte."""
    line = f"{name}={value}".encode()
    return "\n" not in value and not value.endswith("\r") and len(line) < MAX_LINE_BYTES


def secret_name(base: str, index: int) -> str:
    """A podman secret name for the env value ``index`` of the container ``base`` (unique per run target).

    ``base`` (``il-<instance>-<pod uid>-<container>``) as it is when podman takes it; else a digest of it,
    with the pod's uid kept readable (``il-<uid>-<digest>-e<index>``) so an admin still sees whose it is.
    """
    name = f"{base}-env{index}"
    if _SECRET_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()
    uid = _UUID.search(base)
    name = f"il-{uid.group(0)}-{digest[:16]}-e{index}" if uid else ""
    return name if _SECRET_NAME.fullmatch(name) else f"il-env-{digest[:40]}-{index}"


def podman_env(env: Mapping[str, str], base: str, field_of: Callable[[str], str]) -> PodmanEnv:
    """Split ``env`` into the env-file and the secrets; a name podman cannot pass is a 422."""
    lines: list[bytes] = []
    secrets: list[tuple[str, str, bytes]] = []
    for name, value in env.items():
        if not name or name != name.strip() or any(ch.isspace() for ch in name):
            raise PodSpecError(f"{field_of(name)}.name", "podman cannot pass a variable name with white space")
        if name.startswith("#"):
            raise PodSpecError(f"{field_of(name)}.name", "podman cannot pass a variable name starting with '#'")
        if fits_env_file(name, value):
            lines.append(f"{name}={value}\n".encode())
        else:
            secrets.append((secret_name(base, len(secrets)), name, value.encode()))
    return PodmanEnv(env_file=b"".join(lines), secrets=tuple(secrets))
