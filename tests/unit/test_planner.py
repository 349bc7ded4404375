"""The planner decides, for one namespace, what to write; these are its rules, without a cluster."""

from __future__ import annotations

import dataclasses
import json

from cluster_records import FULL, POLICY, ROLES, account, baseline, converged, namespace, view

from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, observe_policy
from baseline_operator.planner import (
    Apply,
    Delete,
    NamespaceView,
    Reason,
    Stage,
    plan_namespace,
    restores_isolation,
    stage_of,
)
from baseline_operator.spec import Section, SpecError


def kinds(actions: tuple) -> list[str]:
    return sorted(f"{type(a).__name__}:{a.body['kind'] if isinstance(a, Apply) else a.kind}" for a in actions)


def test_a_new_namespace_gets_every_object_of_its_baseline() -> None:
    plan = plan_namespace(view(namespace(), [baseline("org", FULL)]), POLICY)
    assert kinds(plan.actions) == sorted(
        ["Apply:NetworkPolicy"] * 2
        + [
            "Apply:LimitRange",
            "Apply:ResourceQuota",
            "Apply:RoleBinding",
            "Apply:Namespace",
            "Apply:ServiceAccount",
        ]
    )
    creates = [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "ResourceQuota"]
    assert creates[0].create_only_if_absent


def test_a_converged_namespace_needs_no_write_even_with_server_defaults_and_normalised_quantities() -> None:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    limits = next(o for o in objects if o.kind == "LimitRange")
    body = dict(limits.body)
    body["spec"] = {
        "limits": [{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "500m"}}]
    }
    objects = [o for o in objects if o.kind != "LimitRange"] + [
        ObservedObject.from_body(
            limits.kind, limits.namespace, limits.name, limits.uid, body, owned=limits.owned
        )
    ]
    plan = plan_namespace(view(ns, [base], objects, sa), POLICY)
    assert plan.actions == ()
    assert plan.outcomes["org"].findings == []


def test_protected_and_excluded_namespaces_are_never_selected() -> None:
    base = baseline("org", {**FULL, "excludeNamespaces": ["sandbox-*"]})
    for name in ("kube-system", "baseline-system", "sandbox-1"):
        plan = plan_namespace(view(namespace(name), [base]), POLICY)
        assert plan.actions == ()
        assert plan.outcomes == {}


def test_a_terminating_namespace_is_left_alone() -> None:
    plan = plan_namespace(view(namespace(terminating=True), [baseline("org", FULL)]), POLICY)
    assert plan.actions == ()


def test_per_section_the_highest_priority_wins_and_the_loser_reports_a_conflict() -> None:
    org = baseline("org", {"priority": 10, "networkPolicy": {}, "resourceQuota": {"hard": {"pods": "1"}}})
    team = baseline("team", {"resourceQuota": {"hard": {"pods": "7"}}, "limitRange": {"max": {"cpu": "2"}}})
    plan = plan_namespace(view(namespace(), [team, org]), POLICY)
    quota = next(a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "ResourceQuota")
    assert quota.baseline == "org"
    assert quota.body["spec"]["hard"] == {"pods": "1"}
    assert plan.outcomes["team"].lost_sections == [Section.RESOURCE_QUOTA]
    assert [p.reason for p in plan.outcomes["team"].problems] == [Reason.CONFLICT]
    assert any(
        isinstance(a, Apply) and a.body["kind"] == "LimitRange" and a.baseline == "team" for a in plan.actions
    )


def test_equal_priorities_are_broken_by_name() -> None:
    spec = {"resourceQuota": {"hard": {"pods": "1"}}}
    plan = plan_namespace(view(namespace(), [baseline("zeta", spec), baseline("alpha", spec)]), POLICY)
    assert {
        a.baseline for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "ResourceQuota"
    } == {"alpha"}


def test_audit_mode_writes_nothing_and_reports_what_differs() -> None:
    base = baseline("org", {**FULL, "mode": "Audit"})
    objects, ns, sa = converged(namespace(), base)
    quota = next(o for o in objects if o.kind == "ResourceQuota")
    edited = {**quota.body, "spec": {"hard": {"pods": "99"}}}
    objects = [o for o in objects if o.kind != "ResourceQuota"] + [
        ObservedObject.from_body(
            quota.kind, quota.namespace, quota.name, quota.uid, edited, owned=quota.owned
        )
    ]
    plan = plan_namespace(view(ns, [base], objects, sa), POLICY)
    assert plan.actions == ()
    [finding] = plan.outcomes["org"].findings
    assert finding.reason is Reason.MODIFIED
    assert [d.path for d in finding.differences] == ["spec.hard.pods"]


