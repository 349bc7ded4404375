"""Keeps the cluster-scoped objects of the baselines: Admin-tier metadata blocks and workload policies.

Namespaces are the engine's business; these few cluster-scoped objects are kept here, read -> compute ->
apply like the rest: `plan_cluster_objects` (pure) decides from the cached baselines, the served tiers, the
live objects and the time; `ClusterObjectsReconciler` writes, when a baseline, a tier or one of these
objects changed, or when an exemption expires (the workload policy is rendered again then).

- The metadata block (builders/admin_network_policy.py): one ClusterNetworkPolicy or AdminNetworkPolicy per
  Enforce baseline, where the cluster serves the Admin tier.
- The workload rules (builders/workload_policy.py): one ValidatingAdmissionPolicy and its binding per
  baseline with a workloads section (Audit baselines too: their binding only warns).

No gap when switching the metadata block: the engine keeps a namespace's NetworkPolicy block until the
Admin-tier policy is in force (the cache holds it), and labels the namespace for it before it prunes that
block. The other way round, a block of ours is deleted only once no namespace carries its baseline's label
any more (they have their NetworkPolicy blocks by then, see planner.Stage), or when the same baseline's
block of the other kind is in force. Repairs are never paused: this is the floor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from baseline_operator import kube
from baseline_operator.builders.admin_network_policy import (
    ADMIN_TIERS,
    DEFAULT_ADMIN_POLICY_PRIORITY,
    build_admin_metadata_block,
    effective_enforcement,
)
from baseline_operator.builders.common import METADATA_BLOCK_LABEL
from baseline_operator.builders.workload_policy import build_workload_policy
from baseline_operator.compare import differences
from baseline_operator.exemptions import DEFAULT_LONGEST, next_change, rule_lifted_in
from baseline_operator.spec import BaselineRef, MetadataEnforcement, Mode
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, wait_beating

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from baseline_operator.metrics import MetricsRecorder
    from baseline_operator.observed import ObservedBaseline, ObservedObject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterWrite:
    """Apply `body` (with `uid` as precondition when repairing), or delete the object with `uid`."""

    kind: kube.Kind
    name: str
    baseline: str
    body: dict[str, Any] | None = None
    uid: str | None = None
    drift: str | None = None
    """Missing or Modified when this repairs drift (the object was as desired before)."""


@dataclass(frozen=True)
class ClusterPlan:
    """The writes to make, in order; whether a block waits for namespaces to leave it; when to look again."""

    writes: tuple[ClusterWrite, ...]
    waiting: bool
    """A metadata block no longer wanted waits for namespaces to leave it before it goes."""
    next_change: dt.datetime | None = None
    """When an exemption starts or stops being in force: the workload policies are rendered again then."""


@dataclass(frozen=True)
class ClusterSettings:
    """Install-time settings the cluster-scoped objects are rendered with."""

    admin_policy_priority: int = DEFAULT_ADMIN_POLICY_PRIORITY
    protected_namespaces: frozenset[str] = frozenset()
    longest_exemption: dt.timedelta = DEFAULT_LONGEST


def plan_cluster_objects(
    baselines: Iterable[ObservedBaseline],
    served: Iterable[str],
    live: Iterable[ObservedObject],
    labelled: Callable[[str], bool],
    *,
    settings: ClusterSettings,
    now: dt.datetime,
    applied: frozenset[tuple[str, str]] = frozenset(),
) -> ClusterPlan:
    """The writes that bring the cluster-scoped objects about.

    `labelled(baseline)`: a namespace carries the baseline's metadata-block label. `applied` are (kind,
    name) written before by this process: one missing now was deleted (drift).
    """
    baselines = list(baselines)
    desired = _desired_blocks(baselines, served, settings.admin_policy_priority)
    desired |= _desired_workload_policies(baselines, settings, now)
    by_key = {(record.kind, record.name): record for record in live}
    writes: list[ClusterWrite] = []
    for key, (baseline, body) in sorted(desired.items()):
        kind = kube.KINDS[key[0]]
        record = by_key.get(key)
        if record is None:
            drift = "Missing" if key in applied else None
            writes.append(ClusterWrite(kind, key[1], baseline, body, drift=drift))
        elif not record.labelled_ours:
            logger.warning("%s %s exists and is not the operator's: it is left alone", key[0], key[1])
        elif differences(body, record.body, record.owned):
            with_uid = {**body, "metadata": {**body["metadata"], "uid": record.uid}}
            writes.append(ClusterWrite(kind, key[1], baseline, with_uid, uid=record.uid, drift="Modified"))
    in_force = {(owner, kind) for (kind, name), (owner, _) in desired.items() if (kind, name) in by_key}
    waiting = False
    for record in by_key.values():
        if (record.kind, record.name) in desired or not record.managed_by_us or record.baseline is None:
            continue
        replaced = any(owner == record.baseline and kind != record.kind for owner, kind in in_force)
        # Only a metadata block waits for its namespaces; a workload policy no longer wanted goes at once.
        if record.kind not in _ADMIN_TIER_KINDS or replaced or not labelled(record.baseline):
            writes.append(ClusterWrite(kube.KINDS[record.kind], record.name, record.baseline, uid=record.uid))
        else:
            waiting = True
    changes = [
        next_change(baseline.spec.exemptions, now, settings.longest_exemption)
        for baseline in baselines
        if baseline.spec is not None
    ]
    return ClusterPlan(tuple(writes), waiting, min((at for at in changes if at is not None), default=None))


_ADMIN_TIER_KINDS = frozenset(tier.value for tier in ADMIN_TIERS)


def _desired_workload_policies(
    baselines: Iterable[ObservedBaseline], settings: ClusterSettings, now: dt.datetime
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(kind, name) -> (baseline, body) of each workload policy and binding the baselines want."""
    desired: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for baseline in baselines:
        spec = baseline.spec
        if spec is None or spec.workloads is None:
            continue
        for body in build_workload_policy(
            spec.workloads,
            BaselineRef(baseline.name, baseline.uid),
            selector=spec.namespace_selector,
            exclude_namespaces=spec.exclude_namespaces,
            protected_namespaces=settings.protected_namespaces,
            audit=spec.mode is Mode.AUDIT,
            exempt={
                rule: rule_lifted_in(spec.exemptions, rule, now, settings.longest_exemption)
                for rule in spec.workloads.rules()
            },
        ):
            desired[(body["kind"], body["metadata"]["name"])] = (baseline.name, body)
    return desired


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
    """What the reconciler reads: the cluster cache's baselines, served tiers, cluster objects, labels."""

    def baselines(self) -> list[ObservedBaseline]: ...
    def served_admin_tiers(self) -> frozenset[str]: ...
    def cluster_objects(self) -> list[ObservedObject]: ...
    def namespaces_labelled(self, key: str, value: str) -> bool: ...
    def observe(self, kind: kube.Kind, body: Any) -> bool: ...


