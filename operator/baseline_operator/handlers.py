"""Wiring: the watches keep the cluster cache current and enqueue work; the loops start under supervision.

Which kind is watched by which, and why:

- SecurityBaseline and ClusterRole: kopf (`_baseline_event`, `_cluster_role_event`). Few, rarely
  changing; kopf discovers the CRD even when it is installed after the operator.
- Namespace, NetworkPolicy, LimitRange, ResourceQuota, RoleBinding, the default ServiceAccounts, Pods (for
  the audit of the workload rules): watch.py (`_watched_event`). An object per namespace and more: kopf's
  per-object machinery cost a third of the CPU in a roll-out.
- ValidatingAdmissionPolicy and its bindings (the workload policies), ClusterNetworkPolicy and
  AdminNetworkPolicy (the Admin-tier metadata blocks, only while the cluster serves them): watch.py
  (`_cluster_object_event`), for cluster_objects.py.
- CustomResourceDefinition: watch.py (`_crd_event`), for the network policy API appearing or going (a
  plain watch waits out a 429's Retry-After; kopf's does not).

Every loop (those watches, the engine's workers and status writer, the backstop, the Event sender, the
publishers) runs under the supervisor (supervision.py), which restarts a crashed one and feeds liveness.

Only `@kopf.on.event` handlers are used, because they write nothing to the objects they watch: no
`last-handled-configuration` annotation, no progress annotations and no finalizers on users' Namespaces or
on SecurityBaselines that live in Git. The cache is filled before kopf starts (see cache.py), so the
first reconcile sees the whole cluster.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from baseline_operator import failpoints, kube
from baseline_operator.builders.admin_network_policy import DEFAULT_ADMIN_POLICY_PRIORITY
from baseline_operator.cache import (
    ADMIN_TIER_KINDS,
    MANAGED_KINDS,
    WORKLOAD_POLICY_KINDS,
    ClusterCache,
    field_selector,
)
from baseline_operator.cluster_objects import ClusterObjectsReconciler, ClusterSettings
from baseline_operator.engine import Engine, EngineSettings
from baseline_operator.events import EventRecorder, EventSettings
from baseline_operator.metrics import MetricsRecorder
from baseline_operator.supervision import NO_HEARTBEAT, Heartbeat, Supervisor, wait_beating
from baseline_operator.watch import KindWatch
from baseline_operator.work_queue import Priority

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from baseline_operator.observed import ObservedNamespace, ObservedObject
    from baseline_operator.planner import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopBounds:
    """How long each kind of loop may go without a heartbeat before liveness fails (seconds).

    Generous on purpose: under API Priority and Fairness one request may wait out Retry-After eight times
    (up to 4 minutes); a Pod restarted for that would only add load. A watch beats on every bookmark (about
    once a minute) and every new watch (every `watch_timeout`).
    """

    watch_timeout: int = 300
    watch: float = 360.0
    worker: float = 600.0
    other: float = 600.0


@dataclass
class OperatorContext:
    """What the handlers share, built once at start-up (kopf hands it to every handler as `memo`)."""

    api: kube.KubeApi
    policy: Policy
    engine_settings: EngineSettings
    backstop_interval: float
    event_settings: EventSettings = field(default_factory=EventSettings)
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)
    engine: Engine | None = None
    supervisor: Supervisor | None = None
    """Runs every long-running loop (see supervision.py); made in `start`, or given by the command line."""
    loop_bounds: LoopBounds = field(default_factory=LoopBounds)
    generations: dict[str, tuple[str, int]] = field(default_factory=dict)
    cache: ClusterCache = field(default_factory=ClusterCache)
    """Filled before kopf starts (`ClusterCache.fill`), then kept current by the event handlers."""
    watching: set[str] = field(default_factory=set)
    """Resources whose first list is over: a listed (type None) event for one of them means kopf re-listed."""
    resync_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    admin_policy_priority: int = DEFAULT_ADMIN_POLICY_PRIORITY
    cluster_objects: ClusterObjectsReconciler | None = None
    rediscovery: asyncio.Task[None] | None = None
    standby: bool = False
    """Waiting for the Lease: ready to take over, working on nothing."""


async def discover_admin_tiers(api: kube.KubeApi) -> frozenset[str]:
    """The Admin-tier network policy kinds the cluster serves now."""
    return frozenset([kind.kind for kind in ADMIN_TIER_KINDS if await api.serves(kind)])


async def prepare(memo: OperatorContext) -> None:
    """Before kopf starts: which Admin-tier kinds the cluster serves, then the cache filled (see cache.py)."""
    while True:
        try:
            memo.cache.admin_tiers = await discover_admin_tiers(memo.api)
            break
        except kube.ApiError as error:
            logger.warning("discovering the network policy API failed, retrying: %s", error)
            await asyncio.sleep(2.0)
    served = tuple(kind for kind in ADMIN_TIER_KINDS if kind.kind in memo.cache.admin_tiers)
    if served:
        logger.info(
            "the cluster serves %s: the metadata block can sit in the Admin tier",
            ", ".join(k.kind for k in served),
        )
    await memo.cache.fill(memo.api, extra_kinds=(*served, *WORKLOAD_POLICY_KINDS))


class _RetryForever:
    """kopf's back-offs for failed API requests, never exhausted: 0.5 s, 1 s, then every 2 s.

    kopf's default list gives up after about a minute and the failure stops the operator; an API server
    that is away for two minutes must find the operator waiting, and noticed within two seconds of its return.
    """

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((0.5, 1.0), itertools.repeat(2.0))


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base, kept for change handlers, of which there are none here: never built nor stored.

    kopf builds every object's "essence" (a deep copy of its body) on every event, to diff it with the
    last handled one, whether or not a change handler wants the diff: 5 % of the operator's CPU time
    during a roll-out, for nothing.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        del body, extra_fields
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        del body
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        del body, patch, essence


def build_registry() -> kopf.OperatorRegistry:
    """Register every handler on a fresh registry (no import-time global registration)."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry)
    _register_events(registry)
    return registry


