"""The request threads: results and exceptions reach the coroutine, and at most `size` calls run at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from baseline_operator.request_threads import RequestThreads


def test_results_and_exceptions_reach_the_caller_from_another_thread() -> None:
    threads = RequestThreads(2, "test")

    def where(value: int) -> tuple[int, str]:
        return value * 2, threading.current_thread().name

    def fail() -> None:
        raise ConnectionResetError("reset")

    async def scenario() -> None:
        doubled, name = await threads.run(where, 21)
        assert doubled == 42
        assert name.startswith("test_")
        with pytest.raises(ConnectionResetError, match="reset"):
            await threads.run(fail)

    try:
        asyncio.run(scenario())
    finally:
        threads.close()


def test_no_more_than_size_calls_run_at_once_and_all_of_them_run() -> None:
    threads = RequestThreads(3, "test")
    lock = threading.Lock()
    running = [0, 0]  # now, most ever

    def call(index: int) -> int:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return index

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(threads.run(call, index) for index in range(12))))

    try:
        assert asyncio.run(scenario()) == list(range(12))
    finally:
        threads.close()
    assert running[1] == 3


def test_a_caller_that_stops_waiting_gets_no_answer_and_close_cancels_what_has_not_started() -> None:
    threads = RequestThreads(1, "test")
    release = threading.Event()

    async def scenario() -> None:
        running = threads.run(release.wait, 5)
        queued = threads.run(time.sleep, 0)
        running.cancel()  # as a timed-out request would be
        threads.close()
        release.set()
        await asyncio.sleep(0.05)
        assert running.cancelled()
        assert queued.cancelled()
        with pytest.raises(RuntimeError, match="closed"):
            threads.run(time.sleep, 0)

    asyncio.run(scenario())