@dataclass
class ClusterObjectsReconciler:
    """Brings the cluster-scoped objects about when something they depend on changed or an exemption ends.

    A failed write is tried again after a back-off (0.5 s doubling to 60 s). When an exemption starts or
    stops being in force, `exemptions_changed` tells the engine too (the namespaces' sections and the
    baselines' status depend on it): this loop is the one clock of exemptions.
    """

    api: kube.KubeApi
    view: ClusterObjects
    metrics: MetricsRecorder
    settings: ClusterSettings
    exemptions_changed: Callable[[], None] = lambda: None
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    retry_initial: float = 0.5
    retry_max: float = 60.0
    _wanted: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _waiting: bool = field(default=False, init=False)
    _applied: set[tuple[str, str]] = field(default_factory=set, init=False)
    _next_change: dt.datetime | None = field(default=None, init=False)

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
            until_change = None
            if self._next_change is not None:
                until_change = max(0.0, (self._next_change - self.now()).total_seconds())
            await wait_beating(self._wanted, heartbeat, at_most=until_change)
            self._wanted.clear()
            if self._next_change is not None and self.now() >= self._next_change:
                logger.info("an exemption started or stopped being in force")
                self.exemptions_changed()
            try:
                await self.reconcile()
            except kube.ApiError as error:
                logger.warning("cluster-scoped objects not written (%s); retrying in %.1f s", error, delay)
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
        plan = plan_cluster_objects(
            view.baselines(),
            view.served_admin_tiers(),
            view.cluster_objects(),
            lambda baseline: view.namespaces_labelled(METADATA_BLOCK_LABEL, baseline),
            settings=self.settings,
            now=self.now(),
            applied=frozenset(self._applied),
        )
        self._waiting = plan.waiting
        self._next_change = plan.next_change
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