def _register_lifecycle(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as our own API layer: in-cluster ServiceAccount, else the kubeconfig.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, memo: OperatorContext, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events, rate-limited, say what happened
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = _RetryForever()
        settings.persistence.diffbase_storage = _NoDiffBase()
        events = EventRecorder(
            memo.api, memo.event_settings, on_suppressed=memo.metrics.events_suppressed.inc
        )
        engine = Engine(memo.api, memo.policy, memo.engine_settings, events=events, metrics=memo.metrics)
        engine.attach(memo.cache)
        # The first pass over every namespace: kopf's own first lists repeat what the cache was filled
        # with, and an event that brings nothing new enqueues nothing.
        engine.enqueue_all()
        memo.engine = engine
        _start_loops(memo, events, engine)

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: OperatorContext, **_: Any) -> None:
        if memo.rediscovery is not None:
            memo.rediscovery.cancel()
        if memo.supervisor is not None:
            await memo.supervisor.stop()
        if memo.engine is not None:
            memo.engine.queue.cancel_timers()


def _start_loops(memo: OperatorContext, events: EventRecorder, engine: Engine) -> None:
    """Every long-running loop, under the supervisor, with the heartbeat bound of its kind."""
    if memo.supervisor is None:
        memo.supervisor = Supervisor(memo.metrics)
    supervisor, bounds = memo.supervisor, memo.loop_bounds
    supervisor.start("events", events.run, stale_after=bounds.other)
    for index in range(memo.engine_settings.workers):
        supervisor.start(f"reconcile-{index}", engine.work, stale_after=bounds.worker)
    supervisor.start("status-writer", engine.write_statuses, stale_after=bounds.other)
    supervisor.start("backstop", functools.partial(_backstop, memo), stale_after=bounds.other)
    memo.cluster_objects = ClusterObjectsReconciler(
        memo.api,
        memo.cache,
        memo.metrics,
        ClusterSettings(
            memo.admin_policy_priority, memo.policy.protected_namespaces, memo.policy.longest_exemption
        ),
        exemptions_changed=engine.exemptions_changed,
    )
    supervisor.start("cluster-objects", memo.cluster_objects.run, stale_after=bounds.other)
    _start_watches(memo)
    for kind in (*ADMIN_TIER_KINDS, *WORKLOAD_POLICY_KINDS):
        if kind in WORKLOAD_POLICY_KINDS or kind.kind in memo.cache.admin_tiers:
            _start_cluster_object_watch(memo, kind)


def _register_events(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event("baseline.dev", "v1alpha1", "securitybaselines", registry=registry, id="baseline_event")(
        _baseline_event
    )
    kopf.on.event(
        "rbac.authorization.k8s.io", "v1", "clusterroles", registry=registry, id="cluster_role_event"
    )(_cluster_role_event)
    # Namespaces, the managed kinds and the default ServiceAccounts are watched by watch.py, started with
    # the engine; so are the Admin-tier kinds, where the cluster serves them, and the CRDs that decide
    # which (a plain watch: kopf's watches do not wait out a 429's Retry-After).


_ADMIN_TIER_CRDS = frozenset(f"{kind.plural}.{kind.api_version.split('/')[0]}" for kind in ADMIN_TIER_KINDS)


def _crd_event(memo: OperatorContext, event_type: str, body: Mapping[str, Any]) -> None:
    """An Admin-tier CRD was created, changed or deleted: discover what is served now, and follow it."""
    del event_type
    if (body.get("metadata") or {}).get("name") in _ADMIN_TIER_CRDS:
        if memo.rediscovery is not None:
            memo.rediscovery.cancel()  # one look-again series at a time, from the latest change
        memo.rediscovery = asyncio.create_task(_network_policy_api_changed(memo), name="rediscovery")


async def _network_policy_api_changed(memo: OperatorContext) -> None:
    """Discover again, a few times over the next seconds.

    Discovery lags a CRD's own events by a moment (a CRD is Established before its group is listed).
    """
    for delay in _REDISCOVERY_DELAYS:
        await asyncio.sleep(delay)
        try:
            await _rediscover(memo)
        except kube.ApiError as error:
            logger.warning("discovering the network policy API failed: %s", error)


_REDISCOVERY_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)


