# Every container says what it needs and what it may take, in CPU and memory: the scheduler places it by
# its requests, and its limits keep one workload from starving the rest of the node.
package main

import data.lib.kubernetes as k8s

deny contains msg if {
	some c in k8s.containers
	some bound in ["requests", "limits"]
	some resource in ["cpu", "memory"]
	object.get(c.container, ["resources", bound, resource], null) == null
	msg := k8s.message(c.where, "resources", sprintf("resources.%s.%s must be set", [bound, resource]))
}
