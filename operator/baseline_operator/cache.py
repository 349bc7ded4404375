"""The operator's view of the cluster: one small record per watched object, kept current by the watches.

It is filled by one list per kind before kopf starts watching, so that the first reconcile already sees the
whole cluster, and then updated by the watches (kopf's for baselines and ClusterRoles, the lean ones of
watch.py for the rest, starting from the versions of those lists); reconciling reads it and never lists.

Why not kopf's indexes, which did this job before: kopf holds back every event handler until every object
of every indexed kind is indexed, and each object that finishes wakes every one still waiting. Starting over
7000 watched objects took 268 s (50 s over 2000), growing with the square of the object count; the same
cache filled by eight lists takes a few seconds.

Records are stored by uid under their key (a name or a namespace), as kopf's indexes stored them: kopf
handles each object's events in its own task, so a new object's ADDED can arrive before the DELETED of the
old object it replaces under the same name, and neither must erase the other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from baseline_operator import kube
from baseline_operator.builders.common import MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_PREFIX
from baseline_operator.observed import (
    ObservedBaseline,
    ObservedNamespace,
    ObservedObject,
    ObservedPolicy,
    observe_baseline,
    observe_namespace,
    observe_object,
    observe_policy,
)
from baseline_operator.pods import ObservedPod, observe_pod

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator, Mapping

logger = logging.getLogger(__name__)

MANAGED_KINDS = (kube.NETWORK_POLICY, kube.LIMIT_RANGE, kube.RESOURCE_QUOTA, kube.ROLE_BINDING)
"""Kinds the operator writes into namespaces; it watches every object of them that could be its own."""
ADMIN_TIER_KINDS = (kube.CLUSTER_NETWORK_POLICY, kube.ADMIN_NETWORK_POLICY)
"""Cluster-scoped kinds the operator writes where the cluster serves them (the Admin-tier metadata block)."""
WORKLOAD_POLICY_KINDS = (kube.VALIDATING_ADMISSION_POLICY, kube.VALIDATING_ADMISSION_POLICY_BINDING)
"""Cluster-scoped kinds of the workloads section, served by every cluster the operator supports."""
DEFAULT_SERVICE_ACCOUNT = "default"
WATCHED_KINDS = (
    kube.NAMESPACE,
    kube.SECURITY_BASELINE,
    kube.SERVICE_ACCOUNT,
    kube.CLUSTER_ROLE,
    kube.POD,
    *MANAGED_KINDS,
)
_FILL_RETRY_SECONDS = 2.0

Record = TypeVar("Record", ObservedNamespace, ObservedBaseline, ObservedObject, ObservedPolicy)
_Built = TypeVar("_Built", ObservedNamespace, ObservedObject)


def is_candidate(name: str, labels: Mapping[str, str]) -> bool:
    """Could this object of a managed kind be ours? Labelled so, or holding one of our names.

    The planner must see the second kind too, so that it reports a name taken by someone else instead of
    applying over their object.
    """
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE or name.startswith(NAME_PREFIX)


class _Store(Generic[Record]):
    """Records by key, then by uid."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, Record]] = {}

    def put(self, key: str, record: Record) -> bool:
        """Keep a record; whether it is news (not the very version already kept)."""
        records = self._by_key.setdefault(key, {})
        kept = records.get(record.uid)
        records[record.uid] = record
        return kept is None or kept.resource_version != record.resource_version

    def discard(self, key: str, uid: str) -> bool:
        """Drop one record; whether it was there."""
        records = self._by_key.get(key)
        if records is None or records.pop(uid, None) is None:
            return False
        if not records:
            del self._by_key[key]
        return True

    def discard_uids(self, uids: set[str]) -> None:
        for key in [key for key, records in self._by_key.items() if not uids.isdisjoint(records)]:
            for uid in uids & self._by_key[key].keys():
                self.discard(key, uid)

    def one(self, key: str) -> Record | None:
        records = self._by_key.get(key)
        return next(iter(records.values()), None) if records else None

    def firsts(self) -> Iterator[Record]:
        """One record per key, the one `one(key)` returns."""
        return (next(iter(records.values())) for records in self._by_key.values())

    def under(self, key: str) -> Collection[Record]:
        return (self._by_key.get(key) or {}).values()

    def keys(self) -> Collection[str]:
        return self._by_key.keys()

    def __iter__(self) -> Iterator[Record]:
        return (record for records in self._by_key.values() for record in records.values())

    def uids(self) -> set[str]:
        return {uid for records in self._by_key.values() for uid in records}


