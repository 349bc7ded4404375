package main

test_resources_pass_when_all_four_are_set if {
	not breaks(compliant_deployment, "resources")
}

test_resources_fail_for_each_missing_value if {
	msgs := denials(deployment_without(concat("", [container, "/resources/limits/memory"])))
	"Deployment/web: containers[0] \"web\": resources: resources.limits.memory must be set" in msgs
	breaks(deployment_without(concat("", [container, "/resources/requests/cpu"])), "resources")
}

test_resources_fail_four_times_when_absent if {
	missing := {msg |
		some msg in denials(deployment_without(concat("", [container, "/resources"])))
		contains(msg, ": resources: ")
	}
	count(missing) == 4
}
