# How every container the operator ships, and every container it asks tenants to run, must be confined:
# a non-root user with IDs above the host's range, no way to gain privileges, a read-only root
# filesystem, no capabilities, a seccomp profile, and nothing shared with the node.
package main

import data.lib.kubernetes as k8s

# IDs at or below this overlap users and groups that exist on nodes and in base images.
min_id := 10000

valid_id(value) if {
	is_number(value)
	value > min_id
}

deny contains msg if {
	some c in k8s.containers
	k8s.effective(c.container, "runAsNonRoot") != true
	msg := k8s.message(c.where, "run-as-non-root", "runAsNonRoot must be true (container or pod securityContext)")
}

id_rules := {"runAsUser": "run-as-user", "runAsGroup": "run-as-group"}

deny contains msg if {
	some c in k8s.containers
	some field, rule in id_rules
	k8s.effective(c.container, field) == null
	msg := k8s.message(c.where, rule, sprintf(
		"%s must be set above %d (container or pod securityContext); the image's user is not checked",
		[field, min_id],
	))
}

deny contains msg if {
	some c in k8s.containers
	some field, rule in id_rules
	value := c.container.securityContext[field]
	not valid_id(value)
	msg := k8s.message(c.where, rule, sprintf("securityContext.%s is %v; it must be above %d", [field, value, min_id]))
}

# Pod-level IDs are checked where they are written, even when every container overrides them: a
# container added later inherits them.
deny contains msg if {
	some field, rule in object.union(id_rules, {"fsGroup": "fs-group"})
	value := k8s.pod_spec.securityContext[field]
	not valid_id(value)
	msg := k8s.message("pod securityContext", rule, sprintf("%s is %v; it must be above %d", [field, value, min_id]))
}

deny contains msg if {
	some c in k8s.containers
	object.get(c.container, ["securityContext", "readOnlyRootFilesystem"], null) != true
	msg := k8s.message(c.where, "read-only-root-filesystem", "securityContext.readOnlyRootFilesystem must be true")
}

# Unset means allowed: the kernel's no_new_privs is only set when this is explicitly false.
deny contains msg if {
	some c in k8s.containers
	object.get(c.container, ["securityContext", "allowPrivilegeEscalation"], null) != false
	msg := k8s.message(c.where, "no-privilege-escalation", "securityContext.allowPrivilegeEscalation must be false")
}

deny contains msg if {
	some c in k8s.containers
	c.container.securityContext.privileged == true
	msg := k8s.message(c.where, "not-privileged", "securityContext.privileged must not be true")
}

deny contains msg if {
	some c in k8s.containers
	not "ALL" in object.get(c.container, ["securityContext", "capabilities", "drop"], [])
	msg := k8s.message(c.where, "drop-all-capabilities", "securityContext.capabilities.drop must contain ALL")
}

deny contains msg if {
	some c in k8s.containers
	added := object.get(c.container, ["securityContext", "capabilities", "add"], [])
	count(added) > 0
	msg := k8s.message(c.where, "no-added-capabilities", sprintf(
		"securityContext.capabilities.add must be empty, not %v",
		[added],
	))
}

allowed_seccomp := {"RuntimeDefault", "Localhost"}

# A container's seccompProfile replaces the pod's as a whole.
seccomp_type(container) := object.get(profile, "type", "unset") if {
	profile := k8s.effective(container, "seccompProfile")
	is_object(profile)
} else := "unset"

deny contains msg if {
	some c in k8s.containers
	profile_type := seccomp_type(c.container)
	not profile_type in allowed_seccomp
	msg := k8s.message(c.where, "seccomp-profile", sprintf(
		"seccompProfile.type must be RuntimeDefault or Localhost (container or pod securityContext); it is %v",
		[profile_type],
	))
}

deny contains msg if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	k8s.pod_spec[field] == true
	msg := k8s.message("pod spec", "no-host-namespaces", sprintf("%s must not be true", [field]))
}

deny contains msg if {
	some i, volume in k8s.pod_spec.volumes
	"hostPath" in object.keys(volume)
	msg := k8s.message(sprintf("volumes[%d] %q", [i, object.get(volume, "name", "")]), "no-host-path", sprintf(
		"hostPath volumes are not allowed (path %v)",
		[object.get(volume, ["hostPath", "path"], "unset")],
	))
}
