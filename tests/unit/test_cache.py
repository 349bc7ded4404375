"""The cluster cache: what watch events and lists leave in the operator's view, and what a resync drops."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from baseline_operator import kube
from baseline_operator.builders.common import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from baseline_operator.cache import WATCHED_KINDS, ClusterCache
from baseline_operator.observed import _Shared, observe_namespace, observe_object

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

OURS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def body(
    kind: kube.Kind, name: str, uid: str, namespace: str = "", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": uid, "labels": labels or {}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}


class Lists:
    """An API that lists fixed bodies per kind, failing the first `failures` calls; keeps the selectors."""

    def __init__(
        self, bodies: dict[kube.Kind, list[dict[str, Any]]], failures: int = 0, failing_page: int = 0
    ) -> None:
        self.bodies = bodies
        self.failures = failures
        self.failing_page = failing_page
        self.selectors: dict[str, str | None] = {}
        self.pages = 0

    async def list_pages(
        self, kind: kube.Kind, *, field_selector: str | None = None
    ) -> AsyncIterator[kube.Listing]:
        """Pages of two bodies; the first `failures` lists fail instead of sending page `failing_page`."""
        self.selectors[kind.kind] = field_selector
        bodies = self.bodies.get(kind, [])
        for page, start in enumerate(range(0, max(len(bodies), 1), 2)):
            if page == self.failing_page and self.failures:
                self.failures -= 1
                raise kube.UnavailableError(503, "ServiceUnavailable", "starting")
            self.pages += 1
            yield kube.Listing(bodies[start : start + 2], f"{kind.plural}-listed")


def names(cache: ClusterCache, namespace: str) -> set[str]:
    return {record.name for record in cache.objects(namespace)}


def test_objects_of_a_managed_kind_are_kept_only_when_they_could_be_ours() -> None:
    cache = ClusterCache()
    assert cache.observe(kube.NETWORK_POLICY, body(kube.NETWORK_POLICY, "deny", "1", "team", OURS))
    # Someone else's object under one of our names: kept, so that the planner reports the clash.
    assert cache.observe(kube.NETWORK_POLICY, body(kube.NETWORK_POLICY, "baseline-deny-ingress", "2", "team"))
    assert not cache.observe(kube.LIMIT_RANGE, body(kube.LIMIT_RANGE, "limits", "3", "team"))
    assert names(cache, "team") == {"deny", "baseline-deny-ingress"}


def test_other_network_policies_are_kept_as_lean_records_for_the_metadata_block() -> None:
    # The block must never select pods that a user's egress policy restricts: the view needs those.
    cache = ClusterCache()
    policy = body(kube.NETWORK_POLICY, "allow-web", "3", "team")
    policy["spec"] = {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Egress"],
        "egress": [{}],
    }
    assert cache.observe(kube.NETWORK_POLICY, policy)
    [kept] = cache.policies("team")
    assert kept.pod_selector.match_labels == {"app": "db"}
    assert kept.egress is not None
    assert names(cache, "team") == set()
    # Relabelled as ours: it moves over.
    policy["metadata"]["labels"] = OURS
    assert cache.observe(kube.NETWORK_POLICY, policy)
    assert cache.policies("team") == []
    assert cache.forget(kube.NETWORK_POLICY, policy)


def test_an_object_relabelled_away_from_us_leaves_the_view() -> None:
    cache = ClusterCache()
    cache.observe(kube.LIMIT_RANGE, body(kube.LIMIT_RANGE, "limits", "1", "team", OURS))
    assert cache.observe(kube.LIMIT_RANGE, body(kube.LIMIT_RANGE, "limits", "1", "team", {"x": "y"}))
    assert names(cache, "team") == set()


def test_a_late_delete_of_the_old_object_does_not_erase_its_replacement() -> None:
    # kopf handles each object (uid) in its own task: the replacement's ADDED can come first.
    cache = ClusterCache()
    cache.observe(kube.NAMESPACE, body(kube.NAMESPACE, "team", "old"))
    cache.observe(kube.NAMESPACE, body(kube.NAMESPACE, "team", "new"))
    assert cache.forget(kube.NAMESPACE, body(kube.NAMESPACE, "team", "old"))
    namespace = cache.namespace("team")
    assert namespace is not None
    assert namespace.uid == "new"
    assert not cache.forget(kube.NAMESPACE, body(kube.NAMESPACE, "team", "old"))


def test_a_cluster_role_is_forgotten_only_by_its_own_uid() -> None:
    cache = ClusterCache()
    cache.observe(kube.CLUSTER_ROLE, body(kube.CLUSTER_ROLE, "view", "new"))
    assert not cache.forget(kube.CLUSTER_ROLE, body(kube.CLUSTER_ROLE, "view", "old"))
    assert cache.cluster_roles() == {"view"}
    assert cache.forget(kube.CLUSTER_ROLE, body(kube.CLUSTER_ROLE, "view", "new"))
    assert cache.cluster_roles() == frozenset()


def test_only_the_default_service_account_is_kept() -> None:
    cache = ClusterCache()
    assert not cache.observe(kube.SERVICE_ACCOUNT, body(kube.SERVICE_ACCOUNT, "builder", "1", "team"))
    assert cache.observe(kube.SERVICE_ACCOUNT, body(kube.SERVICE_ACCOUNT, "default", "2", "team"))
    account = cache.default_service_account("team")
    assert account is not None
    assert account.uid == "2"


def test_fill_lists_every_kind_and_waits_out_an_api_that_is_not_there_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("baseline_operator.cache.asyncio.sleep", sleep)
    api = Lists(
        {
            kube.NAMESPACE: [body(kube.NAMESPACE, "team", "ns")],
            kube.SECURITY_BASELINE: [body(kube.SECURITY_BASELINE, "base", "b")],
            kube.CLUSTER_ROLE: [body(kube.CLUSTER_ROLE, "view", "r")],
            kube.SERVICE_ACCOUNT: [body(kube.SERVICE_ACCOUNT, "default", "sa", "team")],
            kube.ROLE_BINDING: [body(kube.ROLE_BINDING, "viewers", "rb", "team", OURS)],
        },
        failures=2,
    )
    cache = ClusterCache()
    asyncio.run(cache.fill(api))  # type: ignore[arg-type]
    assert slept == [2.0, 2.0]
    assert cache.namespace_names() == ["team"]
    assert [baseline.name for baseline in cache.baselines()] == ["base"]
    assert cache.cluster_roles() == {"view"}
    assert cache.default_service_account("team") is not None
    # Each kind's watch starts where its list left off.
    assert cache.listed_versions == {kind: f"{kind.plural}-listed" for kind in WATCHED_KINDS}
    assert names(cache, "team") == {"viewers"}
    assert api.selectors["ServiceAccount"] == "metadata.name=default"
    assert api.selectors["NetworkPolicy"] is None


def test_fill_reads_a_kind_page_by_page_and_a_list_broken_off_midway_is_read_again() -> None:
    namespaces = [body(kube.NAMESPACE, f"team-{index}", f"ns-{index}") for index in range(5)]
    api = Lists({kube.NAMESPACE: namespaces}, failures=1, failing_page=2)
    cache = ClusterCache()
    asyncio.run(cache.fill(api))  # type: ignore[arg-type]
    assert cache.namespace_names() == [f"team-{index}" for index in range(5)]
    assert cache.listed_versions[kube.NAMESPACE] == "namespaces-listed"
    # Namespaces: 2 pages, broken off, then 3; every other kind: one empty page.
    assert api.pages == 2 + 3 + len(WATCHED_KINDS) - 1


def test_a_resync_drops_the_cached_objects_missing_from_the_lists_and_nothing_else() -> None:
    cache = ClusterCache()
    cache.observe(kube.NAMESPACE, body(kube.NAMESPACE, "team", "ns"))
    cache.observe(kube.NETWORK_POLICY, body(kube.NETWORK_POLICY, "kept", "np-1", "team", OURS))
    cache.observe(kube.NETWORK_POLICY, body(kube.NETWORK_POLICY, "deleted", "np-2", "team", OURS))
    cache.observe(kube.SECURITY_BASELINE, body(kube.SECURITY_BASELINE, "gone", "b"))
    api = Lists(
        {
            kube.NAMESPACE: [body(kube.NAMESPACE, "team", "ns")],
            # Created after the cache was read: not cached, so not stale either.
            kube.NETWORK_POLICY: [
                body(kube.NETWORK_POLICY, "kept", "np-1", "team", OURS),
                body(kube.NETWORK_POLICY, "new", "np-3", "team", OURS),
                body(kube.NETWORK_POLICY, "newer", "np-4", "team", OURS),  # on a second page
            ],
        }
    )
    gone = asyncio.run(cache.resync(api))  # type: ignore[arg-type]
    assert gone == {"np-2", "b"}
    assert names(cache, "team") == {"kept"}
    assert cache.baselines() == []
    assert cache.namespace("team") is not None


def test_a_version_already_held_is_no_news_and_a_new_one_is() -> None:
    cache = ClusterCache()
    listed = body(kube.NETWORK_POLICY, "deny", "1", "team", OURS)
    listed["metadata"]["resourceVersion"] = "7"
    assert cache.observe(kube.NETWORK_POLICY, listed)
    # The watch's first list repeats what filled the cache: nothing to reconcile.
    assert not cache.observe(kube.NETWORK_POLICY, listed)
    listed["metadata"]["resourceVersion"] = "8"
    assert cache.observe(kube.NETWORK_POLICY, listed)
    namespace = body(kube.NAMESPACE, "team", "ns")
    assert cache.observe(kube.NAMESPACE, namespace)
    assert not cache.observe(kube.NAMESPACE, namespace)


def test_objects_built_alike_in_two_namespaces_share_one_document_and_keep_their_identity() -> None:
    def stored(namespace: str, uid: str) -> dict[str, Any]:
        return {
            **body(kube.NETWORK_POLICY, "baseline-default-deny", uid, namespace, dict(OURS)),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }

    team_a, team_b = observe_object(stored("team-a", "uid-a")), observe_object(stored("team-b", "uid-b"))
    assert team_a.document is team_b.document
    assert team_a.labels is team_b.labels
    assert team_a.body == stored("team-a", "uid-a")
    assert team_b.body == stored("team-b", "uid-b")

    table: _Shared[str] = _Shared(limit=2)
    first = table.get("x" * 3)
    assert table.get("".join(["x"] * 3)) is first
    table.get("y")
    table.get("z")  # full: the table starts afresh, equal values are still handed out
    assert table.get("y") == "y"
    assert table.get("x" * 3) == first


def test_a_record_built_from_our_write_is_kept_as_is_and_routed_like_the_event() -> None:
    cache = ClusterCache()
    event = body(kube.NETWORK_POLICY, "deny", "1", "team", OURS)
    event["metadata"]["resourceVersion"] = "7"
    built = observe_object(event)
    assert cache.observe(kube.NETWORK_POLICY, event, built)
    assert next(iter(cache.objects("team"))) is built
    assert not cache.observe(kube.NETWORK_POLICY, event, built)  # the same version again: no news
    namespace = body(kube.NAMESPACE, "team", "ns")
    namespace_record = observe_namespace(namespace)
    assert cache.observe(kube.NAMESPACE, namespace, namespace_record)
    assert cache.namespace("team") is namespace_record
    # A ServiceAccount other than the default one is not kept, whatever was built.
    account = body(kube.SERVICE_ACCOUNT, "builder", "sa", "team")
    assert not cache.observe(kube.SERVICE_ACCOUNT, account, observe_object(account))
    assert cache.default_service_account("team") is None