def test_an_object_with_our_name_but_not_our_label_is_never_touched() -> None:
    squatter = ObservedObject.from_body(
        "ResourceQuota",
        "team-a",
        "baseline-quota",
        "u1",
        {"metadata": {"name": "baseline-quota"}, "spec": {"hard": {"pods": "1"}}},
    )
    plan = plan_namespace(view(namespace(), [baseline("org", FULL)], [squatter]), POLICY)
    assert not any(
        (isinstance(a, Apply) and a.body["kind"] == "ResourceQuota") or isinstance(a, Delete)
        for a in plan.actions
    )
    assert [p.reason for p in plan.outcomes["org"].problems] == [Reason.NAME_TAKEN]


def test_objects_we_wrote_that_no_baseline_wants_are_deleted_but_merely_labelled_ones_are_not() -> None:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    narrowed = baseline("org", {"networkPolicy": {}}, generation=2)
    copied_label = ObservedObject.from_body(
        "LimitRange",
        "team-a",
        "copied",
        "u9",
        {"metadata": {"name": "copied", "labels": {"app.kubernetes.io/managed-by": "baseline-operator"}}},
    )
    plan = plan_namespace(view(ns, [narrowed], [*objects, copied_label], sa), POLICY)
    deleted = sorted(a.name for a in plan.actions if isinstance(a, Delete))
    assert deleted == ["baseline-limits", "baseline-quota", "baseline-team"]
    releases = [
        a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] in {"Namespace", "ServiceAccount"}
    ]
    assert sorted(a.body["kind"] for a in releases) == ["Namespace", "ServiceAccount"]
    for release in releases:
        assert set(release.body) == {"apiVersion", "kind", "metadata"}
        assert release.body["metadata"]["uid"]


def test_a_baseline_that_cannot_build_everything_writes_nothing_in_that_namespace() -> None:
    spec = {
        **FULL,
        "rbac": {
            "roleBindings": [
                {"name": "admins", "clusterRole": "admin", "subjects": [{"kind": "Group", "name": "x"}]}
            ]
        },
    }
    plan = plan_namespace(view(namespace(), [baseline("org", spec)]), POLICY)
    assert plan.actions == ()
    [problem] = plan.outcomes["org"].problems
    assert problem.reason is Reason.ROLE_NOT_ALLOWED
    assert "admin" in problem.message
    assert "team-a" in problem.message


def test_a_missing_cluster_role_is_reported_not_bound() -> None:
    spec = {
        "rbac": {
            "roleBindings": [
                {"name": "e", "clusterRole": "edit", "subjects": [{"kind": "Group", "name": "x"}]}
            ]
        }
    }
    ns = namespace()
    plan = plan_namespace(
        NamespaceView(ns.name, ns, [baseline("org", spec)], [], account(ns.name), frozenset({"view"})), POLICY
    )
    assert plan.actions == ()
    assert [p.reason for p in plan.outcomes["org"].problems] == [Reason.ROLE_MISSING]


def test_a_missing_label_for_a_placeholder_blocks_only_that_baseline() -> None:
    spec = {
        "rbac": {
            "roleBindings": [
                {"name": "t", "clusterRole": "view", "subjects": [{"kind": "Group", "name": "${label:team}"}]}
            ]
        }
    }
    other = baseline("quota", {"resourceQuota": {"hard": {"pods": "1"}}})
    plan = plan_namespace(view(namespace(), [baseline("rbac", spec), other]), POLICY)
    assert {a.baseline for a in plan.actions} == {"quota"}
    assert [p.reason for p in plan.outcomes["rbac"].problems] == [Reason.PLACEHOLDER]


def test_a_changed_role_reference_recreates_the_binding() -> None:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    moved = baseline(
        "org",
        {
            **FULL,
            "rbac": {
                "roleBindings": [
                    {"name": "team", "clusterRole": "edit", "subjects": [{"kind": "Group", "name": "g"}]}
                ]
            },
        },
        generation=2,
    )
    plan = plan_namespace(view(ns, [moved], objects, sa), POLICY)
    [binding] = [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "RoleBinding"]
    assert binding.recreate
    assert binding.live_uid == "uid-baseline-team"


