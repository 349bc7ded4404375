"""Keeps admission protection's parameter current: the namespace label keys the Enforce baselines read.

manifests/admission/selection-labels.yaml refuses changes of those keys on enforced namespaces, reading
them from a ConfigMap in the operator's namespace. This writes that ConfigMap whenever the keys change
(a baseline added, changed or deleted), and nothing when they did not: a restart reads it once and,
finding it current, writes nothing. A failed write is retried with back-off until it lands.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from baseline_operator import kube
from baseline_operator.builders.protected_labels import (
    PROTECTED_LABELS_NAME,
    build_protected_labels,
    published_keys,
)
from baseline_operator.selection import protected_label_keys
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, wait_beating

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from baseline_operator.observed import ObservedBaseline

logger = logging.getLogger(__name__)


@dataclass
class ProtectedLabelsPublisher:
    """Writes the protected label keys of `baselines()` to the ConfigMap in `namespace`, when they change."""

    api: kube.KubeApi
    namespace: str
    baselines: Callable[[], Iterable[ObservedBaseline]]
    retry_initial: float = 0.5
    retry_max: float = 60.0
    _wanted: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _published: tuple[str, ...] | None = field(default=None, init=False)

    def baselines_changed(self) -> None:
        self._wanted.set()

    async def run(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        delay = self.retry_initial
        self._wanted.set()  # the first look, at start-up
        while True:
            await wait_beating(self._wanted, heartbeat)
            self._wanted.clear()
            try:
                await self._publish()
            except kube.ApiError as error:
                logger.warning("protected label keys not written (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                self._wanted.set()
            else:
                delay = self.retry_initial

    async def _publish(self) -> None:
        keys = protected_label_keys(self.baselines())
        if self._published is None:
            stored = await self.api.get(kube.CONFIG_MAP, self.namespace, PROTECTED_LABELS_NAME)
            self._published = published_keys(stored)
        if keys == self._published:
            return
        await self.api.apply(build_protected_labels(keys, self.namespace))
        self._published = keys
        logger.info("protected namespace label keys: %s", ", ".join(keys) or "none")
