import copy
import dataclasses
import ipaddress
from pathlib import Path

import pytest
import yaml

from baseline_operator.spec import (
    DEFAULT_METADATA_PROVIDERS,
    BaselineSpec,
    DefaultDeny,
    DefaultServiceAccountSpec,
    FrozenMap,
    LabelSelector,
    LabelSelectorRequirement,
    LimitRangeSpec,
    MetadataAPI,
    Mode,
    NamespaceInfo,
    NetworkPolicySpec,
    PodSecurityLevel,
    PodSecuritySpec,
    RbacSpec,
    ResourceQuotaSpec,
    Section,
    SelectorOperator,
    SpecError,
    parse_spec,
)

FULL_EXAMPLE = yaml.safe_load((Path(__file__).parent / "golden" / "full-example.input.yaml").read_text())[
    "spec"
]


def test_empty_spec_gets_the_contract_defaults():
    spec = parse_spec({})
    assert spec == BaselineSpec()
    assert spec.mode is Mode.ENFORCE
    assert spec.priority == 0
    assert spec.namespace_selector == LabelSelector()
    assert spec.sections == ()


def test_empty_network_policy_section_gets_the_contract_defaults():
    section = parse_spec({"networkPolicy": {}}).network_policy
    assert section == NetworkPolicySpec(
        default_deny=DefaultDeny(ingress=True, egress=True),
        allow_dns=True,
        dns_ips=(),
        allow_same_namespace=False,
        metadata_api=MetadataAPI(block=True, providers=DEFAULT_METADATA_PROVIDERS, extra_cidrs=()),
    )
    assert len(DEFAULT_METADATA_PROVIDERS) == 13
    assert "aws-pod-identity" not in DEFAULT_METADATA_PROVIDERS


def test_partial_objects_default_their_missing_fields():
    section = parse_spec(
        {"networkPolicy": {"defaultDeny": {"ingress": False}, "metadataAPI": {"extraCIDRs": []}}}
    )
    assert section.network_policy.default_deny == DefaultDeny(ingress=False, egress=True)
    assert section.network_policy.metadata_api.providers == DEFAULT_METADATA_PROVIDERS


def test_full_contract_example():
    spec = parse_spec(FULL_EXAMPLE)
    assert spec.sections == tuple(Section)
    assert spec.limit_range == LimitRangeSpec(
        default={"cpu": "500m", "memory": "512Mi"},
        default_request={"cpu": "100m", "memory": "128Mi"},
        max={"cpu": "2", "memory": "2Gi"},
        min={"cpu": "10m", "memory": "16Mi"},
    )
    assert spec.resource_quota == ResourceQuotaSpec(
        hard={"requests.cpu": "10", "limits.memory": "20Gi", "pods": "50"}
    )
    assert spec.rbac.role_bindings[0].subjects[0].name == "team-${namespace}"
    assert spec.rbac.default_service_account.automount_token is False
    assert spec.pod_security == PodSecuritySpec(
        enforce=PodSecurityLevel.RESTRICTED,
        audit=PodSecurityLevel.RESTRICTED,
        warn=PodSecurityLevel.RESTRICTED,
        version="latest",
    )


def test_section_lookup():
    spec = parse_spec({"resourceQuota": {"hard": {"pods": "1"}}, "podSecurity": None})
    assert spec.sections == (Section.RESOURCE_QUOTA,)
    assert spec.section(Section.RESOURCE_QUOTA) is spec.resource_quota
    assert spec.section(Section.POD_SECURITY) is None, "null is treated like absent"


def test_rbac_defaults_the_default_service_account_like_the_crd_does():
    # The CRD defaults defaultServiceAccount to {} (no token); parsing agrees, so `render` shows what
    # the cluster will do.
    assert parse_spec({"rbac": {}}).rbac == RbacSpec(
        role_bindings=(), default_service_account=DefaultServiceAccountSpec(automount_token=False)
    )
    assert (
        parse_spec({"rbac": {"defaultServiceAccount": {}}}).rbac.default_service_account.automount_token
        is False
    )


