import pytest

from baseline_operator.builders import BuildContext, BuildError, PlaceholderError, build_section
from baseline_operator.builders.role_bindings import render_placeholders
from baseline_operator.spec import BaselineRef, NamespaceInfo, Section, parse_spec

BASELINE = BaselineRef("team-access", "5e5e5e5e-4444-4d4d-9e9e-3f3f3f3f3f3f")


def role_bindings_of(spec, ctx):
    """The RoleBindings of the rbac section (it also sets the default ServiceAccount's token field)."""
    return [body for body in build_section(Section.RBAC, spec, ctx) if body["kind"] == "RoleBinding"]


def context(labels=None, name="payments"):
    return BuildContext(baseline=BASELINE, namespace=NamespaceInfo(name, labels or {}))


def rbac(*subjects, name="team-edit"):
    return parse_spec(
        {"rbac": {"roleBindings": [{"name": name, "clusterRole": "edit", "subjects": list(subjects)}]}}
    )


def test_missing_label_names_binding_subject_and_label():
    spec = rbac({"kind": "Group", "name": "view-all"}, {"kind": "Group", "name": "team-${label:team}"})
    with pytest.raises(PlaceholderError) as raised:
        role_bindings_of(spec, context({"owner": "x"}))
    error = raised.value
    assert (error.binding, error.subject, error.label) == ("team-edit", "team-${label:team}", "team")
    assert "team-edit" in str(error)
    assert "team-${label:team}" in str(error)
    assert "'team'" in str(error)
    assert "payments" in str(error)
    assert isinstance(error, BuildError)


def test_empty_label_value_is_refused_rather_than_binding_a_half_name():
    spec = rbac({"kind": "Group", "name": "team-${label:team}"})
    with pytest.raises(PlaceholderError, match="empty") as raised:
        role_bindings_of(spec, context({"team": ""}))
    assert raised.value.label == "team"


def test_service_account_name_that_renders_invalid_is_refused():
    spec = rbac({"kind": "ServiceAccount", "name": "ci-${label:Team}"})
    with pytest.raises(PlaceholderError, match="invalid"):
        role_bindings_of(spec, context({"Team": "Payments_Squad"}))


def test_placeholders_in_service_account_namespace():
    spec = rbac({"kind": "ServiceAccount", "name": "deployer", "namespace": "${label:ci-namespace}"})
    [binding] = role_bindings_of(spec, context({"ci-namespace": "ci-prod"}))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci-prod"}]


def test_service_account_namespace_defaults_to_the_target_namespace():
    spec = rbac({"kind": "ServiceAccount", "name": "deployer"})
    [binding] = role_bindings_of(spec, context(name="shop"))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "deployer", "namespace": "shop"}]
    assert binding["metadata"]["namespace"] == "shop"


def test_users_and_groups_get_the_rbac_api_group_and_no_namespace():
    spec = rbac(
        {"kind": "User", "name": "alice@example.com"}, {"kind": "Group", "name": "${namespace}-admins"}
    )
    [binding] = role_bindings_of(spec, context())
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.com"},
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "payments-admins"},
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "edit",
    }
    assert binding["metadata"]["name"] == "baseline-team-edit"


def test_substitution_is_a_single_pass():
    namespace = NamespaceInfo("payments", {"a": "x", "b": "y"})
    assert (
        render_placeholders("${label:a}${label:b}-${namespace}", namespace, binding="b", subject="s")
        == "xy-payments"
    )


def test_role_bindings_are_sorted_by_name():
    spec = parse_spec(
        {
            "rbac": {
                "roleBindings": [
                    {"name": name, "clusterRole": "view", "subjects": [{"kind": "User", "name": "u"}]}
                    for name in ("zeta", "alpha", "mid")
                ]
            }
        }
    )
    names = [body["metadata"]["name"] for body in role_bindings_of(spec, context())]
    assert names == ["baseline-alpha", "baseline-mid", "baseline-zeta"]


def test_a_baseline_name_too_long_for_a_label_value_is_a_build_error():
    spec = rbac({"kind": "User", "name": "u"})
    long_name = BuildContext(baseline=BaselineRef("a" * 64, "uid"), namespace=NamespaceInfo("payments"))
    with pytest.raises(BuildError, match="label value"):
        build_section(Section.RBAC, spec, long_name)
