# Inputs shared by the policy tests: a workload and a role that break no rule, and how to ask which
# rules an input breaks. Each test changes one thing in a compliant input, so a failure points at one rule.
package main

digest := "sha256:4e6f1c3d2b0a99887766554433221100ffeeddccbbaa00112233445566778899"

compliant_container(name) := {
	"name": name,
	"image": sprintf("registry.example/%s@%s", [name, digest]),
	"imagePullPolicy": "Always",
	"resources": {
		"requests": {"cpu": "100m", "memory": "128Mi"},
		"limits": {"cpu": "1", "memory": "256Mi"},
	},
	"securityContext": {
		"readOnlyRootFilesystem": true,
		"allowPrivilegeEscalation": false,
		"privileged": false,
		"capabilities": {"drop": ["ALL"]},
	},
}

compliant_pod_spec := {
	"securityContext": {
		"runAsNonRoot": true,
		"runAsUser": 15555,
		"runAsGroup": 15555,
		"fsGroup": 15555,
		"seccompProfile": {"type": "RuntimeDefault"},
	},
	"containers": [compliant_container("web")],
	"volumes": [{"name": "tmp", "emptyDir": {}}],
}

compliant_deployment := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "web", "namespace": "shop"},
	"spec": {"template": {"spec": compliant_pod_spec}},
}

pod := "/spec/template/spec"

container := "/spec/template/spec/containers/0"

# The compliant Deployment with one JSON Patch "add" (which replaces an existing value) applied.
deployment_with(path, value) := json.patch(compliant_deployment, [{"op": "add", "path": path, "value": value}])

deployment_without(path) := json.patch(compliant_deployment, [{"op": "remove", "path": path}])

compliant_cluster_role := {
	"apiVersion": "rbac.authorization.k8s.io/v1",
	"kind": "ClusterRole",
	"metadata": {"name": "reader"},
	"rules": [
		{"apiGroups": [""], "resources": ["configmaps", "namespaces"], "verbs": ["get", "list", "watch"]},
		{
			"apiGroups": ["rbac.authorization.k8s.io"],
			"resources": ["clusterroles"],
			"verbs": ["bind"],
			"resourceNames": ["view"],
		},
		{"nonResourceURLs": ["/healthz", "/version"], "verbs": ["get"]},
	],
}

cluster_role_with_rule(rule) := json.patch(compliant_cluster_role, [{"op": "add", "path": "/rules/-", "value": rule}])

denials(obj) := result if {
	result := deny with input as obj
}

# The rule names of everything `obj` is denied for.
broken_rules(obj) := {rule |
	some msg in denials(obj)
	rule := split(msg, ": ")[2]
}

breaks(obj, rule) if rule in broken_rules(obj)

test_compliant_inputs_are_not_denied if {
	count(denials(compliant_deployment)) == 0
	count(denials(compliant_cluster_role)) == 0
}

test_objects_without_pods_or_rules_are_not_denied if {
	count(denials({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}})) == 0
	count(denials({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})) == 0
}
