"""kopf wiring: index handlers fill the caches, event handlers enqueue work. Nothing else.

Only `@kopf.index` and `@kopf.on.event` handlers are used, because they write nothing to the objects
they watch: no `last-handled-configuration` annotation, no progress annotations and no finalizers on
users' Namespaces or on SecurityBaselines that live in Git. kopf also waits until every index holds
its initial listing before calling any event handler, so the first reconcile sees the whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from baseline_operator import kube, resync
from baseline_operator.builders.common import MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_PREFIX
from baseline_operator.engine import Engine, EngineSettings
from baseline_operator.events import EventRecorder, EventSettings
from baseline_operator.metrics import MetricsRecorder
from baseline_operator.observed import (
    ObservedBaseline,
    ObservedNamespace,
    ObservedObject,
    observe_baseline,
    observe_namespace,
    observe_object,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from baseline_operator.planner import Policy

logger = logging.getLogger(__name__)

MANAGED_KINDS = (kube.NETWORK_POLICY, kube.LIMIT_RANGE, kube.RESOURCE_QUOTA, kube.ROLE_BINDING)


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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    generations: dict[str, tuple[str, int]] = field(default_factory=dict)
    view: KopfView | None = None
    watching: set[str] = field(default_factory=set)
    """Resources whose first list is over: a listed (type None) event for one of them means kopf re-listed."""
    resync_wanted: asyncio.Event = field(default_factory=asyncio.Event)


class KopfView:
    """The engine's read access to kopf's indexes, minus objects a resync found gone (see resync.py)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        self._namespaces = indices["namespace_index"]
        self._baselines = indices["baseline_index"]
        self._objects = {kind: indices[_managed_index_id(kind)] for kind in MANAGED_KINDS}
        self._accounts = indices["service_account_index"]
        self._roles = indices["cluster_role_index"]
        self.gone: frozenset[str] = frozenset()
        """uids still cached though deleted during a watch gap; kopf never tells, a resync does."""

    def _one(self, index: Mapping[str, Any], key: str) -> Any:
        store = index.get(key)
        return next((found for found in store if found.uid not in self.gone), None) if store else None

    def namespace(self, name: str) -> ObservedNamespace | None:
        found: ObservedNamespace | None = self._one(self._namespaces, name)
        return found

    def namespace_names(self) -> Collection[str]:
        return [name for name in self._namespaces if self.namespace(name) is not None]

    def baselines(self) -> list[ObservedBaseline]:
        return [b for store in self._baselines.values() for b in store if b.uid not in self.gone]

    def objects(self, namespace: str) -> list[ObservedObject]:
        return [
            found
            for index in self._objects.values()
            for found in index.get(namespace) or ()
            if found.uid not in self.gone
        ]

    def default_service_account(self, namespace: str) -> ObservedObject | None:
        found: ObservedObject | None = self._one(self._accounts, namespace)
        return found

    def cluster_roles(self) -> frozenset[str]:
        return frozenset(self._roles.keys())

    def cached_uids(self) -> dict[kube.Kind, set[str]]:
        """Every uid in the caches a resync checks, by kind (taken before listing, so nothing races)."""
        uids = {
            kube.NAMESPACE: {o.uid for store in self._namespaces.values() for o in store},
            kube.SECURITY_BASELINE: {o.uid for store in self._baselines.values() for o in store},
            kube.SERVICE_ACCOUNT: {o.uid for store in self._accounts.values() for o in store},
        }
        for kind, index in self._objects.items():
            uids[kind] = {o.uid for store in index.values() for o in store}
        return uids


class _RetryForever:
    """kopf's back-offs for failed API requests, never exhausted: 0.5 s, 1 s, then every 2 s.

    kopf's default list gives up after about a minute and the failure stops the operator; an API server
    that is away for two minutes must find the operator waiting, and noticed within two seconds of its return.
    """

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((0.5, 1.0), itertools.repeat(2.0))


def _is_candidate(name: str, labels: Mapping[str, str], **_: Any) -> bool:
    # Ours by label, or any object holding one of our names: the planner must see those too, so that
    # it reports a name taken by someone else instead of applying over their object.
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE or name.startswith(NAME_PREFIX)