async def _rediscover(memo: OperatorContext) -> None:
    if memo.engine is None:
        return
    served = await discover_admin_tiers(memo.api)
    if served == memo.cache.admin_tiers:
        return
    logger.info("the network policy API served now: %s", ", ".join(sorted(served)) or "none")
    for kind in ADMIN_TIER_KINDS:
        if kind.kind in memo.cache.admin_tiers and kind.kind not in served:
            if memo.supervisor is not None:
                memo.supervisor.forget(f"watch-{kind.plural}")
            memo.cache.drop_kind(kind)
        elif kind.kind in served and kind.kind not in memo.cache.admin_tiers:
            memo.cache.listed_versions[kind] = ""  # the watch lists it first
            _start_cluster_object_watch(memo, kind)
    memo.cache.admin_tiers = served
    if memo.cluster_objects is not None:
        memo.cluster_objects.changed()
    memo.engine.enqueue_all()


def _record(event: kopf.RawEvent, kind: kube.Kind, memo: OperatorContext) -> bool:
    """One of kopf's events into the cache; whether that changed the operator's view."""
    _note_listing(event, kind.plural, memo)
    return _cached(kind, memo, str(event.get("type") or ""), event["object"])


def _cached(
    kind: kube.Kind,
    memo: OperatorContext,
    event_type: str,
    body: Mapping[str, Any],
    built: ObservedObject | ObservedNamespace | None = None,
) -> bool:
    """Bring the cache up to date with one event; whether that changed the operator's view (see cache.py)."""
    if event_type == "DELETED":
        return memo.cache.forget(kind, body)
    return memo.cache.observe(kind, body, built)


def _baseline_event(
    event: kopf.RawEvent, name: str, uid: str, meta: kopf.Meta, memo: OperatorContext, **_: Any
) -> None:
    _record(event, kube.SECURITY_BASELINE, memo)
    if memo.cluster_objects is not None:
        memo.cluster_objects.changed()
    engine = memo.engine
    if engine is None:
        return
    if event.get("type") == "DELETED":
        memo.generations.pop(name, None)
        engine.baseline_deleted(name)
        return
    # Our own status writes come back as events too; only a new object or a new spec (generation)
    # changes what namespaces should hold.
    seen = (uid, int(meta.get("generation") or 0))
    if memo.generations.get(name) != seen:
        memo.generations[name] = seen
        engine.baseline_changed(name)


def _cluster_role_event(event: kopf.RawEvent, name: str, memo: OperatorContext, **_: Any) -> None:
    _record(event, kube.CLUSTER_ROLE, memo)
    # Only a role's existence matters, and only for roles baselines may bind.
    appeared_or_went = event.get("type") in {"ADDED", "DELETED"}
    if memo.engine is not None and appeared_or_went and name in memo.policy.allowed_cluster_roles:
        memo.engine.enqueue_all()


LEAN_WATCHED_KINDS = (kube.NAMESPACE, kube.SERVICE_ACCOUNT, kube.POD, *MANAGED_KINDS)
"""Watched by watch.py; kopf watches the rest (baselines, ClusterRoles)."""


def _start_watches(memo: OperatorContext) -> None:
    """Watch namespaces, the managed kinds and the default ServiceAccounts from where the lists left off.

    No label selector on the managed kinds: an object relabelled away from us must still reach the cache,
    to leave it.
    """
    assert memo.supervisor is not None  # noqa: S101 - started from `start`, after the supervisor
    bounds = memo.loop_bounds
    for kind in LEAN_WATCHED_KINDS:
        watch = KindWatch(
            memo.api,
            kind,
            memo.cache.listed_versions.get(kind, ""),
            on_event=functools.partial(_watched_event, kind, memo),
            on_relisted=memo.resync_wanted.set,
            field_selector=field_selector(kind),
            timeout_seconds=bounds.watch_timeout,
        )
        memo.supervisor.start(f"watch-{kind.plural}", watch.run, stale_after=bounds.watch)
    crds = KindWatch(
        memo.api,
        kube.CUSTOM_RESOURCE_DEFINITION,
        "",
        functools.partial(_crd_event, memo),
        lambda: None,
        timeout_seconds=bounds.watch_timeout,
    )
    memo.supervisor.start("watch-customresourcedefinitions", crds.run, stale_after=bounds.watch)


