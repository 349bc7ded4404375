"""Leader election: when a replica may take the Lease, and the elector's moves against an in-memory API."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from baseline_operator import kube
from baseline_operator.leader import (
    ElectionSettings,
    LeaderElector,
    LeaseRecord,
    Sighting,
    may_take,
    next_sighting,
)

HELD = LeaseRecord(holder="pod-a", renew_time="2026-11-23T10:00:00.000000Z", duration=15)


def test_a_free_or_own_lease_may_be_taken_at_once() -> None:
    assert may_take(LeaseRecord("", "", 1), None, "pod-b", now=0)
    assert may_take(HELD, None, "pod-a", now=0)


def test_another_holders_lease_is_taken_only_after_a_whole_duration_unchanged_on_our_clock() -> None:
    assert not may_take(HELD, None, "pod-b", now=1000)  # never seen: the count starts now
    seen = Sighting(HELD, since=100)
    assert not may_take(HELD, seen, "pod-b", now=114.9)
    assert may_take(HELD, seen, "pod-b", now=115)


def test_a_renewal_restarts_the_count() -> None:
    seen = Sighting(HELD, since=100)
    renewed = LeaseRecord("pod-a", "2026-11-23T10:00:02.000000Z", 15)
    assert not may_take(renewed, seen, "pod-b", now=200)
    assert next_sighting(renewed, seen, now=200) == Sighting(renewed, 200)
    assert next_sighting(HELD, seen, now=200) is seen


def test_settings_refuse_timings_that_would_allow_two_leaders() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        ElectionSettings(namespace="ns", identity="a", lease_duration=10, renew_deadline=10)


class LeaseStore:
    """The one Lease, with resourceVersion checks, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    async def get(self, kind: kube.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        del kind, namespace, name
        return copy.deepcopy(self.lease)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise kube.ConflictError(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise kube.ConflictError(409, "Conflict", "changed")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        assert self.lease is not None
        return str(self.lease["spec"]["holderIdentity"])


def elector(store: LeaseStore, identity: str, clock: list[float]) -> LeaderElector:
    settings = ElectionSettings(namespace="baseline-system", identity=identity)
    return LeaderElector(store, settings, clock=lambda: clock[0])  # type: ignore[arg-type]


def test_the_first_candidate_creates_the_lease_the_second_waits_then_takes_an_expired_one() -> None:
    store, clock = LeaseStore(), [0.0]
    first, second = elector(store, "pod-a", clock), elector(store, "pod-b", clock)

    async def scenario() -> None:
        assert await first.try_acquire_or_renew()
        assert store.holder == "pod-a"
        assert not await second.try_acquire_or_renew()  # first sighting
        clock[0] = 10
        assert await first.try_acquire_or_renew()  # renewed: the count starts again
        assert not await second.try_acquire_or_renew()
        clock[0] = 24
        assert not await second.try_acquire_or_renew()  # 14 s unchanged: not yet
        clock[0] = 25
        assert await second.try_acquire_or_renew()
        assert store.holder == "pod-b"
        assert store.lease is not None
        assert store.lease["spec"]["leaseTransitions"] == 1

    asyncio.run(scenario())


def test_a_released_lease_is_taken_at_once() -> None:
    store, clock = LeaseStore(), [0.0]
    first, second = elector(store, "pod-a", clock), elector(store, "pod-b", clock)

    async def scenario() -> None:
        await first.acquire()
        await first.release()
        assert store.holder == ""
        assert await second.try_acquire_or_renew()
        assert store.holder == "pod-b"
        await first.release()  # not the holder any more: changes nothing
        assert store.holder == "pod-b"

    asyncio.run(scenario())


def test_a_racing_write_loses_on_the_resource_version() -> None:
    store, clock = LeaseStore(), [0.0]
    first = elector(store, "pod-a", clock)

    async def scenario() -> None:
        await first.acquire()
        stale = copy.deepcopy(store.lease)
        assert await first.try_acquire_or_renew()
        assert stale is not None
        with pytest.raises(kube.ConflictError):
            await store.replace(stale)

    asyncio.run(scenario())


class StuckStore(LeaseStore):
    """An API server that, after the first write, keeps the renewal waiting (as a long Retry-After would)."""

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return body


def test_a_renewal_held_up_past_the_renew_deadline_counts_as_lost() -> None:
    settings = ElectionSettings(
        namespace="baseline-system",
        identity="pod-a",
        lease_duration=0.6,
        renew_deadline=0.3,
        retry_period=0.05,
    )
    leader = LeaderElector(StuckStore(), settings)  # type: ignore[arg-type]

    async def scenario() -> float:
        await leader.acquire()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(leader.hold(), timeout=5)
        return asyncio.get_running_loop().time() - started

    # Lost before the Lease could expire for the others, not after the stuck call returned.
    assert asyncio.run(scenario()) < settings.lease_duration
