package main

# runAsNonRoot

test_run_as_non_root_passes_when_set_on_the_pod_only if {
	not breaks(compliant_deployment, "run-as-non-root")
}

test_run_as_non_root_passes_when_set_on_the_container_only if {
	obj := json.patch(compliant_deployment, [
		{"op": "remove", "path": concat("", [pod, "/securityContext/runAsNonRoot"])},
		{"op": "add", "path": concat("", [container, "/securityContext/runAsNonRoot"]), "value": true},
	])
	not breaks(obj, "run-as-non-root")
}

test_run_as_non_root_fails_when_unset if {
	msgs := denials(deployment_without(concat("", [pod, "/securityContext/runAsNonRoot"])))
	"Deployment/web: containers[0] \"web\": run-as-non-root: runAsNonRoot must be true (container or pod securityContext)" in msgs
}

test_run_as_non_root_fails_when_the_container_overrides_the_pod if {
	breaks(deployment_with(concat("", [container, "/securityContext/runAsNonRoot"]), false), "run-as-non-root")
}

# runAsUser, runAsGroup, fsGroup

test_run_as_user_and_group_pass_when_set_on_the_container_only if {
	obj := json.patch(compliant_deployment, [
		{"op": "remove", "path": concat("", [pod, "/securityContext/runAsUser"])},
		{"op": "remove", "path": concat("", [pod, "/securityContext/runAsGroup"])},
		{"op": "add", "path": concat("", [container, "/securityContext/runAsUser"]), "value": 20000},
		{"op": "add", "path": concat("", [container, "/securityContext/runAsGroup"]), "value": 20000},
	])
	not breaks(obj, "run-as-user")
	not breaks(obj, "run-as-group")
}

test_run_as_user_fails_when_set_nowhere if {
	breaks(deployment_without(concat("", [pod, "/securityContext/runAsUser"])), "run-as-user")
}

test_run_as_user_fails_at_or_below_10000_on_the_container if {
	msgs := denials(deployment_with(concat("", [container, "/securityContext/runAsUser"]), 1000))
	"Deployment/web: containers[0] \"web\": run-as-user: securityContext.runAsUser is 1000; it must be above 10000" in msgs
	breaks(deployment_with(concat("", [container, "/securityContext/runAsUser"]), 10000), "run-as-user")
}

test_run_as_user_fails_as_root_on_the_pod if {
	msgs := denials(deployment_with(concat("", [pod, "/securityContext/runAsUser"]), 0))
	"Deployment/web: pod securityContext: run-as-user: runAsUser is 0; it must be above 10000" in msgs
}

test_run_as_user_fails_when_not_a_number if {
	breaks(deployment_with(concat("", [container, "/securityContext/runAsUser"]), "20000"), "run-as-user")
}

test_run_as_group_fails_when_set_nowhere if {
	breaks(deployment_without(concat("", [pod, "/securityContext/runAsGroup"])), "run-as-group")
}

test_run_as_group_fails_at_10000 if {
	breaks(deployment_with(concat("", [pod, "/securityContext/runAsGroup"]), 10000), "run-as-group")
	not breaks(deployment_with(concat("", [pod, "/securityContext/runAsGroup"]), 10001), "run-as-group")
}

test_fs_group_passes_when_unset if {
	not breaks(deployment_without(concat("", [pod, "/securityContext/fsGroup"])), "fs-group")
}

test_fs_group_fails_at_or_below_10000 if {
	msgs := denials(deployment_with(concat("", [pod, "/securityContext/fsGroup"]), 2000))
	"Deployment/web: pod securityContext: fs-group: fsGroup is 2000; it must be above 10000" in msgs
}

# Container hardening

test_read_only_root_filesystem_fails_when_false_or_unset if {
	breaks(deployment_with(concat("", [container, "/securityContext/readOnlyRootFilesystem"]), false), "read-only-root-filesystem")
	breaks(deployment_without(concat("", [container, "/securityContext/readOnlyRootFilesystem"])), "read-only-root-filesystem")
}

test_read_only_root_filesystem_passes_when_true if {
	not breaks(compliant_deployment, "read-only-root-filesystem")
}

test_privilege_escalation_fails_when_true_or_unset if {
	breaks(deployment_with(concat("", [container, "/securityContext/allowPrivilegeEscalation"]), true), "no-privilege-escalation")
	breaks(deployment_without(concat("", [container, "/securityContext/allowPrivilegeEscalation"])), "no-privilege-escalation")
}

test_privilege_escalation_passes_when_false if {
	not breaks(compliant_deployment, "no-privilege-escalation")
}

test_privileged_fails_when_true if {
	msgs := denials(deployment_with(concat("", [container, "/securityContext/privileged"]), true))
	"Deployment/web: containers[0] \"web\": not-privileged: securityContext.privileged must not be true" in msgs
}

