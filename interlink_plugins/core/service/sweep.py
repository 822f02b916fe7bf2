"""Blocking work over many items in one worker thread, with a time bound per item.

The poller reads every tracked pod's runner files in one pass. A job controls its job dir, and a read
there can block in the kernel (a hung network file system, a FUSE mount the job made): one pod must
never stall the others. ``bounded_map`` runs the items one after the other in a worker thread and
watches it: an item that takes longer than the bound is given up (its thread is left to finish on
its own) and a new worker goes on with the next item. An item still running from an earlier pass is
not started again (``busy``): it is given up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome(Generic[T, R]):
    done: list[tuple[T, R]] = field(default_factory=list)
    given_up: list[T] = field(default_factory=list)  # over the bound, or still running from before
    failed: list[tuple[T, Exception]] = field(default_factory=list)


class StuckItems:
    """Keys of items whose work is still running in a given-up thread (shared across passes)."""

    def __init__(self) -> None:
        self._since: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def add(self, key: Hashable) -> None:
        with self._lock:
            self._since.setdefault(key, time.monotonic())

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._since.pop(key, None)

    def since(self, key: Hashable) -> float | None:
        with self._lock:
            return self._since.get(key)


class _Pass(Generic[T, R]):
    def __init__(self, items: list[T], work: Callable[[T], R], key: Callable[[T], Hashable], stuck: StuckItems,
                 wake: Callable[[], None]) -> None:
        self.items = items
        self.work = work
        self.key = key
        self.stuck = stuck
        self.wake = wake
        self.lock = threading.Lock()
        self.next = 0
        self.generation = 0
        self.current: tuple[int, float] | None = None  # (index, started) of the active worker
        self.results: dict[int, R] = {}
        self.errors: dict[int, Exception] = {}
        self.given_up: list[int] = []
        self.finished = False

    def start_worker(self) -> None:
        threading.Thread(target=self._run, args=(self.generation,), name="sweep", daemon=True).start()

    def _run(self, generation: int) -> None:
        while True:
            with self.lock:
                if generation != self.generation:
                    return
                while self.next < len(self.items) and self.stuck.since(self.key(self.items[self.next])) is not None:
                    self.given_up.append(self.next)  # still running from an earlier pass
                    self.next += 1
                if self.next >= len(self.items):
                    self.finished, self.current = True, None
                    self.wake()
                    return
                index = self.next
                self.next += 1
                self.current = (index, time.monotonic())
            item = self.items[index]
            result: R | None = None
            error: Exception | None = None
            try:
                result = self.work(item)
            except Exception as exc:  # one item's failure is its own
                error = exc
            with self.lock:
                if generation != self.generation:
                    late = True
                else:
                    late = False
                    if error is not None:
                        self.errors[index] = error
                    else:
                        self.results[index] = result  # type: ignore[assignment]
            if late:
                self.stuck.discard(self.key(item))  # the given-up work ended at last
                return

    def give_up_current(self) -> bool:
        """Give up the active item if it ran past the bound; True when a new worker must start."""
        with self.lock:
            if self.finished or self.current is None:
                return False
            index, _started = self.current
            self.given_up.append(index)
            self.stuck.add(self.key(self.items[index]))
            self.generation += 1
            self.current = None
            return True

    def overdue(self, bound: float) -> bool:
        with self.lock:
            return self.current is not None and time.monotonic() - self.current[1] > bound


async def bounded_map(
    items: list[T], work: Callable[[T], R], *, bound: float, key: Callable[[T], Hashable], stuck: StuckItems
) -> Outcome[T, R]:
    """``work(item)`` for every item, in order, in a worker thread; items over ``bound`` seconds (or still
    running from an earlier pass) are given up, an item whose work raised is reported as failed."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def wake_up() -> None:
        loop.call_soon_threadsafe(wake.set)

    sweep: _Pass[T, R] = _Pass(items, work, key, stuck, wake_up)
    sweep.start_worker()
    while not sweep.finished:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(0.01, bound / 4))
        wake.clear()
        if sweep.overdue(bound) and sweep.give_up_current():
            sweep.start_worker()
    outcome: Outcome[T, R] = Outcome()
    given_up = set(sweep.given_up)
    for index, item in enumerate(items):
        if index in sweep.results:
            outcome.done.append((item, sweep.results[index]))
        elif index in sweep.errors:
            outcome.failed.append((item, sweep.errors[index]))
        elif index in given_up:
            outcome.given_up.append(item)
    return outcome