def test_numbers_from_yaml_become_quantity_strings():
    spec = parse_spec({"resourceQuota": {"hard": {"pods": 50, "requests.cpu": 0.5}}})
    assert dict(spec.resource_quota.hard) == {"pods": "50", "requests.cpu": "0.5"}


def test_network_values_are_parsed_and_deduplicated():
    section = parse_spec(
        {
            "networkPolicy": {
                "dnsIPs": ["169.254.20.10", "169.254.20.10", "fd00::a"],
                "metadataAPI": {
                    "providers": ["aws", "gcp", "aws"],
                    "extraCIDRs": ["10.0.0.0/8", "fd00:1::1"],
                },
            }
        }
    ).network_policy
    assert section.dns_ips == (ipaddress.ip_address("169.254.20.10"), ipaddress.ip_address("fd00::a"))
    assert section.metadata_api.providers == ("aws", "gcp")
    assert section.metadata_api.extra_cidrs == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00:1::1/128"),
    )


def test_selector_is_parsed():
    selector = parse_spec(
        {
            "namespaceSelector": {
                "matchLabels": {"tier": "apps"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]}],
            }
        }
    ).namespace_selector
    assert selector == LabelSelector(
        FrozenMap({"tier": "apps"}),
        (LabelSelectorRequirement("env", SelectorOperator.IN, ("prod", "stage")),),
    )


def test_parse_spec_does_not_mutate_its_input():
    raw = copy.deepcopy(FULL_EXAMPLE)
    raw["networkPolicy"]["dnsIPs"] = ["169.254.20.10", "169.254.20.10"]
    raw["networkPolicy"]["metadataAPI"]["providers"] = ["aws", "aws"]
    before = copy.deepcopy(raw)
    parse_spec(raw)
    assert raw == before


def test_parsed_spec_is_immutable_and_detached_from_its_input():
    raw = copy.deepcopy(FULL_EXAMPLE)
    spec = parse_spec(raw)
    raw["limitRange"]["max"]["cpu"] = "64"
    raw["rbac"]["roleBindings"].clear()
    assert spec.limit_range.max["cpu"] == "2"
    assert len(spec.rbac.role_bindings) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.priority = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.limit_range.max["cpu"] = "64"  # type: ignore[index]
    assert hash(spec) == hash(parse_spec(FULL_EXAMPLE))
    assert copy.deepcopy(spec) == spec


def test_directly_built_values_are_frozen_copies():
    labels = {"team": "a"}
    namespace = NamespaceInfo("team-a", labels)
    limits = {"cpu": "1"}
    quota = ResourceQuotaSpec(hard=limits)
    labels["team"] = "b"
    limits["cpu"] = "2"
    assert namespace.labels["team"] == "a"
    assert quota.hard["cpu"] == "1"
    assert isinstance(namespace.labels, FrozenMap)


def test_spec_error_carries_the_field_path():
    with pytest.raises(SpecError) as raised:
        parse_spec({"mode": "enforce"})
    assert raised.value.field == "spec.mode"
    assert str(raised.value).startswith("spec.mode: ")
    assert "Enforce" in raised.value.message


