"""The workloads section: parsing, the ValidatingAdmissionPolicy it renders (golden file), exemptions.

Whether the CEL admits and refuses the right Pods is judged by the API server in
tests/e2e/test_workload_rules.py; here: the shape, and which exemption is in force when.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_records import POLICY, ROLES, baseline, namespace
from workload_cases import BREAKS, POD_RULES, REGISTRY, broken, compliant_pod_spec

from baseline_operator.builders.workload_policy import build_workload_policy, workload_policy_name
from baseline_operator.cluster_objects import ClusterSettings, plan_cluster_objects
from baseline_operator.controls import METADATA_BLOCK_CONTROLS, RULE_CONTROLS, SECTION_CONTROLS
from baseline_operator.exemptions import (
    ExemptionState,
    next_change,
    rule_lifted_in,
    section_lifted,
    state,
    status_entries,
)
from baseline_operator.planner import MAX_VIOLATIONS_LISTED, Apply, NamespaceView, Reason, plan_namespace
from baseline_operator.pods import ObservedPod, observe_pod, workload_of
from baseline_operator.spec import BaselineRef, Section, SpecError, WorkloadRule, parse_spec
from baseline_operator.workload_audit import violations

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
LONGEST = dt.timedelta(days=90)
GOLDEN = Path(__file__).parent / "golden" / "workloads" / "policy.expected.yaml"


def spec(**fields: Any) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"tier": "tenant"}}, **fields}


def exemption(days: float, **fields: Any) -> dict[str, Any]:
    expires = NOW + dt.timedelta(days=days)
    return {
        "namespaces": ["team-a"],
        "reason": "vendor image, ticket SEC-1",
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields,
    }


def test_every_rule_is_on_by_default_and_each_switches_off() -> None:
    parsed = parse_spec(spec(workloads={}))
    assert parsed.workloads is not None
    assert parsed.workloads.rules() == tuple(WorkloadRule)[:10] + tuple(WorkloadRule)[11:]  # no registries
    off = parse_spec(
        spec(
            workloads={
                "minUID": None,
                "requireLimits": [],
                "noHostPath": False,
                "allowedRegistries": ["r.io/"],
            }
        )
    ).workloads
    assert off is not None
    rules = off.rules()
    assert WorkloadRule.MIN_UID not in rules
    assert WorkloadRule.REQUIRE_LIMITS not in rules
    assert WorkloadRule.NO_HOST_PATH not in rules
    assert WorkloadRule.ALLOWED_REGISTRIES in rules


@pytest.mark.parametrize(
    ("workloads", "path"),
    [
        ({"minUID": -1}, "spec.workloads.minUID"),
        ({"minUID": "10001"}, "spec.workloads.minUID"),
        ({"allowedRegistries": ["ghcr.io"]}, "spec.workloads.allowedRegistries[0]"),
        ({"allowedRegistries": ["GHCR.io/"]}, "spec.workloads.allowedRegistries[0]"),
        ({"requireRequests": ["cpu", "not a resource"]}, "spec.workloads.requireRequests[1]"),
        ({"noPrivileged": "yes"}, "spec.workloads.noPrivileged"),
        ({"noSuchRule": True}, "spec.workloads.noSuchRule"),
    ],
)
def test_bad_rule_parameters_are_refused_naming_the_field(workloads: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec(workloads=workloads))
    assert error.value.field == path


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"reason": "because"}, "spec.exemptions[0].reason"),
        ({"reason": None}, "spec.exemptions[0].reason"),
        ({"expires": "next week"}, "spec.exemptions[0].expires"),
        ({"expires": "2027-01-01T00:00:00"}, "spec.exemptions[0].expires"),
        ({"namespaces": []}, "spec.exemptions[0].namespaces"),
        ({"namespaces": ["Team_A"]}, "spec.exemptions[0].namespaces[0]"),
        ({"rules": ["noSuchRule"]}, "spec.exemptions[0].rules[0]"),
        ({"sections": ["nothing"]}, "spec.exemptions[0].sections[0]"),
        ({"rules": None}, "spec.exemptions[0]"),  # neither sections nor rules
    ],
)
def test_bad_exemptions_are_refused_naming_the_field(change: dict[str, Any], path: str) -> None:
    raw = exemption(10, rules=["minUID"])
    raw.update(change)
    raw = {key: value for key, value in raw.items() if value is not None or key == "reason"}
    with pytest.raises(SpecError) as error:
        parse_spec(spec(exemptions=[raw]))
    assert error.value.field == path


def test_the_policy_renders_as_its_golden_file() -> None:
    parsed = parse_spec(
        spec(
            workloads={"allowedRegistries": ["registry.example.com/", "ghcr.io/acme/"]},
            excludeNamespaces=["sandbox-*", "legacy"],
        )
    )
    assert parsed.workloads is not None
    rendered = build_workload_policy(
        parsed.workloads,
        BaselineRef("org", "uid-org"),
        selector=parsed.namespace_selector,
        exclude_namespaces=parsed.exclude_namespaces,
        protected_namespaces=frozenset({"kube-system", "baseline-system"}),
        audit=False,
        exempt={WorkloadRule.REQUIRE_DIGEST: ["team-a", "team-b"]},
    )
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(yaml.safe_dump_all(rendered, sort_keys=False, width=110))
    assert rendered == list(yaml.safe_load_all(GOLDEN.read_text()))
    policy, binding = rendered
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == workload_policy_name("org")
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_audit_warns_and_records_and_no_rule_means_no_policy() -> None:
    parsed = parse_spec(spec(mode="Audit", workloads={}))
    assert parsed.workloads is not None
    rendered = build_workload_policy(
        parsed.workloads,
        BaselineRef("org", "uid-org"),
        selector=parsed.namespace_selector,
        exclude_namespaces=(),
        protected_namespaces=frozenset(),
        audit=True,
        exempt={},
    )
    assert rendered[1]["spec"]["validationActions"] == ["Warn", "Audit"]
    nothing = parse_spec(
        spec(
            workloads={
                **{rule.value: False for rule in WorkloadRule},
                "minUID": None,
                "requireRequests": [],
                "requireLimits": [],
                "allowedRegistries": [],
            }
        )
    ).workloads
    assert nothing is not None
    assert nothing.rules() == ()


def test_an_exemption_is_in_force_until_it_expires_and_only_within_the_longest_allowed() -> None:
    parsed = parse_spec(
        spec(
            exemptions=[
                exemption(3, rules=["requireDigest"]),
                exemption(-1, sections=["workloads"], namespaces=["team-b"]),
                exemption(200, sections=["limitRange"], namespaces=["team-c"]),
            ]
        )
    )
    active, expired, too_long = parsed.exemptions
    assert [state(one, NOW, LONGEST) for one in parsed.exemptions] == [
        ExemptionState.ACTIVE,
        ExemptionState.EXPIRED,
        ExemptionState.TOO_LONG,
    ]
    assert rule_lifted_in(parsed.exemptions, WorkloadRule.REQUIRE_DIGEST, NOW, LONGEST) == ["team-a"]
    assert rule_lifted_in(parsed.exemptions, WorkloadRule.MIN_UID, NOW, LONGEST) == []
    assert not section_lifted(parsed.exemptions, "team-c", Section.LIMIT_RANGE, NOW, LONGEST)
    # The next moment anything changes: the active one's expiry (the long one comes within 90 days later).
    assert next_change(parsed.exemptions, NOW, LONGEST) == active.expires
    assert next_change([too_long], NOW, LONGEST) == too_long.expires - LONGEST
    assert next_change([expired], NOW, LONGEST) is None
    entries = status_entries(parsed.exemptions, NOW, LONGEST)
    assert [entry["state"] for entry in entries] == ["Active", "Expired", "TooLong"]
    assert entries[0]["rules"] == ["requireDigest"]
    assert entries[1]["sections"] == ["workloads"]


def test_an_exempted_section_is_not_applied_in_its_namespaces_and_applies_after_the_expiry() -> None:
    org = baseline(
        "org",
        spec(
            limitRange={"default": {"cpu": "500m"}},
            exemptions=[exemption(1, sections=["limitRange"])],
        ),
    )

    def applied(name: str, now: dt.datetime | None) -> set[str]:
        view = NamespaceView(
            name=name,
            namespace=namespace(name, {"tier": "tenant"}),
            baselines=[org],
            objects=[],
            default_service_account=None,
            cluster_roles=ROLES,
            now=now,
        )
        return {
            action.body["kind"]
            for action in plan_namespace(view, POLICY).actions
            if isinstance(action, Apply) and action.body["kind"] == "LimitRange"
        }

    assert applied("team-a", NOW) == set()
    assert applied("team-b", NOW) == {"LimitRange"}
    assert applied("team-a", NOW + dt.timedelta(days=2)) == {"LimitRange"}
    assert applied("team-a", None) == {"LimitRange"}  # no clock: nothing is lifted


def test_the_cluster_plan_renders_the_exemption_and_looks_again_at_its_expiry() -> None:
    org = baseline("org", spec(workloads={}, exemptions=[exemption(1, rules=["requireDigest"])]))
    plan = plan_cluster_objects([org], [], [], lambda _: False, settings=ClusterSettings(), now=NOW)
    policy, binding = (write.body for write in plan.writes)
    assert policy is not None
    assert binding is not None
    assert [(w.kind.kind, w.name) for w in plan.writes] == [
        ("ValidatingAdmissionPolicy", "baseline-org-workloads"),
        ("ValidatingAdmissionPolicyBinding", "baseline-org-workloads"),
    ]
    digest = next(v for v in policy["spec"]["validations"] if "requireDigest" in v["messageExpression"])
    assert digest["expression"].startswith("request.namespace in ['team-a'] || ")
    assert org.spec is not None
    assert plan.next_change == org.spec.exemptions[0].expires
    later = plan_cluster_objects(
        [org], [], [], lambda _: False, settings=ClusterSettings(), now=NOW + dt.timedelta(days=2)
    )
    later_policy = later.writes[0].body
    assert later_policy is not None
    assert not any("request.namespace in" in v["expression"] for v in later_policy["spec"]["validations"])
    assert later.next_change is None


# -- the audit of running Pods -----------------------------------------------------------------------


def running(
    spec: dict[str, Any], *, owner: tuple[str, str] | None = None, name: str = "web-7d9-abcde"
) -> ObservedPod:
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "labels": {}}
    if owner is not None:
        metadata["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
        if owner[0] == "ReplicaSet":
            metadata["labels"]["pod-template-hash"] = owner[1].rsplit("-", 1)[1]
    return observe_pod({"metadata": metadata, "spec": spec})


# Where breaking one rule also breaks another (the API server would refuse the Pod otherwise).
ALSO_BROKEN = {"noPrivileged": {"noPrivilegeEscalation"}, "requireRequests": {"requireLimits"}}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_the_audit_finds_exactly_the_rule_a_pod_breaks(rule: str) -> None:
    workloads = parse_spec(spec(workloads={"allowedRegistries": [REGISTRY]})).workloads
    assert workloads is not None
    assert violations([running(compliant_pod_spec())], workloads, lambda _: False) == []
    found = violations([running(broken(rule))], workloads, lambda _: False)
    assert {violation.rule.value for violation in found} == {rule} | ALSO_BROKEN.get(rule, set())
    assert all(violation.container == ("" if rule in POD_RULES else "app") for violation in found)
    # An exemption of the rule hides it.
    lifted = violations([running(broken(rule))], workloads, lambda lifted_rule: lifted_rule.value == rule)
    assert rule not in {violation.rule.value for violation in lifted}


def test_replicas_count_once_as_their_workload() -> None:
    workloads = parse_spec(spec(workloads={})).workloads
    assert workloads is not None
    pods = [
        running(broken("requireDigest"), owner=("ReplicaSet", "web-7d9"), name=f"web-7d9-{suffix}")
        for suffix in ("a", "b", "c")
    ]
    pods.append(running(broken("requireDigest"), owner=("StatefulSet", "db"), name="db-0"))
    found = [v for v in violations(pods, workloads, lambda _: False) if v.rule is WorkloadRule.REQUIRE_DIGEST]
    assert [v.workload for v in found] == ["Deployment/web", "StatefulSet/db"]
    assert workload_of({"name": "lonely"}) == "Pod/lonely"


def test_the_planner_lists_a_bounded_few_and_counts_them_all() -> None:
    org = baseline("org", spec(workloads={}))
    pods = [
        running(broken("requireDigest"), owner=("StatefulSet", f"db{index}"), name=f"db{index}-0")
        for index in range(15)
    ]
    view = NamespaceView(
        name="team-a",
        namespace=namespace("team-a", {"tier": "tenant"}),
        baselines=[org],
        objects=[],
        default_service_account=None,
        cluster_roles=ROLES,
        pods=pods,
        now=NOW,
    )
    outcome = plan_namespace(view, POLICY).outcomes["org"]
    listed = [problem for problem in outcome.problems if problem.reason is Reason.WORKLOAD_VIOLATION]
    assert len(listed) == MAX_VIOLATIONS_LISTED
    assert outcome.workload_violations["requireDigest"] == 15
    assert "breaks rule requireDigest" in listed[0].message
    assert listed[0].controls == ("CIS-5.5.1", "C-0306")
    assert not outcome.failed  # a finding about workloads, not a failure to apply the baseline


def test_docs_controls_maps_every_rule_and_section() -> None:
    controls = (Path(__file__).parents[2] / "docs" / "controls.md").read_text()
    rows = {line.split("|")[1].strip() for line in controls.splitlines() if line.startswith("| `")}
    for rule in WorkloadRule:
        assert f"`{rule.value}`" in rows, rule
    for section in Section:
        if section is not Section.WORKLOADS:
            assert any(row.startswith(f"`{section.value}") for row in rows), section


def test_the_controls_in_status_are_those_docs_controls_lists() -> None:
    controls = (Path(__file__).parents[2] / "docs" / "controls.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in controls.splitlines()
        if line.startswith("| `")
    }
    for rule, ids in RULE_CONTROLS.items():
        for control in ids:
            assert control.removeprefix("CIS-") in rows[rule.value], (rule, control)
    for section, ids in SECTION_CONTROLS.items():
        row = " ".join(line for key, line in rows.items() if key.startswith(section.value))
        for control in ids:
            assert control.removeprefix("CIS-") in row, (section, control)
    assert all(control in rows["networkPolicy.metadataAPI"] for control in METADATA_BLOCK_CONTROLS)
