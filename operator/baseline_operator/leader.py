"""Leader election on a coordination.k8s.io Lease: one replica works, the others wait to take over.

The contract is client-go's, so that it reads the same to anyone who knows controllers:

- the holder renews the Lease every `retry_period`; if it cannot renew for `renew_deadline`, it stops
  working (the process exits and is restarted as a candidate) *before* `lease_duration` runs out, so two
  replicas never write at once;
- a candidate takes the Lease only when it is free (no holder: released on a graceful stop) or when it has
  watched the same holder and renew time for a whole `lease_duration` on its own clock: clocks of
  different machines are never compared;
- every write carries the resourceVersion it read, so two candidates racing for it cannot both win.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baseline_operator import kube
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionSettings:
    """Which Lease, who this replica is, and client-go's default timings (seconds)."""

    namespace: str
    identity: str
    lease_name: str = "baseline-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about its holder (the parts the decision needs)."""

    holder: str
    renew_time: str
    duration: float

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            renew_time=spec.get("renewTime") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
        )


@dataclass(frozen=True)
class Sighting:
    """A record as this candidate first saw it, on its own monotonic clock."""

    record: LeaseRecord
    since: float


def may_take(record: LeaseRecord, sighting: Sighting | None, identity: str, now: float) -> bool:
    """Whether `identity` may write the Lease: it is free, ours, or unchanged for a whole duration."""
    if record.holder in {"", identity}:
        return True
    return sighting is not None and sighting.record == record and now - sighting.since >= record.duration


def next_sighting(record: LeaseRecord, previous: Sighting | None, now: float) -> Sighting:
    """Keep the first sighting of an unchanged record; any renewal starts the count again."""
    if previous is not None and previous.record == record:
        return previous
    return Sighting(record, now)


class LeaderElector:
    """Acquires, renews and releases the Lease through the API layer."""

    def __init__(
        self,
        api: kube.KubeApi,
        settings: ElectionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings
        self._clock = clock
        self._sighting: Sighting | None = None

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        logger.info(
            "waiting to lead: Lease %s/%s as %s",
            self.settings.namespace,
            self.settings.lease_name,
            self.settings.identity,
        )
        while True:
            if await self.try_acquire_or_renew():
                break
            await asyncio.sleep(self.settings.retry_period)
        logger.info("leading: this replica holds Lease %s", self.settings.lease_name)

    async def hold(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        """Renew the Lease until that fails for `renew_deadline`; then return: leadership is lost."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.settings.retry_period)
            heartbeat.beat()
            # A renewal held up (a throttled API server can ask for minutes of patience) must not outlast
            # the deadline: by then a standby may be about to take over.
            left = self.settings.renew_deadline - (self._clock() - last_renewed)
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(left, 0.1))
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewed = self._clock()
            elif self._clock() - last_renewed >= self.settings.renew_deadline:
                logger.error("lost the Lease %s: could not renew it in time", self.settings.lease_name)
                return

    async def release(self) -> None:
        """On a graceful stop, free the Lease so a standby takes over at once instead of after it expires."""
        try:
            lease = await self.api.get(kube.LEASE, self.settings.namespace, self.settings.lease_name)
            if lease is None or LeaseRecord.of(lease).holder != self.settings.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            await self.api.replace(lease)
            logger.info("released the Lease %s", self.settings.lease_name)
        except kube.ApiError as error:
            logger.warning("could not release the Lease %s: %s", self.settings.lease_name, error)

    async def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the Lease if allowed; True when this replica holds it now."""
        settings = self.settings
        now = self._clock()
        try:
            lease = await self.api.get(kube.LEASE, settings.namespace, settings.lease_name)
            if lease is None:
                await self.api.create(self._lease(None, transitions=0, acquired=True))
                return True
            record = LeaseRecord.of(lease)
            if not may_take(record, self._sighting, settings.identity, now):
                self._sighting = next_sighting(record, self._sighting, now)
                return False
            taking_over = record.holder != settings.identity
            transitions = int(lease["spec"].get("leaseTransitions") or 0) + (1 if taking_over else 0)
            await self.api.replace(self._lease(lease, transitions=transitions, acquired=taking_over))
        except kube.ConflictError:
            return False  # someone else wrote it first; look again next round
        except kube.ApiError as error:
            logger.warning("Lease %s: %s", settings.lease_name, error)
            return False
        self._sighting = None
        return True

    def _lease(self, current: dict[str, Any] | None, *, transitions: int, acquired: bool) -> dict[str, Any]:
        settings = self.settings
        now = _micro_time()
        spec: dict[str, Any] = dict((current or {}).get("spec") or {})
        spec.update(
            holderIdentity=settings.identity,
            leaseDurationSeconds=int(settings.lease_duration),
            renewTime=now,
            leaseTransitions=transitions,
        )
        if acquired:
            spec["acquireTime"] = now
        metadata: dict[str, Any] = {"name": settings.lease_name, "namespace": settings.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": kube.LEASE.api_version,
            "kind": kube.LEASE.kind,
            "metadata": metadata,
            "spec": spec,
        }


def _micro_time() -> str:
    """A Lease's times are MicroTime: RFC 3339 with microseconds."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
