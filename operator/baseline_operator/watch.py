"""Lean watches for the kinds with many objects: namespaces, the managed kinds, the default ServiceAccounts.

kopf hands every event to a task of the object's own and keeps bookkeeping per object (its memory, the
causes it detects, the many arguments of a handler call): in a roll-out that was more than a third of the
operator's CPU, spent mostly on the events our own writes cause (a label patch on every namespace among
them). An event of these kinds only updates the cache and may enqueue its namespace, so here it is read
and handed over, nothing more. Baselines and ClusterRoles, few and rarely changing, stay with kopf.

A watch resumes from the last resource version it saw, so nothing is missed across a dropped connection
or an API server away for minutes; when that version is too old (410 Gone) the kind is listed again and
the caller is told, so that it can drop what was deleted meanwhile (a list says what exists, not what
went away).
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baseline_operator import failpoints, kube
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

_QUICK_END_SECONDS = 1.0
"""A watch that ends sooner than this without an event is a failure too: back off instead of spinning."""


class _ExpiredError(Exception):
    """The watch's resource version is too old to resume from: list again."""


@dataclass
class KindWatch:
    """List-then-watch of one kind, forever; every event goes to `on_event(type, object)`.

    `resource_version` is where to start (the version of the list that filled the cache; empty: list
    first). Types are ADDED, MODIFIED and DELETED; after a new list its items come as ADDED and then
    `on_relisted()` is called.
    """

    api: kube.KubeApi
    kind: kube.Kind
    resource_version: str
    on_event: Callable[[str, Mapping[str, Any]], None]
    on_relisted: Callable[[], None]
    field_selector: str | None = None
    backoffs: Sequence[float] = (0.5, 1.0, 2.0)
    """Waits after consecutive failures; the last one repeats, never given up (an API server away for
    minutes must find the watch waiting, and be noticed within seconds of its return)."""
    timeout_seconds: int = 300
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    async def run(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        """Watch for ever. Beats on every batch (bookmarks come about every minute) and every new watch."""
        failures = 0
        while True:
            heartbeat.beat()
            started, events, failed = time.monotonic(), 0, False
            try:
                if not self.resource_version:
                    await self._relist()
                async for batch in self.api.watch(
                    self.kind,
                    resource_version=self.resource_version,
                    field_selector=self.field_selector,
                    timeout_seconds=self.timeout_seconds,
                ):
                    await failpoints.hit(f"watch.{self.kind.plural}")
                    heartbeat.beat()
                    events += len(batch)
                    for event in batch:
                        self._handle(event)
            except _ExpiredError:
                self._expired()
            except kube.ApiError as error:
                if error.status == http.HTTPStatus.GONE:
                    self._expired()
                else:
                    failed = True
                    log = logger.warning if failures == 0 else logger.debug
                    log("watch of %s failed: %s", self.kind.plural, error)
            # A watch that brought events, or ran its course, went well; one refused, or ended at once
            # without an event (even an expiry right after a new list), backs off instead of spinning.
            if not failed and (events or time.monotonic() - started >= _QUICK_END_SECONDS):
                failures = 0
                continue
            failures += 1
            await self.sleep(self.backoffs[min(failures, len(self.backoffs)) - 1])

    def _expired(self) -> None:
        logger.info("watch of %s expired at %s; listing again", self.kind.plural, self.resource_version)
        self.resource_version = ""

    def _handle(self, event: Mapping[str, Any]) -> None:
        event_type = str(event.get("type") or "")
        body: Mapping[str, Any] = event.get("object") or {}
        if event_type == "ERROR":
            code = int(body.get("code") or 0)
            if code == http.HTTPStatus.GONE:
                raise _ExpiredError
            raise kube.ApiError(code or 500, str(body.get("reason") or ""), str(body.get("message") or ""))
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if event_type in {"ADDED", "MODIFIED", "DELETED"}:
            self._deliver(event_type, body)

    async def _relist(self) -> None:
        version = ""
        async for page in self.api.list_pages(self.kind, field_selector=self.field_selector):
            for item in page.items:
                self._deliver("ADDED", item)
            version = page.resource_version
        self.resource_version = version
        self.on_relisted()

    def _deliver(self, event_type: str, body: Mapping[str, Any]) -> None:
        try:
            self.on_event(event_type, body)
        except Exception:  # one bad event must not end the watch of a whole kind
            metadata = body.get("metadata") or {}
            logger.exception(
                "handling %s of %s %s/%s failed",
                event_type,
                self.kind.kind,
                metadata.get("namespace"),
                metadata.get("name"),
            )
