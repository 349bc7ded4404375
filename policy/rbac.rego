# What a Role or ClusterRole may grant. Least privilege, written out: every verb, resource and API group
# named (a wildcard also grants whatever is added to the API later); no way to grant oneself more
# (escalate, impersonate, bind to any role); no Secrets, which hold the credentials of everything else.
# Bindings are not checked here: what they grant is whatever the role they name allows.
package main

import data.lib.kubernetes as k8s

rule_where(i) := sprintf("rules[%d]", [i])

deny contains msg if {
	k8s.is_role
	some i, rule in input.rules
	some field in ["apiGroups", "resources", "verbs"]
	"*" in object.get(rule, field, [])
	msg := k8s.message(rule_where(i), "rbac-no-wildcard", sprintf("%s must not contain \"*\"", [field]))
}

deny contains msg if {
	k8s.is_role
	some i, rule in input.rules
	some verb in ["escalate", "impersonate"]
	verb in object.get(rule, "verbs", [])
	msg := k8s.message(rule_where(i), "rbac-no-escalate-impersonate", sprintf("verb %q is not allowed", [verb]))
}

deny contains msg if {
	k8s.is_role
	some i, rule in input.rules
	some resource in object.get(rule, "resources", [])
	secrets_resource(resource)
	msg := k8s.message(rule_where(i), "rbac-no-secrets", sprintf("resource %q grants access to Secrets", [resource]))
}

secrets_resource("secrets")

secrets_resource(resource) if startswith(resource, "secrets/")

# `bind` lifts the rule that a binding's creator must hold every permission it grants; it is acceptable
# only for the named roles.
deny contains msg if {
	k8s.is_role
	some i, rule in input.rules
	"bind" in object.get(rule, "verbs", [])
	count(object.get(rule, "resourceNames", [])) == 0
	msg := k8s.message(rule_where(i), "rbac-bind-resource-names", "verb \"bind\" needs resourceNames listing the roles that may be bound")
}

deny contains msg if {
	k8s.is_role
	some i, rule in input.rules
	"*" in object.get(rule, "nonResourceURLs", [])
	msg := k8s.message(rule_where(i), "rbac-no-wildcard-non-resource-urls", "nonResourceURLs must not contain \"*\"")
}