def test_applies_to_objects_we_do_not_own_carry_their_uid_as_precondition() -> None:
    base = baseline("org", FULL)
    plan = plan_namespace(view(namespace(), [base], sa=account("team-a", automount=True)), POLICY)
    for action in plan.actions:
        if isinstance(action, Apply) and action.body["kind"] in {"Namespace", "ServiceAccount"}:
            assert action.body["metadata"]["uid"] in {"uid-team-a", "sa-team-a"}
            assert "labels" not in action.body["metadata"] or set(action.body["metadata"]["labels"]) == {
                "pod-security.kubernetes.io/enforce",
                "pod-security.kubernetes.io/enforce-version",
                "baseline.dev/enforced",
            }
            assert "ownerReferences" not in action.body["metadata"]


def test_a_quota_below_current_usage_is_reported_but_still_applied() -> None:
    base = baseline("org", {"resourceQuota": {"hard": {"pods": "2", "requests.cpu": "1"}}})
    objects, ns, sa = converged(namespace(), base)
    [quota] = objects
    with_usage = {**quota.body, "status": {"used": {"pods": "5", "requests.cpu": "500m"}}}
    live = ObservedObject.from_body(
        quota.kind, quota.namespace, quota.name, quota.uid, with_usage, owned=quota.owned
    )
    plan = plan_namespace(view(ns, [base], [live], sa), POLICY)
    assert plan.actions == ()
    [problem] = plan.outcomes["org"].problems
    assert problem.reason is Reason.QUOTA_BELOW_USAGE
    assert "pods (used 5, hard 2)" in problem.message
    assert "requests.cpu" not in problem.message
    assert not plan.outcomes["org"].failed


def test_an_object_labelled_as_a_baselines_but_not_written_by_us_is_unrepairable_drift() -> None:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    impostor = ObservedObject.from_body(
        "NetworkPolicy",
        "team-a",
        "allow-everything",
        "u7",
        {
            "metadata": {
                "name": "allow-everything",
                "labels": {
                    "app.kubernetes.io/managed-by": "baseline-operator",
                    "baseline.dev/baseline": "org",
                },
            }
        },
    )
    plan = plan_namespace(view(ns, [base], [*objects, impostor], sa), POLICY)
    assert plan.actions == ()
    [finding] = plan.outcomes["org"].unrepairable
    assert (finding.kind, finding.name, finding.reason) == (
        "NetworkPolicy",
        "allow-everything",
        Reason.UNEXPECTED,
    )


def test_a_default_service_account_not_there_yet_is_created_with_our_field_only() -> None:
    # Waiting for the ServiceAccount controller costs seconds under load; it would create the same object.
    ns = namespace()
    plan = plan_namespace(NamespaceView(ns.name, ns, [baseline("org", FULL)], [], None, ROLES), POLICY)
    [create] = [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "ServiceAccount"]
    assert create.create_only_if_absent  # no force: merges into one created meanwhile, takes nothing over
    assert create.body == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "default",
            "namespace": ns.name,
            # Taken over from nobody: released, the field goes (takeover.py).
            "annotations": {"baseline.dev/previous-values": '{"automountServiceAccountToken":null}'},
        },
        "automountServiceAccountToken": False,
    }
    assert create.finding.reason is Reason.MISSING
    assert not plan.outcomes["org"].waiting


def test_an_audit_baseline_waits_for_the_default_service_account_instead_of_reporting_it_missing() -> None:
    ns = namespace()
    audit = baseline("org", {**FULL, "mode": "Audit"})
    plan = plan_namespace(NamespaceView(ns.name, ns, [audit], [], None, ROLES), POLICY)
    assert plan.actions == ()
    assert plan.outcomes["org"].waiting  # so its later report is roll-out, not drift
    assert "ServiceAccount" not in {finding.kind for finding in plan.outcomes["org"].findings}


def test_a_baseline_whose_spec_turned_invalid_keeps_what_it_wrote() -> None:
    # Stored before a CRD upgrade, say: its objects stay (a default-deny dropped because of a typo
    # elsewhere would be the worst way to report the typo), and so do the Namespace and
    # ServiceAccount fields, since nothing tells which baseline set them.
    objects, ns, sa = converged(namespace(), baseline("org", FULL))
    broken = ObservedBaseline(
        "org", "uid-org", 2, None, SpecError("spec.resourceQuota.hard[pods]", "'-1' must not be negative")
    )
    plan = plan_namespace(view(ns, [broken], objects, sa), POLICY)
    assert plan.actions == ()
    assert plan.outcomes == {}


