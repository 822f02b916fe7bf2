"""The Podman backend's start step for bind sources, right before every ``podman run`` / ``podman start``.

Each source is opened from its root without following a symlink (core/volumes/bindcheck.py); a refused source
keeps the container waiting, as the kubelet does, with ``CreateContainerConfigError`` and a message
naming the volume (retried with the back-off). A rootful plugin then pins what it opened, as the
kubelet does for subPaths since CVE-2017-1002101: the ``O_PATH`` fd (``/proc/self/fd/N``) is
bind-mounted on a private path (``<StateDir>/binds-<instance>/``, 0700), podman binds that path, and
the pin is unmounted once podman has started the container (the container keeps its own mount). So a
container running beside it that swaps the directory after the check cannot win a race against the
runtime's mount. Where the plugin may not mount (rootless podman), the check alone stands.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import os
import re
import stat
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interlink_plugins.core.runtimes.containers import _csv_field
from interlink_plugins.core.volumes import bindcheck
from interlink_plugins.podman.plan import CreateError
from interlink_plugins.podman.spec import ContainerSpec

log = logging.getLogger(__name__)

_MS_BIND = 0x1000
_MS_REC = 0x4000
_MNT_DETACH = 2
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_libc = ctypes.CDLL(None, use_errno=True)
_swept: set[str] = set()  # pin dirs cleared of what an earlier process left (once per process)


@dataclass
class Pins:
    """The sources of one start, pinned where possible: rewrite podman's argv, then release."""

    moved: dict[str, str] = field(default_factory=dict)  # source -> pinned path

    def argv(self, words: Sequence[str]) -> list[str]:
        """`words` with every ``--mount`` source that was pinned replaced by its pin."""
        if not self.moved:
            return list(words)
        out = []
        for word in words:
            if word.startswith("--mount="):
                for source, pin in self.moved.items():  # spec.py: type=bind,source=...,destination=...
                    word = word.replace(f",{_csv_field('source=' + source)},", f",{_csv_field('source=' + pin)},", 1)
            out.append(word)
        return out

    async def release(self) -> None:
        if self.moved:
            await asyncio.to_thread(_release, list(self.moved.values()))
            self.moved.clear()


async def check_binds(
    errors: MutableMapping[str, CreateError], pod_id: str, container: ContainerSpec, run: int, run_dir: Path,
    *, pin_dir: Path | None = None, pin_key: str = "",
) -> Pins | None:
    """The pins for this start of `container` (nothing to pin: empty), or None when a source is refused:
    then the refusal is recorded in `errors` (the pod's create errors) and in the run's ``error`` file,
    and the start must not happen. `pin_dir` None: check only."""
    if not container.binds:
        return Pins()
    try:
        return await asyncio.to_thread(_check_and_pin, container.binds, pin_dir, f"{pin_key}-{container.name}-{run}")
    except bindcheck.Refused as exc:
        problem = str(exc)
    previous = errors.get(container.name)
    attempts = previous.attempts + 1 if previous is not None and previous.run == run else 1
    now = time.time()
    errors[container.name] = CreateError(run, bindcheck.REASON, problem, now, attempts)
    record = {"create": True, "reason": bindcheck.REASON, "message": problem, "at": now, "attempts": attempts}
    await asyncio.to_thread(_write_record, run_dir / "error", json.dumps(record))
    log.warning("podman pod %s: container %s run %s not started: %s", pod_id, container.name, run, problem)
    return None


def _check_and_pin(binds: Sequence[bindcheck.BindSource], pin_dir: Path | None, key: str) -> Pins:
    fds = []
    pins = Pins()
    try:
        for bind in binds:
            fds.append(bindcheck.open_source(bind))  # every source checked before anything is pinned
        if pin_dir is None or os.geteuid() != 0:
            return pins
        _prepare(pin_dir)
        for index, (bind, fd) in enumerate(zip(binds, fds, strict=True)):
            if bind.source in pins.moved:
                continue
            target = pin_dir / _SAFE.sub("-", f"{key}-{index}")
            try:
                _pin(fd, target)
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EACCES):  # no mount privilege here: the check alone
                    log.debug("bind pin %s: %s (the check alone protects this start)", target, exc)
                    continue
                raise
            pins.moved[bind.source] = str(target)
        return pins
    except BaseException:
        _release(list(pins.moved.values()))
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _prepare(pin_dir: Path) -> None:
    pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(pin_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{pin_dir} is not a directory of this uid")
    os.chmod(pin_dir, 0o700)
    if str(pin_dir) not in _swept:  # pins a killed plugin left mounted
        _swept.add(str(pin_dir))
        _release([str(pin_dir / name) for name in os.listdir(pin_dir)])


def _pin(fd: int, target: Path) -> None:
    _release([str(target)])
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.mkdir(target, 0o700)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    # the kernel follows the magic link to what the fd holds: no path is resolved again
    if _libc.mount(f"/proc/self/fd/{fd}".encode(), str(target).encode(), None, _MS_BIND | _MS_REC, None) != 0:
        code = ctypes.get_errno()
        _release([str(target)])
        raise OSError(code, f"bind-mounting the checked source on {target}: {os.strerror(code)}")


def _release(targets: Sequence[str]) -> None:
    """Unmount (detached: the containers keep their own mounts) and remove each pin; never recursive."""
    for target in targets:
        _libc.umount2(target.encode(), _MNT_DETACH)
        try:
            mode = os.lstat(target).st_mode
            (os.rmdir if stat.S_ISDIR(mode) else os.unlink)(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("bind pin %s not removed: %s", target, exc)


def _write_record(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