def build_registry() -> kopf.OperatorRegistry:
    """Register every handler on a fresh registry (no import-time global registration)."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry)
    _register_caches(registry)
    _register_events(registry)
    return registry


def _register_lifecycle(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as our own API layer: in-cluster ServiceAccount, else the kubeconfig.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, memo: OperatorContext, **kwargs: Any) -> None:
        settings.posting.enabled = False  # our own Events, rate-limited, say what happened
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = _RetryForever()
        events = EventRecorder(
            memo.api, memo.event_settings, on_suppressed=memo.metrics.events_suppressed.inc
        )
        engine = Engine(memo.api, memo.policy, memo.engine_settings, events=events, metrics=memo.metrics)
        memo.view = KopfView(kwargs)
        engine.attach(memo.view)
        memo.engine = engine
        memo.tasks.append(asyncio.create_task(events.run(), name="events"))
        memo.tasks.append(asyncio.create_task(engine.run(), name="engine"))
        memo.tasks.append(asyncio.create_task(_backstop(memo), name="backstop"))

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: OperatorContext, **_: Any) -> None:
        for task in memo.tasks:
            task.cancel()
        for task in memo.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _register_caches(registry: kopf.OperatorRegistry) -> None:
    @kopf.index("namespaces", registry=registry, id="namespace_index")
    def namespace_index(body: kopf.Body, name: str, **_: Any) -> dict[str, ObservedNamespace]:
        return {name: observe_namespace(body)}

    @kopf.index("baseline.dev", "v1alpha1", "securitybaselines", registry=registry, id="baseline_index")
    def baseline_index(body: kopf.Body, name: str, **_: Any) -> dict[str, ObservedBaseline]:
        return {name: observe_baseline(body)}

    @kopf.index(
        "serviceaccounts",
        field="metadata.name",
        value="default",
        registry=registry,
        id="service_account_index",
    )
    def service_account_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, ObservedObject]:
        return {namespace or "": observe_object(body)}

    @kopf.index("rbac.authorization.k8s.io", "v1", "clusterroles", registry=registry, id="cluster_role_index")
    def cluster_role_index(name: str, **_: Any) -> dict[str, bool]:
        return {name: True}

    for kind in MANAGED_KINDS:
        kopf.index(*_resource(kind), when=_is_candidate, registry=registry, id=_managed_index_id(kind))(
            _index_managed
        )


def _register_events(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event("namespaces", registry=registry, id="namespace_event")(_namespace_event)
    kopf.on.event("baseline.dev", "v1alpha1", "securitybaselines", registry=registry, id="baseline_event")(
        _baseline_event
    )
    kopf.on.event(
        "serviceaccounts",
        field="metadata.name",
        value="default",
        registry=registry,
        id="service_account_event",
    )(_managed_event)
    kopf.on.event(
        "rbac.authorization.k8s.io", "v1", "clusterroles", registry=registry, id="cluster_role_event"
    )(_cluster_role_event)
    for kind in MANAGED_KINDS:
        kopf.on.event(*_resource(kind), when=_is_candidate, registry=registry, id=f"{kind.plural}_event")(
            _managed_event
        )


def _namespace_event(event: kopf.RawEvent, name: str, memo: OperatorContext, **_: Any) -> None:
    _note_listing(event, "namespaces", memo)
    if memo.engine is not None:
        memo.engine.enqueue(name)


def _baseline_event(
    event: kopf.RawEvent, name: str, uid: str, meta: kopf.Meta, memo: OperatorContext, **_: Any
) -> None:
    _note_listing(event, "securitybaselines", memo)
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
    # Only a role's existence matters, and only for roles baselines may bind.
    appeared_or_went = event.get("type") in {"ADDED", "DELETED"}
    if memo.engine is not None and appeared_or_went and name in memo.policy.allowed_cluster_roles:
        memo.engine.enqueue_all()


def _resource(kind: kube.Kind) -> tuple[str, ...]:
    group, _, version = kind.api_version.rpartition("/")
    return (group, version, kind.plural) if group else (version, kind.plural)


def _managed_index_id(kind: kube.Kind) -> str:
    return f"{kind.plural}_index"


def _index_managed(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, ObservedObject]:
    return {namespace or "": observe_object(body)}


def _managed_event(
    event: kopf.RawEvent, resource: kopf.Resource, namespace: str | None, memo: OperatorContext, **_: Any
) -> None:
    _note_listing(event, resource.plural, memo)
    if memo.engine is not None and namespace:
        memo.engine.enqueue(namespace)


async def _backstop(memo: OperatorContext) -> None:
    """Resync soon after kopf re-listed, and every `backstop_interval` anyway, then compare every namespace.

    The resync drops what the caches hold but the API no longer has; the comparison catches any missed event.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(memo.resync_wanted.wait(), timeout=memo.backstop_interval)
            await asyncio.sleep(2.0)  # let the other kinds' lists finish too: one resync for all
        memo.resync_wanted.clear()
        if memo.view is None or memo.engine is None:
            continue
        try:
            gone = await resync.stale_uids(memo.api, memo.view.cached_uids())
        except kube.ApiError as error:
            logger.warning("resync skipped: %s", error)
            continue
        if gone - memo.view.gone:
            logger.info(
                "resync: %d cached objects were deleted while a watch was down", len(gone - memo.view.gone)
            )
        deleted = [b.name for b in memo.view.baselines() if b.uid in gone]
        memo.view.gone = frozenset(gone)
        for name in deleted:
            memo.generations.pop(name, None)
            memo.engine.baseline_deleted(name)
        memo.engine.enqueue_all()


def _note_listing(event: kopf.RawEvent, resource: str, memo: OperatorContext) -> None:
    """A listed event (type None) after the first list of `resource`: kopf re-listed, a resync is due."""
    if event.get("type") is not None:
        memo.watching.add(resource)
    elif resource in memo.watching:
        memo.resync_wanted.set()