def test_a_valid_baseline_still_prunes_its_own_objects_beside_an_invalid_one() -> None:
    objects, ns, sa = converged(namespace(), baseline("org", FULL))
    broken = ObservedBaseline("other", "uid-other", 1, None, SpecError("spec.mode", "bad"))
    narrowed = baseline("org", {"networkPolicy": {}}, generation=2)
    plan = plan_namespace(view(ns, [narrowed, broken], objects, sa), POLICY)
    deleted = sorted(a.name for a in plan.actions if isinstance(a, Delete))
    assert deleted == ["baseline-limits", "baseline-quota", "baseline-team"]
    # Whose Pod Security labels are these? With an invalid baseline about, they stay.
    assert not [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "Namespace"]


# -- the floor: nothing released by a failed build, nothing weaker after a release, writes in order ------

TEAM = {
    **FULL,
    "namespaceSelector": {"matchLabels": {"tier": "prod"}},
    "rbac": {
        "roleBindings": [
            {
                "name": "team",
                "clusterRole": "view",
                "subjects": [{"kind": "Group", "name": "team-${label:team}"}],
            }
        ]
    },
}


def test_a_build_that_fails_after_convergence_keeps_every_object_and_field_and_says_why() -> None:
    base = baseline("org", TEAM)
    objects, ns, sa = converged(namespace(labels={"tier": "prod", "team": "a"}), base)
    assert ns.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    without_team = dataclasses.replace(ns, labels={k: v for k, v in ns.labels.items() if k != "team"})
    plan = plan_namespace(view(without_team, [base], objects, sa), POLICY)
    assert plan.actions == ()  # no delete, no release of the Pod Security labels or the token setting
    [problem] = plan.outcomes["org"].problems
    assert problem.reason is Reason.PLACEHOLDER
    assert "team" in problem.message