test_privileged_passes_when_false_or_unset if {
	not breaks(compliant_deployment, "not-privileged")
	not breaks(deployment_without(concat("", [container, "/securityContext/privileged"])), "not-privileged")
}

test_capabilities_drop_fails_without_all if {
	breaks(deployment_with(concat("", [container, "/securityContext/capabilities/drop"]), ["NET_RAW"]), "drop-all-capabilities")
	breaks(deployment_without(concat("", [container, "/securityContext/capabilities"])), "drop-all-capabilities")
}

test_capabilities_drop_passes_with_all if {
	not breaks(compliant_deployment, "drop-all-capabilities")
}

test_capabilities_add_fails_when_not_empty if {
	breaks(deployment_with(concat("", [container, "/securityContext/capabilities/add"]), ["NET_BIND_SERVICE"]), "no-added-capabilities")
}

test_capabilities_add_passes_when_empty if {
	not breaks(deployment_with(concat("", [container, "/securityContext/capabilities/add"]), []), "no-added-capabilities")
}

# seccomp

test_seccomp_passes_with_localhost_on_the_container if {
	obj := json.patch(compliant_deployment, [
		{"op": "remove", "path": concat("", [pod, "/securityContext/seccompProfile"])},
		{
			"op": "add",
			"path": concat("", [container, "/securityContext/seccompProfile"]),
			"value": {"type": "Localhost", "localhostProfile": "profiles/web.json"},
		},
	])
	not breaks(obj, "seccomp-profile")
}

test_seccomp_fails_when_unset if {
	msgs := denials(deployment_without(concat("", [pod, "/securityContext/seccompProfile"])))
	"Deployment/web: containers[0] \"web\": seccomp-profile: seccompProfile.type must be RuntimeDefault or Localhost (container or pod securityContext); it is unset" in msgs
}

test_seccomp_fails_when_the_container_says_unconfined if {
	breaks(deployment_with(concat("", [container, "/securityContext/seccompProfile"]), {"type": "Unconfined"}), "seccomp-profile")
}

# The node's namespaces and filesystem

test_host_namespaces_fail_when_shared if {
	msgs := denials(deployment_with(concat("", [pod, "/hostPID"]), true))
	"Deployment/web: pod spec: no-host-namespaces: hostPID must not be true" in msgs
	breaks(deployment_with(concat("", [pod, "/hostNetwork"]), true), "no-host-namespaces")
	breaks(deployment_with(concat("", [pod, "/hostIPC"]), true), "no-host-namespaces")
}

test_host_namespaces_pass_when_false if {
	not breaks(deployment_with(concat("", [pod, "/hostNetwork"]), false), "no-host-namespaces")
}

test_host_path_volumes_fail if {
	msgs := denials(deployment_with(concat("", [pod, "/volumes/-"]), {"name": "root", "hostPath": {"path": "/"}}))
	"Deployment/web: volumes[1] \"root\": no-host-path: hostPath volumes are not allowed (path /)" in msgs
}

test_other_volumes_pass if {
	not breaks(compliant_deployment, "no-host-path")
}

# Where the rules look

test_init_containers_are_checked if {
	init := json.patch(compliant_container("setup"), [{"op": "add", "path": "/securityContext/privileged", "value": true}])
	msgs := denials(deployment_with(concat("", [pod, "/initContainers"]), [init]))
	"Deployment/web: initContainers[0] \"setup\": not-privileged: securityContext.privileged must not be true" in msgs
}

root_pod_spec := json.patch(compliant_pod_spec, [{"op": "add", "path": "/securityContext/runAsUser", "value": 0}])

test_every_pod_carrying_kind_is_checked if {
	workloads := [
		{"kind": "Pod", "metadata": {"name": "p"}, "spec": root_pod_spec},
		{"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": root_pod_spec}}},
		{"kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {"template": {"spec": root_pod_spec}}},
		{"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": root_pod_spec}}},
		{
			"kind": "CronJob",
			"metadata": {"name": "c"},
			"spec": {"jobTemplate": {"spec": {"template": {"spec": root_pod_spec}}}},
		},
	]
	every obj in workloads {
		sprintf("%s/%s: pod securityContext: run-as-user: runAsUser is 0; it must be above 10000", [obj.kind, obj.metadata.name]) in denials(obj)
	}
}

test_every_pod_carrying_kind_passes_when_compliant if {
	every obj in [
		{"kind": "Pod", "metadata": {"name": "p"}, "spec": compliant_pod_spec},
		{"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": compliant_pod_spec}}}}},
	] {
		count(denials(obj)) == 0
	}
}
