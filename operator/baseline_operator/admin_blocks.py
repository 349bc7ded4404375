"""Keeps the Admin-tier metadata blocks: one cluster-scoped policy per baseline, where the cluster serves it.

Namespaces are the engine's business; these few cluster-scoped objects are kept here, read -> compute ->
apply like the rest: `plan_admin_blocks` (pure) decides from the cached baselines, the served tiers and the
live objects; `AdminBlockReconciler` writes, when a baseline, a tier or one of these objects changed.

No gap when switching: the engine keeps a namespace's NetworkPolicy block until the Admin-tier policy is in
force (the cache holds it), and labels the namespace for it before it prunes that block. The other way
round, a policy of ours is deleted only once no namespace carries its baseline's label any more (they have
their NetworkPolicy blocks by then, see planner.Stage), or when the same baseline's policy of the other
kind is in force. Repairs are never paused: this is the floor.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from baseline_operator import kube
from baseline_operator.builders.admin_network_policy import (
    ADMIN_TIERS,
    build_admin_metadata_block,
    effective_enforcement,
)
from baseline_operator.builders.common import METADATA_BLOCK_LABEL
from baseline_operator.compare import differences
from baseline_operator.spec import BaselineRef, MetadataEnforcement, Mode
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, wait_beating

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from baseline_operator.metrics import MetricsRecorder
    from baseline_operator.observed import ObservedBaseline, ObservedObject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdminBlockWrite:
    """Apply `body` (with `uid` as precondition when repairing), or delete the object with `uid`."""

    kind: kube.Kind
    name: str
    baseline: str
    body: dict[str, Any] | None = None
    uid: str | None = None
    drift: str | None = None
    """Missing or Modified when this repairs drift (the object was as desired before)."""


@dataclass(frozen=True)
class AdminBlockPlan:
    """The writes to make, in order, and whether a policy waits for namespaces to leave it."""

    writes: tuple[AdminBlockWrite, ...]
    waiting: bool
    """A policy no longer wanted waits for namespaces to leave it before it goes."""


def plan_admin_blocks(
    baselines: Iterable[ObservedBaseline],
    served: Iterable[str],
    live: Iterable[ObservedObject],
    labelled: Callable[[str], bool],
    *,
    priority: int,
    applied: frozenset[tuple[str, str]] = frozenset(),
) -> AdminBlockPlan:
    """The writes that bring the Admin-tier blocks about; `labelled(baseline)`: a namespace carries its label.

    `applied` are (kind, name) written before by this process: one missing now was deleted (drift).
    """
    desired = _desired_blocks(baselines, served, priority)
    by_key = {(record.kind, record.name): record for record in live}
    writes: list[AdminBlockWrite] = []
    for key, (baseline, body) in sorted(desired.items()):
        kind = kube.KINDS[key[0]]
        record = by_key.get(key)
        if record is None:
            drift = "Missing" if key in applied else None
            writes.append(AdminBlockWrite(kind, key[1], baseline, body, drift=drift))
        elif not record.labelled_ours:
            logger.warning("%s %s exists and is not the operator's: it is left alone", key[0], key[1])
        elif differences(body, record.body, record.owned):
            with_uid = {**body, "metadata": {**body["metadata"], "uid": record.uid}}
            writes.append(AdminBlockWrite(kind, key[1], baseline, with_uid, uid=record.uid, drift="Modified"))
    in_force = {(owner, kind) for (kind, name), (owner, _) in desired.items() if (kind, name) in by_key}
    waiting = False
    for record in by_key.values():
        if (record.kind, record.name) in desired or not record.managed_by_us or record.baseline is None:
            continue
        replaced = any(owner == record.baseline and kind != record.kind for owner, kind in in_force)
        if replaced or not labelled(record.baseline):
            writes.append(
                AdminBlockWrite(kube.KINDS[record.kind], record.name, record.baseline, uid=record.uid)
            )
        else:
            waiting = True
    return AdminBlockPlan(tuple(writes), waiting)


def _desired_blocks(
    baselines: Iterable[ObservedBaseline], served: Iterable[str], priority: int
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(kind, name) -> (baseline, body) of each Admin-tier block the Enforce baselines want."""
    tiers = frozenset(MetadataEnforcement(kind) for kind in served)
    desired: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for baseline in baselines:
        spec = baseline.spec
        settings = spec.network_policy if spec is not None else None
        if (
            spec is None
            or settings is None
            or spec.mode is not Mode.ENFORCE
            or not settings.metadata_api.block
        ):
            continue
        tier = effective_enforcement(settings.metadata_api.enforcement, tiers)
        if tier in ADMIN_TIERS:
            body = build_admin_metadata_block(
                settings, BaselineRef(baseline.name, baseline.uid), tier, priority
            )
            desired[(tier.value, body["metadata"]["name"])] = (baseline.name, body)
    return desired