def test_while_one_baseline_cannot_be_built_another_ones_namespace_apply_keeps_its_labels() -> None:
    # `org` (Pod Security, a placeholder) fails; `net` still marks the namespace: that apply must not drop
    # the labels `org` set.
    org = baseline("org", TEAM)
    net = baseline("net", {"namespaceSelector": {"matchLabels": {"tier": "prod"}}, "networkPolicy": {}})
    objects, ns, sa = converged(namespace(labels={"tier": "prod", "team": "a"}), org)
    without_team = dataclasses.replace(ns, labels={k: v for k, v in ns.labels.items() if k != "team"})
    plan = plan_namespace(view(without_team, [org, net], objects, sa), POLICY)
    for action in plan.actions:
        assert isinstance(action, Apply)
        if action.body["kind"] == "Namespace":
            assert action.body["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_an_enforce_baseline_marks_the_namespace_and_an_audit_one_does_not() -> None:
    plan = plan_namespace(view(namespace(), [baseline("net", {"networkPolicy": {}})]), POLICY)
    [mark] = [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "Namespace"]
    assert mark.body["metadata"]["labels"] == {"baseline.dev/enforced": "true"}
    audit = baseline("org", {**FULL, "mode": "Audit"})
    plan = plan_namespace(view(namespace(), [audit]), POLICY)
    assert plan.actions == ()


def test_an_admins_pod_security_level_is_recorded_at_takeover_and_given_back_on_release() -> None:
    base = baseline("org", FULL)
    before = dataclasses.replace(
        namespace(labels={"pod-security.kubernetes.io/enforce": "baseline"}),
        field_owners={("metadata", "labels", "pod-security.kubernetes.io/enforce"): "kubectl-label"},
    )
    plan = plan_namespace(view(before, [base]), POLICY)
    [apply] = [a for a in plan.actions if isinstance(a, Apply) and a.body["kind"] == "Namespace"]
    record = json.loads(apply.body["metadata"]["annotations"]["baseline.dev/previous-values"])
    assert record["pod-security.kubernetes.io/enforce"] == {"value": "baseline", "manager": "kubectl-label"}
    # Converged, then the baseline no longer selects it: give back first, then let go.
    after = ObservedNamespace(
        name=before.name,
        uid=before.uid,
        labels={**before.labels, **apply.body["metadata"]["labels"]},
        terminating=False,
        owned=frozenset(
            ("metadata", field, key)
            for field in ("labels", "annotations")
            for key in apply.body["metadata"][field]
        ),
        previous_values=apply.body["metadata"]["annotations"]["baseline.dev/previous-values"],
    )
    plan = plan_namespace(view(after, []), POLICY)
    give_back, release = plan.actions
    assert isinstance(give_back, Apply)
    assert give_back.field_manager == "kubectl-label"
    assert give_back.body["metadata"]["labels"] == {"pod-security.kubernetes.io/enforce": "baseline"}
    assert give_back.body["metadata"]["uid"] == after.uid
    assert isinstance(release, Apply)
    assert release.field_manager == "baseline-operator"
    assert "labels" not in release.body["metadata"]
    assert stage_of(give_back) < stage_of(release)


def test_writes_come_in_stages_allows_before_the_deny_and_the_deny_deleted_before_the_allows() -> None:
    base = baseline("org", FULL)
    plan = plan_namespace(view(namespace(), [base]), POLICY)
    names = [a.body["metadata"]["name"] for a in plan.actions if isinstance(a, Apply)]
    assert names.index("baseline-allow-dns") < names.index("baseline-default-deny")
    assert names.index("baseline-default-deny") == len(names) - 2  # then the Namespace
    assert stage_of(plan.actions[-1]) is Stage.NAMESPACE
    objects, ns, sa = converged(namespace(), base)
    plan = plan_namespace(view(ns, [], objects, sa), POLICY)
    deletes = [a for a in plan.actions if isinstance(a, Delete)]
    assert deletes[0].name == "baseline-default-deny"
    assert [stage_of(a) for a in plan.actions] == sorted(stage_of(a) for a in plan.actions)


def test_every_repair_of_an_existing_object_carries_its_uid() -> None:
    base = baseline("org", FULL)
    objects, ns, sa = converged(namespace(), base)
    deny = next(o for o in objects if o.name == "baseline-default-deny")
    emptied = {**deny.body, "spec": {"podSelector": {}, "policyTypes": []}}
    tampered = ObservedObject.from_body(
        deny.kind, deny.namespace, deny.name, deny.uid, emptied, owned=deny.owned
    )
    objects = [o for o in objects if o.name != deny.name] + [tampered]
    [repair] = plan_namespace(view(ns, [base], objects, sa), POLICY).actions
    assert isinstance(repair, Apply)
    assert repair.body["metadata"]["uid"] == deny.uid
    assert restores_isolation(repair.finding)


def test_egress_policies_of_the_namespace_shape_the_block_and_one_opening_the_metadata_api_is_reported() -> (
    None
):
    open_egress = baseline("org", {"networkPolicy": {"defaultDeny": {"ingress": True, "egress": False}}})
    database = observe_policy(
        {
            "metadata": {"name": "db-egress", "namespace": "team-a", "uid": "p1"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]}],
            },
        }
    )
    everything = observe_policy(
        {
            "metadata": {"name": "web-out", "namespace": "team-a", "uid": "p2"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{}],
            },
        }
    )
    ns = namespace()
    plan = plan_namespace(
        NamespaceView(ns.name, ns, [open_egress], [], account(ns.name), ROLES, (database, everything)), POLICY
    )
    blocks = [
        a.body
        for a in plan.actions
        if isinstance(a, Apply) and a.body["metadata"]["name"].startswith("baseline-block")
    ]
    [block] = blocks
    assert block["spec"]["podSelector"] == {
        "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db", "web"]}]
    }
    [problem] = plan.outcomes["org"].problems
    assert problem.reason is Reason.METADATA_REACHABLE
    assert problem.name == "web-out"
    assert "169.254.169.254/32" in problem.message
    assert not plan.outcomes["org"].failed  # reported, not blocking


def test_an_enforced_namespace_carries_the_label_keys_admission_protection_keeps() -> None:
    org = baseline("org", {"namespaceSelector": {"matchLabels": {"tier": "tenant"}}, "limitRange": {}})
    team = baseline(
        "team",
        {
            "mode": "Enforce",
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
            "resourceQuota": {"hard": {"pods": "10"}},
        },
    )
    view = NamespaceView(
        name="team-a",
        namespace=namespace("team-a", {"tier": "tenant"}),
        baselines=[org, team],
        objects=[],
        default_service_account=None,
        cluster_roles=ROLES,
    )
    [body] = [
        action.body
        for action in plan_namespace(view, POLICY).actions
        if isinstance(action, Apply) and action.body["kind"] == "Namespace"
    ]
    # Every Enforce baseline's keys: a label that would move the namespace to another baseline counts too.
    assert body["metadata"]["annotations"]["baseline.dev/protected-labels"] == "team,tier"
