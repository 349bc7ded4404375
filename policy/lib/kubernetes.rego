# Where a Kubernetes object keeps its pod spec and containers, whatever its kind, and how a denial names
# the object, so that every rule in package main reads the same way and reports the same way.
package lib.kubernetes

# Kinds whose pod template is at spec.template.spec.
template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}

pod_spec := input.spec if input.kind == "Pod"

pod_spec := input.spec.template.spec if input.kind in template_kinds

pod_spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

is_role if input.kind in {"Role", "ClusterRole"}

# "Deployment/baseline-operator": the kind and name a reader can find the object by.
name := sprintf("%s/%s", [input.kind, object.get(input, ["metadata", "name"], "<unnamed>")])

# Every container of the pod, init containers too, with where it is: `containers[0] "operator"`.
containers contains {"where": where, "container": container} if {
	some field in ["initContainers", "containers"]
	some i, container in pod_spec[field]
	where := sprintf("%s[%d] %q", [field, i, object.get(container, "name", "")])
}

# A securityContext field as the kubelet applies it: the container's value wins over the pod's.
# Null when neither sets it. An explicit `false` counts as set.
effective(container, field) := value if {
	value := container.securityContext[field]
} else := value if {
	value := pod_spec.securityContext[field]
} else := null

# The one message format: `<Kind>/<name>: <where>: <rule>: <what is wrong>`. Tests and readers match on
# the rule, which is stable; the explanation may be reworded.
message(where, rule, text) := sprintf("%s: %s: %s: %s", [name, where, rule, text])
