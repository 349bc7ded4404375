package main

test_rbac_wildcards_fail_in_each_field if {
	msgs := denials(cluster_role_with_rule({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))
	"ClusterRole/reader: rules[3]: rbac-no-wildcard: apiGroups must not contain \"*\"" in msgs
	"ClusterRole/reader: rules[3]: rbac-no-wildcard: resources must not contain \"*\"" in msgs
	"ClusterRole/reader: rules[3]: rbac-no-wildcard: verbs must not contain \"*\"" in msgs
}

test_rbac_named_verbs_resources_and_groups_pass if {
	not breaks(compliant_cluster_role, "rbac-no-wildcard")
}

test_rbac_escalate_and_impersonate_fail if {
	msgs := denials(cluster_role_with_rule({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}))
	"ClusterRole/reader: rules[3]: rbac-no-escalate-impersonate: verb \"impersonate\" is not allowed" in msgs
	breaks(
		cluster_role_with_rule({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}),
		"rbac-no-escalate-impersonate",
	)
}

test_rbac_other_verbs_pass if {
	not breaks(compliant_cluster_role, "rbac-no-escalate-impersonate")
}

test_rbac_secrets_fail_with_any_verb if {
	msgs := denials(cluster_role_with_rule({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}))
	"ClusterRole/reader: rules[3]: rbac-no-secrets: resource \"secrets\" grants access to Secrets" in msgs
	breaks(cluster_role_with_rule({"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch"]}), "rbac-no-secrets")
}

test_rbac_other_resources_pass if {
	not breaks(compliant_cluster_role, "rbac-no-secrets")
	not breaks(cluster_role_with_rule({"apiGroups": [""], "resources": ["secretsstores"], "verbs": ["get"]}), "rbac-no-secrets")
}

test_rbac_bind_fails_without_resource_names if {
	msgs := denials(cluster_role_with_rule({
		"apiGroups": ["rbac.authorization.k8s.io"],
		"resources": ["clusterroles"],
		"verbs": ["bind"],
		"resourceNames": [],
	}))
	"ClusterRole/reader: rules[3]: rbac-bind-resource-names: verb \"bind\" needs resourceNames listing the roles that may be bound" in msgs
	breaks(
		cluster_role_with_rule({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]}),
		"rbac-bind-resource-names",
	)
}

test_rbac_bind_passes_with_resource_names if {
	not breaks(compliant_cluster_role, "rbac-bind-resource-names")
}

test_rbac_wildcard_non_resource_urls_fail if {
	msgs := denials(cluster_role_with_rule({"nonResourceURLs": ["*"], "verbs": ["get"]}))
	"ClusterRole/reader: rules[3]: rbac-no-wildcard-non-resource-urls: nonResourceURLs must not contain \"*\"" in msgs
}

test_rbac_named_non_resource_urls_pass if {
	not breaks(compliant_cluster_role, "rbac-no-wildcard-non-resource-urls")
}

test_rbac_namespaced_roles_are_checked_too if {
	role := json.patch(compliant_cluster_role, [
		{"op": "replace", "path": "/kind", "value": "Role"},
		{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}},
	])
	"Role/reader: rules[3]: rbac-no-secrets: resource \"secrets\" grants access to Secrets" in denials(role)
}

test_rbac_bindings_are_not_checked if {
	binding := {
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind": "RoleBinding",
		"metadata": {"name": "team-view", "namespace": "shop"},
		"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
		"subjects": [{"kind": "Group", "name": "team"}],
	}
	count(denials(binding)) == 0
}
