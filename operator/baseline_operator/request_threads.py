"""Threads for the blocking requests, each answer handed straight to the event loop that asked.

`loop.run_in_executor` with a `ThreadPoolExecutor` wraps every call twice: a `concurrent.futures.Future`
(with a lock and a condition of its own), chained to an asyncio future by two more callbacks. Profiled in
a roll-out over 1000 namespaces, that plumbing was about a tenth of the operator's CPU, one request per
object written. Here a job is a tuple on a `SimpleQueue` (a C queue, no condition), and the thread that
ran it settles the caller's asyncio future with one `call_soon_threadsafe`.

Like an executor's, a job already running is never interrupted: a caller that stops waiting (cancelled,
timed out) finds its future cancelled and the answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_Result = TypeVar("_Result")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", "Callable[..., Any]", tuple[Any, ...]]


class RequestThreads:
    """`size` threads, started with the first job, running blocking calls for coroutines: `size` at once."""

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def run(self, call: Callable[..., _Result], *args: Any) -> asyncio.Future[_Result]:
        """`call(*args)` on one of the threads; its result (or exception) when awaited."""
        if self._closed:
            raise RuntimeError("the request threads are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result] = loop.create_future()
        if not self._threads:
            for number in range(self._size):
                thread = threading.Thread(target=self._work, daemon=True, name=f"{self._name}_{number}")
                thread.start()
                self._threads.append(thread)
        self._jobs.put((loop, future, call, args))
        return future

    def close(self) -> None:
        """Let every thread end after the job it is running; a job not started yet is cancelled."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    with contextlib.suppress(RuntimeError):  # its event loop is closed: nobody waits
                        job[0].call_soon_threadsafe(job[1].cancel)
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call, args = job
            try:
                result = call(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, whatever it was
                _settle_soon(loop, future, None, error)
            else:
                _settle_soon(loop, future, result, None)
            del job, loop, future, call, args  # hold nothing of a finished job while waiting for the next


def _settle_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None
) -> None:
    with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is waiting
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: the caller stopped waiting
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