class ClusterObjects(Protocol):
    """What the reconciler reads: the cluster cache's baselines, served tiers, Admin-tier objects, labels."""

    def baselines(self) -> list[ObservedBaseline]: ...
    def served_admin_tiers(self) -> frozenset[str]: ...
    def admin_objects(self) -> list[ObservedObject]: ...
    def namespaces_labelled(self, key: str, value: str) -> bool: ...
    def observe(self, kind: kube.Kind, body: Any) -> bool: ...


@dataclass
class AdminBlockReconciler:
    """Brings the Admin-tier blocks about whenever something they depend on changed; retries with back-off."""

    api: kube.KubeApi
    view: ClusterObjects
    metrics: MetricsRecorder
    priority: int
    retry_initial: float = 0.5
    retry_max: float = 60.0
    _wanted: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _waiting: bool = field(default=False, init=False)
    _applied: set[tuple[str, str]] = field(default_factory=set, init=False)

    def changed(self) -> None:
        self._wanted.set()

    def namespace_changed(self) -> None:
        """A namespace's labels may have changed: only matters while a policy waits for them."""
        if self._waiting:
            self._wanted.set()

    async def run(self, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
        delay = self.retry_initial
        self._wanted.set()
        while True:
            await wait_beating(self._wanted, heartbeat)
            self._wanted.clear()
            try:
                await self.reconcile()
            except kube.ApiError as error:
                logger.warning(
                    "Admin-tier metadata blocks not written (%s); retrying in %.1f s", error, delay
                )
                self.metrics.reconcile_error(
                    "Forbidden" if isinstance(error, kube.ForbiddenError) else "ApiError"
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                self._wanted.set()
            else:
                delay = self.retry_initial

    async def reconcile(self) -> None:
        view = self.view
        plan = plan_admin_blocks(
            view.baselines(),
            view.served_admin_tiers(),
            view.admin_objects(),
            lambda baseline: view.namespaces_labelled(METADATA_BLOCK_LABEL, baseline),
            priority=self.priority,
            applied=frozenset(self._applied),
        )
        self._waiting = plan.waiting
        for write in plan.writes:
            key = (write.kind.kind, write.name)
            if write.body is None:
                await self.api.delete(write.kind, None, write.name, uid=write.uid)
                self._applied.discard(key)
                logger.info("%s %s deleted: no baseline wants it any more", write.kind.kind, write.name)
                continue
            # A repair takes its fields back; a create takes over nothing of an object someone made meanwhile.
            stored = await self.api.apply(write.body, force=write.uid is not None)
            view.observe(write.kind, stored)
            self._applied.add(key)
            if write.drift is not None:
                self.metrics.drift_found(write.baseline, write.kind.kind, write.drift)
                self.metrics.repaired(write.baseline, write.kind.kind, None)
                logger.warning("%s %s was %s: repaired", write.kind.kind, write.name, write.drift.lower())
