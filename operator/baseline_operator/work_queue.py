"""The engine's work queue: namespace names to reconcile, each at most once at a time.

Watch events only enqueue a name; a burst of events for one namespace costs one pass (deduplicated). A name
enqueued while a worker holds it is handed out again when that worker is done, so no event is lost. Two
priorities: what an event brought (a new namespace, a drift, a changed baseline) goes before the backstop's
periodic pass over every namespace, so a roll-out or a repair never waits behind thousands of checks.
Failed namespaces come back after an exponential back-off (0.5 s doubling to 60 s), and timed wake-ups
(a fight's pause ending) are kept per namespace, the earliest one only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, get_beating

if TYPE_CHECKING:
    from collections.abc import Callable


class Priority(IntEnum):
    """Lower goes first."""

    EVENT = 0
    BACKSTOP = 1


@dataclass
class _Retry:
    delay: float
    handle: asyncio.TimerHandle | None = None


class WorkQueue:
    """Namespaces waiting for a worker, deduplicated, with retries and wake-ups."""

    def __init__(
        self,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._monotonic = monotonic
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._queued: dict[str, Priority] = {}
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._retries: dict[str, _Retry] = {}
        self._wakeups: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._waiting_since: dict[str, float] = {}

    def enqueue(self, name: str, priority: Priority = Priority.EVENT) -> None:
        """Reconcile `name` soon (once, however many times it is enqueued meanwhile)."""
        self._waiting_since.setdefault(name, self._monotonic())
        if name in self._active:
            self._again.add(name)
            return
        queued = self._queued.get(name)
        if queued is not None and queued <= priority:
            return
        # A name waiting as backstop work that an event now needs moves up; its old entry is skipped.
        self._queued[name] = priority
        self._queue.put_nowait((priority, next(self._order), name))

    async def take(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> tuple[str, float]:
        """The next name to reconcile, and since when it has waited (for the latency histograms)."""
        while True:
            priority, _, name = await get_beating(self._queue, heartbeat)
            if self._queued.get(name) != priority:
                continue  # superseded by an entry of higher priority, or taken already
            del self._queued[name]
            self._active.add(name)
            return name, self._waiting_since.pop(name, self._monotonic())

    def done(self, name: str) -> None:
        """A worker finished `name`; if it was enqueued meanwhile, it goes again."""
        self._active.discard(name)
        if name in self._again:
            self._again.discard(name)
            self.enqueue(name)

    def give_back(self, name: str) -> None:
        """A worker failed before it could reconcile `name` (it crashed): another one takes it."""
        self._active.discard(name)
        self._again.discard(name)
        self.enqueue(name)

    def retry_later(self, name: str) -> None:
        """Enqueue `name` again after its back-off, which doubles with each failure in a row."""
        retry = self._retries.setdefault(name, _Retry(self._retry_initial))
        if retry.handle is not None:
            return

        def fire() -> None:
            retry.handle = None
            self.enqueue(name)

        retry.handle = asyncio.get_running_loop().call_later(retry.delay, fire)
        retry.delay = min(retry.delay * 2, self._retry_max)

    def succeeded(self, name: str) -> None:
        """`name` was reconciled without a failure worth retrying: its back-off starts over."""
        retry = self._retries.pop(name, None)
        if retry is not None and retry.handle is not None:
            retry.handle.cancel()

    def wake(self, name: str, at: float) -> None:
        """Enqueue `name` at monotonic time `at` (a paused repair may go on then); keeps the earliest."""
        scheduled = self._wakeups.get(name)
        if scheduled is not None and scheduled[0] <= at:
            return
        if scheduled is not None:
            scheduled[1].cancel()

        def fire() -> None:
            self._wakeups.pop(name, None)
            self.enqueue(name)

        delay = max(0.0, at - self._monotonic()) + 0.05
        self._wakeups[name] = (at, asyncio.get_running_loop().call_later(delay, fire))

    def forget(self, name: str) -> None:
        """The namespace is gone: no retry or wake-up for it any more."""
        self.succeeded(name)
        scheduled = self._wakeups.pop(name, None)
        if scheduled is not None:
            scheduled[1].cancel()
        self._waiting_since.pop(name, None)

    def cancel_timers(self) -> None:
        for retry in self._retries.values():
            if retry.handle is not None:
                retry.handle.cancel()
        for _, handle in self._wakeups.values():
            handle.cancel()

    def waiting(self) -> int:
        return len(self._queued)

    def retrying(self, name: str) -> bool:
        return name in self._retries
