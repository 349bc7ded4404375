"""Kubernetes Events on SecurityBaselines, rate-limited so that a drift storm cannot flood the API.

Each drift becomes one Warning Event (`DriftDetected`, `DriftRepaired` or `DriftFight`) whose
involved object is the SecurityBaseline; `kubectl describe securitybaseline <name>` lists them.
SecurityBaselines are cluster-scoped, so, as the API conventions have it for cluster-scoped
objects, the Events go to the `default` namespace (configurable).

Posting is best-effort and never blocks reconciling: events wait in a bounded queue and a single
task posts them. A token bucket (a burst, then a steady rate) bounds how many reach the API server;
what it holds back is counted per baseline and summarised in one Event once tokens are back, so a
storm of 200 deletions costs a few dozen Events, not 200.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baseline_operator import kube
from baseline_operator.identity import FIELD_MANAGER
from baseline_operator.status import timestamp
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, get_beating

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("baseline_operator.events")

_MAX_MESSAGE = 1024


@dataclass(frozen=True)
class EventSettings:
    """Where Events go and how many may be posted: a burst, then `per_second`."""

    namespace: str = "default"
    burst: int = 25
    per_second: float = 2.0
    queue_size: int = 500


@dataclass(frozen=True)
class _Pending:
    baseline: str
    baseline_uid: str
    reason: str
    message: str
    at: dt.datetime


class _TokenBucket:
    def __init__(self, burst: int, per_second: float, clock: Callable[[], float]) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class EventRecorder:
    """Queues Events on SecurityBaselines and posts them, within the rate limit, from one task."""

    def __init__(
        self,
        api: kube.KubeApi,
        settings: EventSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_suppressed: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings or EventSettings()
        self._api = api
        self._bucket = _TokenBucket(self.settings.burst, self.settings.per_second, clock)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(self.settings.queue_size)
        self._suppressed: dict[tuple[str, str], int] = {}
        self._instance = socket.gethostname()
        self._on_suppressed = on_suppressed
        self.posted = 0

    def warn(self, baseline: str, baseline_uid: str, reason: str, message: str) -> None:
        """Post a Warning Event on a baseline soon, or count it as suppressed by the rate limit."""
        pending = _Pending(baseline, baseline_uid, reason, message, dt.datetime.now(dt.UTC))
        if not self._bucket.take():
            self._suppress(pending)
            return
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self._suppress(pending)

    @property
    def suppressed(self) -> int:
        return sum(self._suppressed.values())

    def _suppress(self, pending: _Pending) -> None:
        key = (pending.baseline, pending.baseline_uid)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        self._on_suppressed()

    async def run(self, heartbeat: Heartbeat = NO_HEARTBEAT, summary_interval: float = 10.0) -> None:
        """Post queued Events until cancelled; summarise suppressed ones every `summary_interval`."""
        summarise = asyncio.create_task(self._summarise(summary_interval))
        try:
            while True:
                await self._post(await get_beating(self._queue, heartbeat))
                heartbeat.beat()
        finally:
            summarise.cancel()

    async def _summarise(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for (baseline, uid), count in list(self._suppressed.items()):
                if not self._bucket.take():
                    break
                del self._suppressed[(baseline, uid)]
                await self._post(
                    _Pending(
                        baseline,
                        uid,
                        "DriftEventsSuppressed",
                        f"{count} further drift Events were not posted (rate limit); "
                        "status.recentDrift and the operator's metrics count every drift",
                        dt.datetime.now(dt.UTC),
                    )
                )

    async def _post(self, pending: _Pending) -> None:
        try:
            await self._api.create(self._body(pending))
            self.posted += 1
        except kube.ApiError as error:
            logger.warning("event %s on %s not posted: %s", pending.reason, pending.baseline, error)

    def _body(self, pending: _Pending) -> dict[str, Any]:
        at = timestamp(pending.at)
        kind = kube.SECURITY_BASELINE
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pending.baseline}.", "namespace": self.settings.namespace},
            "involvedObject": {
                "apiVersion": kind.api_version,
                "kind": kind.kind,
                "name": pending.baseline,
                "uid": pending.baseline_uid,
            },
            "type": "Warning",
            "reason": pending.reason,
            "message": pending.message[:_MAX_MESSAGE],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self._instance,
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        }