class ClusterCache:
    """What the engine reads (its `ClusterView`): namespaces, baselines, our candidates, cluster roles."""

    def __init__(self) -> None:
        self._namespaces: _Store[ObservedNamespace] = _Store()
        self._baselines: _Store[ObservedBaseline] = _Store()
        self._accounts: _Store[ObservedObject] = _Store()
        self._objects: dict[kube.Kind, _Store[ObservedObject]] = {kind: _Store() for kind in MANAGED_KINDS}
        # Everyone else's NetworkPolicies, as lean records: which pods they isolate for egress, and where to.
        self._policies: _Store[ObservedPolicy] = _Store()
        # The cluster-scoped objects that may be ours, by name: the workload policies, and the Admin-tier
        # metadata blocks of the kinds the cluster serves (see handlers.py).
        self._cluster: dict[kube.Kind, _Store[ObservedObject]] = {
            kind: _Store() for kind in (*ADMIN_TIER_KINDS, *WORKLOAD_POLICY_KINDS)
        }
        self.admin_tiers: frozenset[str] = frozenset()
        """The Admin-tier kinds the cluster serves (kinds' names), as last discovered."""
        self._roles: dict[str, str] = {}
        # Every Pod, as the workload rules read it (pods.py), by namespace, then uid.
        self._pods: dict[str, dict[str, ObservedPod]] = {}
        self.listed_versions: dict[kube.Kind, str] = {}
        """The resource version of each kind's list that filled the cache: where its watch starts."""

    # --- The ClusterView the engine reads ---

    def namespace(self, name: str) -> ObservedNamespace | None:
        return self._namespaces.one(name)

    def namespace_names(self) -> Collection[str]:
        return list(self._namespaces.keys())

    def namespaces(self) -> Iterator[ObservedNamespace]:
        """Every namespace, as `namespace(name)` has it; not to be held across a change of the cache."""
        return self._namespaces.firsts()

    def baselines(self) -> list[ObservedBaseline]:
        return list(self._baselines)

    def baseline(self, name: str) -> ObservedBaseline | None:
        return self._baselines.one(name)

    def objects(self, namespace: str) -> list[ObservedObject]:
        return [record for store in self._objects.values() for record in store.under(namespace)]

    def default_service_account(self, namespace: str) -> ObservedObject | None:
        return self._accounts.one(namespace)

    def policies(self, namespace: str) -> list[ObservedPolicy]:
        """The namespace's NetworkPolicies that are not the operator's."""
        return list(self._policies.under(namespace))

    def pods(self, namespace: str) -> list[ObservedPod]:
        return list(self._pods.get(namespace, {}).values())

    def pod_count(self) -> int:
        return sum(len(pods) for pods in self._pods.values())

    def cluster_roles(self) -> frozenset[str]:
        return frozenset(self._roles)

    def served_admin_tiers(self) -> frozenset[str]:
        return self.admin_tiers

    def cluster_objects(self) -> list[ObservedObject]:
        """The cluster-scoped objects the operator may have written (candidates, as above)."""
        return [record for store in self._cluster.values() for record in store]

    def admin_blocks_in_force(self) -> frozenset[tuple[str, str]]:
        """(baseline, kind) of each Admin-tier metadata block the operator wrote and the cluster holds."""
        return frozenset(
            (record.baseline, record.kind)
            for kind in ADMIN_TIER_KINDS
            for record in self._cluster[kind]
            if record.managed_by_us and record.baseline is not None
        )

    def namespaces_labelled(self, key: str, value: str) -> bool:
        return any(namespace.labels.get(key) == value for namespace in self._namespaces)

    def drop_kind(self, kind: kube.Kind) -> None:
        """The cluster stopped serving an Admin-tier kind: forget its objects."""
        self._cluster[kind] = _Store()

    # --- Kept current by the watches ---

    def observe(
        self,
        kind: kube.Kind,
        body: Mapping[str, Any],
        built: ObservedObject | ObservedNamespace | None = None,
    ) -> bool:
        """Record an object as it now is (added, modified or listed); whether the view changed.

        It did not when the cache already held this very version (a watch's list repeating the one that
        filled the cache), nor for objects of a managed kind that cannot be ours, which are not kept; one
        relabelled away from us is dropped as if deleted. `built` is the record of this very version when
        one was made already (from the API's answer to our write of it): kept instead of building it again.
        """
        metadata = body.get("metadata") or {}
        name, namespace, uid = (
            metadata.get("name", ""),
            metadata.get("namespace", ""),
            metadata.get("uid", ""),
        )
        if kind == kube.NAMESPACE:
            return self._namespaces.put(name, _built(built, ObservedNamespace) or observe_namespace(body))
        if kind == kube.SECURITY_BASELINE:
            return self._baselines.put(name, observe_baseline(body))
        if kind == kube.CLUSTER_ROLE:
            known = self._roles.get(name) == uid
            self._roles[name] = uid
            return not known
        if kind == kube.SERVICE_ACCOUNT:
            return name == DEFAULT_SERVICE_ACCOUNT and self._accounts.put(
                namespace, _built(built, ObservedObject) or observe_object(body)
            )
        if kind == kube.POD:
            # News only when what the rules read changed: a Pod's status updates are not.
            pod = observe_pod(body)
            pods = self._pods.setdefault(namespace, {})
            kept = pods.get(uid)
            pods[uid] = pod
            return kept != pod
        return self._observe_candidate(kind, namespace, uid, body, _built(built, ObservedObject))

    def _observe_candidate(
        self, kind: kube.Kind, namespace: str, uid: str, body: Mapping[str, Any], built: ObservedObject | None
    ) -> bool:
        """An object of a kind the operator writes: a candidate of ours, or a NetworkPolicy of others."""
        metadata = body.get("metadata") or {}
        name = metadata.get("name", "")
        if kind in self._cluster:
            if is_candidate(name, metadata.get("labels") or {}):
                return self._cluster[kind].put(name, built or observe_object(body))
            return self._cluster[kind].discard(name, uid)
        return self._observe_namespaced(kind, namespace, uid, body, built)

    def _observe_namespaced(
        self, kind: kube.Kind, namespace: str, uid: str, body: Mapping[str, Any], built: ObservedObject | None
    ) -> bool:
        """An object of a managed kind: a candidate of ours, or (a NetworkPolicy) someone else's."""
        metadata = body.get("metadata") or {}
        if is_candidate(metadata.get("name", ""), metadata.get("labels") or {}):
            left_users = kind == kube.NETWORK_POLICY and self._policies.discard(namespace, uid)
            return self._objects[kind].put(namespace, built or observe_object(body)) or left_users
        left_ours = self._objects[kind].discard(namespace, uid)
        if kind == kube.NETWORK_POLICY:
            return self._policies.put(namespace, observe_policy(body)) or left_ours
        return left_ours

    def forget(self, kind: kube.Kind, body: Mapping[str, Any]) -> bool:
        """Drop a deleted object, by uid (a new one may hold its name already); whether it was kept."""
        metadata = body.get("metadata") or {}
        name, namespace, uid = (
            metadata.get("name", ""),
            metadata.get("namespace", ""),
            metadata.get("uid", ""),
        )
        if kind == kube.NAMESPACE:
            return self._namespaces.discard(name, uid)
        if kind == kube.SECURITY_BASELINE:
            return self._baselines.discard(name, uid)
        if kind == kube.CLUSTER_ROLE:
            if self._roles.get(name) != uid:
                return False
            del self._roles[name]
            return True
        return self._forget_candidate(kind, namespace, name, uid)

    def _forget_pod(self, namespace: str, uid: str) -> bool:
        pods = self._pods.get(namespace)
        if pods is None or pods.pop(uid, None) is None:
            return False
        if not pods:
            del self._pods[namespace]
        return True

    def _forget_candidate(self, kind: kube.Kind, namespace: str, name: str, uid: str) -> bool:
        if kind == kube.SERVICE_ACCOUNT:
            return self._accounts.discard(namespace, uid)
        if kind == kube.POD:
            return self._forget_pod(namespace, uid)
        if kind in self._cluster:
            return self._cluster[kind].discard(name, uid)
        users = kind == kube.NETWORK_POLICY and self._policies.discard(namespace, uid)
        return self._objects[kind].discard(namespace, uid) or users

    async def fill(self, api: kube.KubeApi, extra_kinds: tuple[kube.Kind, ...] = ()) -> None:
        """List every watched kind into the cache, asking again every 2 s while the API fails to answer."""
        for kind in (*WATCHED_KINDS, *extra_kinds):
            while True:
                try:
                    # Observed page by page: a record is a fraction of the body it is made from.
                    async for page in _pages(api, kind):
                        for item in page.items:
                            self.observe(kind, item)
                        self.listed_versions[kind] = page.resource_version
                    break
                except kube.ApiError as error:
                    # Pages already observed stay: observing the same object again only replaces it.
                    logger.warning("listing %s to start with failed, retrying: %s", kind.plural, error)
                    await asyncio.sleep(_FILL_RETRY_SECONDS)
        logger.info(
            "cache filled: %d namespaces, %d baselines, %d managed candidates, %d other NetworkPolicies, "
            "%d Pods",
            len(self._namespaces.keys()),
            len(self.baselines()),
            sum(len(store.uids()) for store in self._objects.values()),
            len(self._policies.uids()),
            self.pod_count(),
        )

    # --- Resync after a watch gap ---

    async def resync(self, api: kube.KubeApi) -> set[str]:
        """Drop what the cache holds but the API no longer has; return those uids.

        A watch lists again when it cannot resume (the API server restarted, the resource version
        expired), and a list says what exists, not what went away: an object deleted during the gap would
        stay cached, so a NetworkPolicy deleted during an API outage would never be repaired, and a
        SecurityBaseline deleted meanwhile would go on being enforced. One list per kind tells the truth.
        The uids are taken before listing: a uid missing from a later list was deleted, and a deleted uid
        never comes back, so dropping it cannot lose news. Cluster roles are left alone: a missing one is
        reported by the planner, and an extra one only ever delays that report until its next event.
        """
        stores: dict[kube.Kind, _Store[Any]] = {
            kube.NAMESPACE: self._namespaces,
            kube.SECURITY_BASELINE: self._baselines,
            kube.SERVICE_ACCOUNT: self._accounts,
            **self._objects,
            **{
                kind: store
                for kind, store in self._cluster.items()
                if kind in WORKLOAD_POLICY_KINDS or kind.kind in self.admin_tiers
            },
        }
        cached = {uid for store in [*stores.values(), self._policies] for uid in store.uids()}
        cached |= {uid for pods in self._pods.values() for uid in pods}
        listed: set[str] = set()
        for kind in (*stores, kube.POD):
            async for page in _pages(api, kind):
                listed.update(item["metadata"]["uid"] for item in page.items)
        gone = cached - listed
        for store in [*stores.values(), self._policies]:
            store.discard_uids(gone)
        for namespace, pods in list(self._pods.items()):
            for uid in gone & pods.keys():
                self._forget_pod(namespace, uid)
        return gone


def _built(record: object, kind: type[_Built]) -> _Built | None:
    return record if isinstance(record, kind) else None


def field_selector(kind: kube.Kind) -> str | None:
    """What lists and watches of `kind` ask for: of the ServiceAccounts, each namespace's default one."""
    return f"metadata.name={DEFAULT_SERVICE_ACCOUNT}" if kind == kube.SERVICE_ACCOUNT else None


def _pages(api: kube.KubeApi, kind: kube.Kind) -> AsyncIterator[kube.Listing]:
    return api.list_pages(kind, field_selector=field_selector(kind))
