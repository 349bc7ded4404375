"""The metadata block in the Admin tier: which API, what object, and how the engine and the reconciler
hand over between it and the NetworkPolicy block without a gap."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from cluster_records import POLICY, ROLES, account, baseline, namespace

from baseline_operator.builders.admin_network_policy import build_admin_metadata_block, effective_enforcement
from baseline_operator.cluster_objects import ClusterPlan, ClusterSettings, plan_cluster_objects
from baseline_operator.compare import leaf_paths
from baseline_operator.observed import ObservedObject
from baseline_operator.planner import Apply, NamespaceView, Reason, plan_namespace
from baseline_operator.spec import BaselineRef, MetadataEnforcement, parse_spec

if TYPE_CHECKING:
    from collections.abc import Callable

    from baseline_operator.observed import ObservedBaseline

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

CNP, ANP, NP, AUTO = (
    MetadataEnforcement.CLUSTER_NETWORK_POLICY,
    MetadataEnforcement.ADMIN_NETWORK_POLICY,
    MetadataEnforcement.NETWORK_POLICY,
    MetadataEnforcement.AUTO,
)
OPEN_EGRESS = {"networkPolicy": {"defaultDeny": {"ingress": True, "egress": False}}}


@pytest.mark.parametrize(
    ("requested", "served", "expected"),
    [
        (AUTO, {CNP, ANP}, CNP),
        (AUTO, {ANP}, ANP),
        (AUTO, set(), NP),
        (ANP, {CNP, ANP}, ANP),
        (CNP, {ANP}, NP),  # asked for, not served: NetworkPolicies (and a problem, see below)
        (NP, {CNP}, NP),
    ],
)
def test_which_api_enforces_the_block(requested, served, expected) -> None:
    assert effective_enforcement(requested, served) is expected


def settings(**metadata: object) -> object:
    spec = parse_spec(
        {
            "networkPolicy": {
                "defaultDeny": {"egress": False},
                "dnsIPs": ["169.254.169.254"],
                "metadataAPI": metadata,
            }
        }
    )
    return spec.network_policy


def test_the_cluster_network_policy_denies_every_metadata_cidr_and_passes_a_resolver_on_one() -> None:
    body = build_admin_metadata_block(settings(providers=["aws"]), BaselineRef("org", "u1"), CNP, 20)
    assert body["apiVersion"] == "policy.networking.k8s.io/v1alpha2"
    assert body["metadata"]["name"] == "baseline-org-metadata"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u1"
    spec = body["spec"]
    assert spec["tier"] == "Admin"
    assert spec["priority"] == 20
    assert spec["subject"] == {"namespaces": {"matchLabels": {"baseline.dev/metadata-block": "org"}}}
    passing, deny = spec["egress"]
    # GKE Cloud DNS answers on 169.254.169.254:53: passed on to the NetworkPolicies, never allowed outright.
    assert passing["action"] == "Pass"
    assert passing["to"] == [{"networks": ["169.254.169.254/32"]}]
    assert {"udp": {"destinationPort": {"number": 53}}} in passing["protocols"]
    assert deny["action"] == "Deny"
    assert deny["to"] == [{"networks": ["169.254.169.254/32", "fd00:ec2::254/128"]}]
    assert "protocols" not in deny  # every port


def test_the_admin_network_policy_has_no_tier_and_names_ports_its_way_and_splits_long_cidr_lists() -> None:
    extra = [f"192.0.2.{index}/32" for index in range(30)]
    body = build_admin_metadata_block(settings(extraCIDRs=extra), BaselineRef("org", "u1"), ANP, 7)
    assert body["kind"] == "AdminNetworkPolicy"
    assert "tier" not in body["spec"]
    passing, deny = body["spec"]["egress"]
    assert {"portNumber": {"protocol": "UDP", "port": 53}} in passing["ports"]
    assert all(len(peer["networks"]) <= 25 for peer in deny["to"])
    assert sum(len(peer["networks"]) for peer in deny["to"]) > 25


def test_the_namespace_keeps_its_networkpolicy_block_until_the_admin_tier_policy_is_in_force() -> None:
    org = baseline("org", OPEN_EGRESS)
    ns = namespace()
    waiting = plan_namespace(
        NamespaceView(ns.name, ns, [org], [], account(ns.name), ROLES, admin_tiers=frozenset({CNP})), POLICY
    )
    names = [a.body["metadata"]["name"] for a in waiting.actions if isinstance(a, Apply)]
    assert "baseline-block-metadata" in names
    [marks] = [a.body for a in waiting.actions if isinstance(a, Apply) and a.body["kind"] == "Namespace"]
    assert marks["metadata"]["labels"]["baseline.dev/metadata-block"] == "org"
    in_force = plan_namespace(
        NamespaceView(
            ns.name,
            ns,
            [org],
            [],
            account(ns.name),
            ROLES,
            admin_tiers=frozenset({CNP}),
            admin_blocks=frozenset({("org", "ClusterNetworkPolicy")}),
        ),
        POLICY,
    )
    names = [a.body["metadata"]["name"] for a in in_force.actions if isinstance(a, Apply)]
    assert "baseline-block-metadata" not in names


def test_an_admin_tier_asked_for_and_not_served_falls_back_to_networkpolicies_and_says_so() -> None:
    org = baseline(
        "org",
        {
            "networkPolicy": {
                "defaultDeny": {"egress": False},
                "metadataAPI": {"enforcement": "AdminNetworkPolicy"},
            }
        },
    )
    ns = namespace()
    plan = plan_namespace(NamespaceView(ns.name, ns, [org], [], account(ns.name), ROLES), POLICY)
    assert any(
        isinstance(a, Apply) and a.body["metadata"]["name"] == "baseline-block-metadata" for a in plan.actions
    )
    [problem] = plan.outcomes["org"].problems
    assert problem.reason is Reason.ADMIN_TIER_NOT_SERVED


def live(body: dict, *, ours: bool = True, uid: str = "live-1") -> ObservedObject:
    return ObservedObject.from_body(
        body["kind"],
        "",
        body["metadata"]["name"],
        uid,
        body,
        owned=frozenset(leaf_paths(body)) if ours else frozenset(),
    )


def plan_blocks(
    baselines: list[ObservedBaseline],
    served: list[str],
    current: list[ObservedObject],
    labelled: Callable[[str], bool],
    *,
    priority: int,
) -> ClusterPlan:
    return plan_cluster_objects(
        baselines, served, current, labelled, settings=ClusterSettings(priority), now=NOW
    )


def test_the_reconciler_creates_repairs_with_uid_and_prunes_only_once_no_namespace_needs_it() -> None:
    org = baseline("org", OPEN_EGRESS)
    [create] = plan_blocks([org], ["ClusterNetworkPolicy"], [], lambda _: False, priority=20).writes
    assert create.body is not None
    assert create.body["kind"] == "ClusterNetworkPolicy"
    assert create.drift is None
    current = live(create.body)
    assert plan_blocks([org], ["ClusterNetworkPolicy"], [current], lambda _: False, priority=20).writes == ()
    tampered = {**create.body, "spec": {**create.body["spec"], "egress": []}}
    [repair] = plan_blocks(
        [org], ["ClusterNetworkPolicy"], [live(tampered)], lambda _: False, priority=20
    ).writes
    assert repair.drift == "Modified"
    assert repair.body is not None
    assert repair.body["metadata"]["uid"] == "live-1"
    # The baseline switched to NetworkPolicies: the policy waits while a namespace still carries the label...
    switched = baseline(
        "org",
        {
            "networkPolicy": {
                "defaultDeny": {"egress": False},
                "metadataAPI": {"enforcement": "NetworkPolicy"},
            }
        },
    )
    plan = plan_blocks([switched], ["ClusterNetworkPolicy"], [current], lambda _: True, priority=20)
    assert plan.writes == ()
    assert plan.waiting
    # ...and goes once none does.
    [prune] = plan_blocks(
        [switched], ["ClusterNetworkPolicy"], [current], lambda _: False, priority=20
    ).writes
    assert prune.body is None
    assert prune.uid == "live-1"


def test_an_audit_baseline_and_an_object_not_ours_get_nothing_written() -> None:
    audit = baseline("org", {**OPEN_EGRESS, "mode": "Audit"})
    assert plan_blocks([audit], ["AdminNetworkPolicy"], [], lambda _: False, priority=20).writes == ()
    org = baseline("org", OPEN_EGRESS)
    body = build_admin_metadata_block(settings(), BaselineRef("org", "uid-org"), ANP, 20)
    squatter = {**body, "metadata": {"name": body["metadata"]["name"]}, "spec": {}}
    assert (
        plan_blocks(
            [org], ["AdminNetworkPolicy"], [live(squatter, ours=False)], lambda _: False, priority=20
        ).writes
        == ()
    )