def _start_cluster_object_watch(memo: OperatorContext, kind: kube.Kind) -> None:
    assert memo.supervisor is not None  # noqa: S101 - as above
    watch = KindWatch(
        memo.api,
        kind,
        memo.cache.listed_versions.get(kind, ""),
        on_event=functools.partial(_cluster_object_event, kind, memo),
        on_relisted=memo.resync_wanted.set,
        timeout_seconds=memo.loop_bounds.watch_timeout,
    )
    memo.supervisor.start(f"watch-{kind.plural}", watch.run, stale_after=memo.loop_bounds.watch)


def _cluster_object_event(
    kind: kube.Kind, memo: OperatorContext, event_type: str, body: Mapping[str, Any]
) -> None:
    """A cluster-scoped object of ours changed: repair it.

    An Admin-tier block appearing or going also changes what namespaces need.
    """
    if not _cached(kind, memo, event_type, body):
        return
    if memo.cluster_objects is not None:
        memo.cluster_objects.changed()
    if memo.engine is not None and kind in ADMIN_TIER_KINDS and event_type in {"ADDED", "DELETED"}:
        memo.engine.enqueue_all()


def _watched_event(kind: kube.Kind, memo: OperatorContext, event_type: str, body: Mapping[str, Any]) -> None:
    """An event from watch.py: into the cache and, when it is news, to the engine for its namespace."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    # Most events of a roll-out are our own writes coming back: their record is built already.
    key, version = (kind.kind, namespace, name), str(metadata.get("resourceVersion", ""))
    own = memo.engine.own_write(key, str(metadata.get("uid", "")), version) if memo.engine else None
    news = _cached(kind, memo, event_type, body, own)
    if news and kind == kube.NAMESPACE and memo.cluster_objects is not None:
        memo.cluster_objects.namespace_changed()
    if news and memo.engine is not None and (namespace or kind == kube.NAMESPACE):
        _heard(event_type, body, key, memo.engine)


def _heard(event_type: str, body: Mapping[str, Any], key: tuple[str, str, str], engine: Engine) -> None:
    if event_type == "DELETED":
        engine.enqueue(key[1] or key[2])
        return
    metadata = body.get("metadata") or {}
    engine.heard(key, str(metadata.get("uid", "")), str(metadata.get("resourceVersion", "")))


async def _backstop(memo: OperatorContext, heartbeat: Heartbeat = NO_HEARTBEAT) -> None:
    """Resync soon after a watch re-listed, and every `backstop_interval` anyway; then compare everything.

    The resync drops what the cache holds but the API no longer has (and what the engine remembers of
    namespaces gone meanwhile); the comparison catches any missed event. A resync that fails is tried
    again after a back-off (0.5 s doubling to 30 s), not after a whole interval: a baseline deleted during
    a watch gap must not stay enforced for ten minutes.
    """
    retry = _RESYNC_RETRY_INITIAL
    while True:
        if await wait_beating(memo.resync_wanted, heartbeat, at_most=memo.backstop_interval):
            await asyncio.sleep(2.0)  # let the other kinds' lists finish too: one resync for all
        memo.resync_wanted.clear()
        while memo.engine is not None:
            try:
                await _resync(memo, memo.engine)
                retry = _RESYNC_RETRY_INITIAL
                break
            except kube.ApiError as error:
                logger.warning("resync failed (%s); trying again in %.1f s", error, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RESYNC_RETRY_MAX)
                heartbeat.beat()


_RESYNC_RETRY_INITIAL = 0.5
_RESYNC_RETRY_MAX = 30.0


async def _resync(memo: OperatorContext, engine: Engine) -> None:
    known = {baseline.uid: baseline.name for baseline in memo.cache.baselines()}
    await failpoints.hit("resync")
    gone = await memo.cache.resync(memo.api)
    if gone:
        logger.info("resync: %d cached objects were deleted while a watch was down", len(gone))
    for name in (known[uid] for uid in gone & known.keys()):
        if memo.cache.baseline(name) is None:
            memo.generations.pop(name, None)
            engine.baseline_deleted(name)
    engine.namespaces_gone(memo.cache.namespace_names())
    engine.enqueue_all(Priority.BACKSTOP)


def _note_listing(event: kopf.RawEvent, resource: str, memo: OperatorContext) -> None:
    """A listed event (type None) after the first list of `resource`: kopf re-listed, a resync is due."""
    if event.get("type") is not None:
        memo.watching.add(resource)
    elif resource in memo.watching:
        memo.resync_wanted.set()
