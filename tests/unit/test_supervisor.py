"""The supervisor restarts crashed loops and tells liveness the truth; failpoints do as they are armed."""

from __future__ import annotations

import asyncio

import pytest

from baseline_operator import failpoints, kube
from baseline_operator.supervision import Heartbeat, Supervisor, wait_beating


class Restarts:
    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def loop_restarted(self, loop: str) -> None:
        self.counted[loop] = self.counted.get(loop, 0) + 1


def test_a_crashed_loop_is_restarted_counted_and_the_process_stays_alive() -> None:
    async def scenario() -> tuple[int, list[str], dict[str, int]]:
        restarts = Restarts()
        supervisor = Supervisor(restarts)
        runs = 0

        async def flaky(heartbeat: Heartbeat) -> None:
            nonlocal runs
            runs += 1
            heartbeat.beat()
            if runs == 1:
                raise RuntimeError("boom")
            await asyncio.Event().wait()

        supervisor.start("flaky", flaky, stale_after=60)
        await asyncio.sleep(0.7)  # the first back-off is 0.5 s
        problems = supervisor.problems()
        await supervisor.stop()
        return runs, problems, restarts.counted

    runs, problems, counted = asyncio.run(scenario())
    assert runs == 2
    assert problems == []
    assert counted == {"flaky": 1}


def test_a_crash_looping_loop_fails_liveness() -> None:
    async def scenario() -> list[str]:
        supervisor = Supervisor(Restarts())

        async def broken(_: Heartbeat) -> None:
            raise RuntimeError("always")

        supervisor.start("broken", broken, stale_after=60)
        await asyncio.sleep(1.7)  # 0.5 + 1.0: the third crash comes at once after the second back-off
        problems = supervisor.problems()
        await supervisor.stop()
        return problems

    [problem] = asyncio.run(scenario())
    assert "broken crashed 3 times" in problem


def test_a_loop_that_stops_beating_fails_liveness_after_its_bound() -> None:
    now = [0.0]
    supervisor = Supervisor(Restarts(), clock=lambda: now[0])
    heartbeat = supervisor.watch("leader-election", stale_after=30)
    now[0] = 29.0
    assert supervisor.problems() == []
    heartbeat.beat()  # at 29
    now[0] = 58.0
    assert supervisor.problems() == []
    now[0] = 60.0
    [problem] = supervisor.problems()
    assert "leader-election has not made progress for 31 s (bound 30 s)" in problem


def test_an_idle_wait_keeps_beating() -> None:
    async def scenario() -> float:
        heartbeat = Heartbeat()
        first = heartbeat.last
        assert not await wait_beating(asyncio.Event(), heartbeat, at_most=0.05)
        return heartbeat.last - first

    assert asyncio.run(scenario()) > 0


def test_failpoints_do_nothing_unless_armed_then_what_they_are_armed_to() -> None:
    async def scenario() -> None:
        failpoints.arm("")
        await failpoints.hit("engine.worker")
        failpoints.arm("engine.worker=panic*1,status.write=error*2")
        with pytest.raises(failpoints.FailpointError):
            await failpoints.hit("engine.worker")
        await failpoints.hit("engine.worker")  # only once
        for _ in range(2):
            with pytest.raises(kube.ApiError):
                await failpoints.hit("status.write")
        await failpoints.hit("status.write")
        failpoints.arm("watch.namespaces=hang")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(failpoints.hit("watch.namespaces"), timeout=0.05)
        failpoints.arm("")

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="cannot read"):
        failpoints.arm("engine.worker=explode")