def binding(name="team", subjects=None, **extra):
    subjects = [{"kind": "Group", "name": "g"}] if subjects is None else subjects
    return {"name": name, "clusterRole": "view", "subjects": subjects, **extra}


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (None, "spec", "must be an object"),
        ({"mode": "enforce"}, "spec.mode", "must be one of Enforce, Audit"),
        ({"priority": 1001}, "spec.priority", "between -1000 and 1000"),
        ({"priority": True}, "spec.priority", "must be an integer"),
        ({"priority": "1"}, "spec.priority", "must be an integer"),
        ({"nmaespaceSelector": {}}, "spec.nmaespaceSelector", "unknown field"),
        (
            {"namespaceSelector": {"matchLabels": {"tier": 1}}},
            "spec.namespaceSelector.matchLabels[tier]",
            "string",
        ),
        (
            {"namespaceSelector": {"matchLabels": {"bad key!": "x"}}},
            "spec.namespaceSelector.matchLabels[bad key!]",
            "label key",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}},
            "spec.namespaceSelector.matchExpressions[0].values",
            "must not be empty",
        ),
        (
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]
                }
            },
            "spec.namespaceSelector.matchExpressions[0].values",
            "must be empty",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Matches"}]}},
            "spec.namespaceSelector.matchExpressions[0].operator",
            "must be one of",
        ),
        ({"excludeNamespaces": "kube-*"}, "spec.excludeNamespaces", "must be a list"),
        (
            {"excludeNamespaces": [f"ns-{index}" for index in range(101)]},
            "spec.excludeNamespaces",
            "at most 100",
        ),
        ({"excludeNamespaces": ["ok", ""]}, "spec.excludeNamespaces[1]", "must not be empty"),
        ({"networkPolicy": "yes"}, "spec.networkPolicy", "must be an object"),
        ({"networkPolicy": {"allowDns": True}}, "spec.networkPolicy.allowDns", "unknown field"),
        (
            {"networkPolicy": {"defaultDeny": {"egress": "false"}}},
            "spec.networkPolicy.defaultDeny.egress",
            "true or false",
        ),
        ({"networkPolicy": {"dnsIPs": ["1.2.3"]}}, "spec.networkPolicy.dnsIPs[0]", "not an IP address"),
        ({"networkPolicy": {"dnsIPs": ["10.0.0.0/8"]}}, "spec.networkPolicy.dnsIPs[0]", "not an IP address"),
        ({"networkPolicy": {"dnsIPs": ["fe80::1%eth0"]}}, "spec.networkPolicy.dnsIPs[0]", "zone"),
        (
            {"networkPolicy": {"metadataAPI": {"providers": ["aws", "ibm"]}}},
            "spec.networkPolicy.metadataAPI.providers[1]",
            "unknown provider 'ibm'",
        ),
        (
            {"networkPolicy": {"metadataAPI": {"extraCIDRs": ["169.254.169.254/16"]}}},
            "spec.networkPolicy.metadataAPI.extraCIDRs[0]",
            "host bits set",
        ),
        (
            {"networkPolicy": {"metadataAPI": {"extraCIDRs": ["10.0.0.0/33"]}}},
            "spec.networkPolicy.metadataAPI.extraCIDRs[0]",
            "not a CIDR",
        ),
        (
            {"networkPolicy": {"metadataAPI": {"extraCIDRs": ["::/0"]}}},
            "spec.networkPolicy.metadataAPI.extraCIDRs[0]",
            "defaultDeny.egress",
        ),
        (
            {"networkPolicy": {"metadataAPI": {"block": 1}}},
            "spec.networkPolicy.metadataAPI.block",
            "true or false",
        ),
        (
            {"limitRange": {"max": {"cpu": "2 cores"}}},
            "spec.limitRange.max[cpu]",
            "not a Kubernetes quantity",
        ),
        ({"limitRange": {"max": {"cpu": True}}}, "spec.limitRange.max[cpu]", "quantity string"),
        ({"limitRange": {"max": {"cpu": "-1"}}}, "spec.limitRange.max[cpu]", "negative"),
        (
            {"limitRange": {"min": {"cpu": "2"}, "max": {"cpu": "1000m"}}},
            "spec.limitRange.min[cpu]",
            "min (2) is greater than max (1)",
        ),
        (
            {"limitRange": {"default": {"memory": "1Gi"}, "defaultRequest": {"memory": "2Gi"}}},
            "spec.limitRange.defaultRequest[memory]",
            "greater than default",
        ),
        (
            {"limitRange": {"default": {"cpu": "4"}, "max": {"cpu": "2"}}},
            "spec.limitRange.default[cpu]",
            "greater than max",
        ),
        (
            {"limitRange": {"maxLimitRequestRatio": {"cpu": "500m"}}},
            "spec.limitRange.maxLimitRequestRatio[cpu]",
            "at least 1",
        ),
        (
            {"limitRange": {"min": {"cpu": "1"}, "max": {"cpu": "2"}, "maxLimitRequestRatio": {"cpu": "3"}}},
            "spec.limitRange.maxLimitRequestRatio[cpu]",
            "max/min = 2",
        ),
        ({"limitRange": {"maximum": {}}}, "spec.limitRange.maximum", "unknown field"),
        (
            {"resourceQuota": {"hard": {"pods": "ten"}}},
            "spec.resourceQuota.hard[pods]",
            "not a Kubernetes quantity",
        ),
        ({"resourceQuota": {"hard": ["pods"]}}, "spec.resourceQuota.hard", "must be an object"),
        ({"rbac": {"roleBindings": {}}}, "spec.rbac.roleBindings", "must be a list"),
        ({"rbac": {"roleBindings": [binding(), binding()]}}, "spec.rbac.roleBindings[1].name", "duplicate"),
        (
            {"rbac": {"roleBindings": [binding(name="Team_View")]}},
            "spec.rbac.roleBindings[0].name",
            "DNS-1123 label",
        ),
        (
            {"rbac": {"roleBindings": [binding(clusterRole="")]}},
            "spec.rbac.roleBindings[0].clusterRole",
            "empty",
        ),
        (
            {"rbac": {"roleBindings": [binding(clusterRole="a/b")]}},
            "spec.rbac.roleBindings[0].clusterRole",
            "not a valid",
        ),
        ({"rbac": {"roleBindings": [binding(subjects=[])]}}, "spec.rbac.roleBindings[0].subjects", "1 to 20"),
        (
            {
                "rbac": {
                    "roleBindings": [
                        binding(subjects=[{"kind": "User", "name": f"u{index}"} for index in range(21)])
                    ]
                }
            },
            "spec.rbac.roleBindings[0].subjects",
            "found 21",
        ),
        (
            {
                "rbac": {
                    "roleBindings": [
                        binding(),
                        binding(name="other", subjects=[{"kind": "Group", "name": ""}]),
                    ]
                }
            },
            "spec.rbac.roleBindings[1].subjects[0].name",
            "must not be empty",
        ),
        (
            {"rbac": {"roleBindings": [binding(subjects=[{"kind": "Robot", "name": "r"}])]}},
            "spec.rbac.roleBindings[0].subjects[0].kind",
            "User, Group, ServiceAccount",
        ),
        (
            {
                "rbac": {
                    "roleBindings": [binding(subjects=[{"kind": "Group", "name": "g", "namespace": "ns"}])]
                }
            },
            "spec.rbac.roleBindings[0].subjects[0].namespace",
            "only ServiceAccount",
        ),
        (
            {"rbac": {"roleBindings": [binding(subjects=[{"kind": "ServiceAccount", "name": "Deployer"}])]}},
            "spec.rbac.roleBindings[0].subjects[0].name",
            "ServiceAccount name",
        ),
        (
            {"rbac": {"roleBindings": [binding(subjects=[{"kind": "Group", "name": "team-${team}"}])]}},
            "spec.rbac.roleBindings[0].subjects[0].name",
            "unknown placeholder '${team}'",
        ),
        (
            {"rbac": {"roleBindings": [binding(subjects=[{"kind": "Group", "name": "team-${label:team"}])]}},
            "spec.rbac.roleBindings[0].subjects[0].name",
            "unterminated",
        ),
        (
            {"rbac": {"roleBindings": [binding(subjects=[{"kind": "Group", "name": "${label:}"}])]}},
            "spec.rbac.roleBindings[0].subjects[0].name",
            "unknown placeholder",
        ),
        (
            {"rbac": {"defaultServiceAccount": {"automountToken": "no"}}},
            "spec.rbac.defaultServiceAccount.automountToken",
            "true or false",
        ),
        (
            {"podSecurity": {"enforce": "strict"}},
            "spec.podSecurity.enforce",
            "privileged, baseline, restricted",
        ),
        ({"podSecurity": {"version": "1.31"}}, "spec.podSecurity.version", "'latest' or 'v1.N'"),
        ({"podSecurity": {"version": "v2.0"}}, "spec.podSecurity.version", "'latest' or 'v1.N'"),
    ],
)
def test_malformed_specs_name_the_field(raw, field, message):
    with pytest.raises(SpecError) as raised:
        parse_spec(raw)
    assert raised.value.field == field
    assert message in raised.value.message


