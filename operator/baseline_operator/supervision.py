"""Every long-running loop under one supervisor: restarted when it crashes, and watched for a heartbeat.

An operator whose reconcile loop died while its Pod stays "healthy" enforces nothing and tells nobody. So each
loop (every watch, every reconcile worker, the status writer, the backstop, the Event sender, the publishers,
leader election) runs here: when one raises, it is logged, counted in
`baseline_operator_loop_restarts_total{loop}` and started again after a back-off (0.5 s doubling to 30 s).
Each loop beats a heartbeat while it makes progress or waits idle (`wait_beating`, `get_beating`).

Liveness (`problems()`, served on /healthz) fails when a loop crashed 3 times within a minute (crash-looping:
restarting in-process does not help, the kubelet should restart the Pod) or when its heartbeat is older than
its bound (it hangs): the kubelet restarts the Pod. The bounds: `stale_after` per loop, documented where each
loop is started (handlers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

logger = logging.getLogger(__name__)

BEAT_PERIOD: Final = 5.0
"""An idle loop beats this often while it waits."""
CRASH_WINDOW: Final = 60.0
CRASHES_TO_FAIL: Final = 3
_BACKOFFS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
_HEALTHY_RUN: Final = 60.0
"""A loop that ran this long before it crashed starts its back-off over."""

_Item = TypeVar("_Item")


class Heartbeat:
    """What a loop calls to say it is alive."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self._clock()


NO_HEARTBEAT: Final = Heartbeat()
"""For loops run outside a supervisor (unit tests, one-off runs): beats go nowhere."""


async def wait_beating(event: asyncio.Event, heartbeat: Heartbeat, at_most: float | None = None) -> bool:
    """Wait for `event` (at most `at_most` seconds), beating while waiting; whether it was set."""
    deadline = None if at_most is None else time.monotonic() + at_most
    while True:
        heartbeat.beat()
        remaining = BEAT_PERIOD if deadline is None else min(BEAT_PERIOD, deadline - time.monotonic())
        if remaining <= 0:
            return event.is_set()
        try:
            await asyncio.wait_for(event.wait(), timeout=remaining)
        except TimeoutError:
            continue
        heartbeat.beat()
        return True


async def get_beating(queue: asyncio.Queue[_Item], heartbeat: Heartbeat) -> _Item:
    """`queue.get()`, beating while the queue is empty."""
    while True:
        heartbeat.beat()
        try:
            item = await asyncio.wait_for(queue.get(), timeout=BEAT_PERIOD)
        except TimeoutError:
            continue
        heartbeat.beat()
        return item


class RestartCounter(Protocol):
    """Where restarts are counted (the metrics recorder)."""

    def loop_restarted(self, loop: str) -> None: ...


@dataclass
class _Loop:
    name: str
    stale_after: float
    heartbeat: Heartbeat
    crashes: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Runs the loops, restarts the crashed ones, and says whether the process is alive."""

    def __init__(self, restarts: RestartCounter, clock: Callable[[], float] = time.monotonic) -> None:
        self._restarts = restarts
        self._clock = clock
        self._loops: dict[str, _Loop] = {}

    def start(self, name: str, run: Callable[[Heartbeat], Awaitable[Any]], *, stale_after: float) -> None:
        """Run `run(heartbeat)` as loop `name`, for ever: restarted whenever it raises or returns."""
        loop = _Loop(name, stale_after, Heartbeat(self._clock))
        self._loops[name] = loop
        loop.task = asyncio.create_task(self._supervise(loop, run), name=name)

    def watch(self, name: str, *, stale_after: float) -> Heartbeat:
        """A heartbeat for a loop run elsewhere (leader election: never restarted, see cli.py)."""
        loop = _Loop(name, stale_after, Heartbeat(self._clock))
        self._loops[name] = loop
        return loop.heartbeat

    def forget(self, name: str) -> None:
        """A loop stopped on purpose (a watch of a kind no longer served)."""
        loop = self._loops.pop(name, None)
        if loop is not None and loop.task is not None:
            loop.task.cancel()

    async def _supervise(self, loop: _Loop, run: Callable[[Heartbeat], Awaitable[Any]]) -> None:
        failures = 0
        while True:
            started = self._clock()
            loop.heartbeat.beat()
            try:
                await run(loop.heartbeat)
                logger.error("loop %s returned; restarting it", loop.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("loop %s crashed; restarting it", loop.name)
            now = self._clock()
            loop.crashes.append(now)
            while loop.crashes and now - loop.crashes[0] > CRASH_WINDOW:
                loop.crashes.popleft()
            self._restarts.loop_restarted(loop.name)
            if now - started > _HEALTHY_RUN:
                failures = 0
            delay = _BACKOFFS[min(failures, len(_BACKOFFS) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    def problems(self) -> list[str]:
        """Why the process is not alive; empty when every loop is."""
        now = self._clock()
        found: list[str] = []
        for loop in self._loops.values():
            recent = [at for at in loop.crashes if now - at <= CRASH_WINDOW]
            if len(recent) >= CRASHES_TO_FAIL:
                found.append(f"{loop.name} crashed {len(recent)} times in {CRASH_WINDOW:.0f} s")
            elif now - loop.heartbeat.last > loop.stale_after:
                found.append(
                    f"{loop.name} has not made progress for {now - loop.heartbeat.last:.0f} s "
                    f"(bound {loop.stale_after:.0f} s)"
                )
        return found

    def loops(self) -> Iterable[str]:
        return list(self._loops)

    async def stop(self) -> None:
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