def test_valid_edge_values_are_accepted():
    spec = parse_spec(
        {
            "priority": -1000,
            "limitRange": {"min": {"cpu": "0"}, "max": {"cpu": "2"}, "maxLimitRequestRatio": {"cpu": "10"}},
            "podSecurity": {"enforce": "privileged", "version": "v1.0"},
            "rbac": {
                "roleBindings": [
                    binding(
                        subjects=[
                            {
                                "kind": "ServiceAccount",
                                "name": "sa-${label:example.com/team}",
                                "namespace": "${namespace}",
                            }
                        ]
                    )
                ]
            },
        }
    )
    assert spec.priority == -1000
    assert spec.pod_security.version == "v1.0"


CORPUS = Path(__file__).parents[1] / "baselines"
# What the CRD refuses but the operator can live with, should such a spec have been stored before the
# schema refused it: the bounds exist to cap the cost of admission rules, not because more is wrong.
TOLERATED = {
    "extracidrs-not-a-cidr": "a bare address blocks that one address (/32 or /128)",
    "extracidrs-too-many": "51 CIDRs are blocked as well as 50",
    "name-too-long": "metadata, not spec: every write of that baseline is refused and reported per namespace",
    "providers-duplicate": "duplicates are dropped",
    "resourcequota-without-hard": "a quota without limits is a valid ResourceQuota",
    "spec-missing": "an empty spec manages no section, so it writes nothing",
}
REFUSED_BY_THE_CRD = sorted((CORPUS / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", REFUSED_BY_THE_CRD, ids=[path.stem for path in REFUSED_BY_THE_CRD])
def test_a_spec_the_crd_refuses_is_refused_by_the_operator_too_for_the_same_field(path):
    # A baseline stored before a CRD upgrade never met today's schema: the operator must report it,
    # naming the field the API server would have named, rather than act on it.
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    raw = yaml.safe_load(path.read_text()).get("spec")
    if path.stem in TOLERATED:
        parse_spec(raw or {})
        return
    with pytest.raises(SpecError) as raised:
        parse_spec(raw)
    if expected.startswith("unknown field"):
        assert raised.value.field == expected.split('"')[1]
    else:
        assert raised.value.field.startswith(expected.split(":")[0])


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"excludeNamespaces": ["team-*", "Kube-*"]}, "spec.excludeNamespaces[1]", "can never match"),
        ({"limitRange": {"max": {"cpus": "2"}}}, "spec.limitRange.max[cpus]", "not a container resource"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a!"]}]}},
            "spec.namespaceSelector.matchExpressions[0].values[0]",
            "not a valid label value",
        ),
        ({"rbac": {"roleBindings": [binding(name="a" * 55)]}}, "spec.rbac.roleBindings[0].name", "54"),
    ],
)
def test_what_only_the_schema_refused_before_is_refused_by_the_operator_too(raw, field, message):
    with pytest.raises(SpecError) as raised:
        parse_spec(raw)
    assert raised.value.field == field
    assert message in raised.value.message


def test_extended_and_huge_page_resources_are_container_resources():
    spec = parse_spec({"limitRange": {"max": {"hugepages-2Mi": "1Gi", "example.com/gpu": "1"}}})
    assert spec.limit_range is not None
    assert dict(spec.limit_range.max) == {"hugepages-2Mi": "1Gi", "example.com/gpu": "1"}
