# Which image runs, and when it is pulled: pinned by digest so that what was reviewed is what runs, never
# `latest`, and pulled every time so that a node's cached copy cannot stand in for the registry's
# (with a digest, "Always" costs one manifest check and proves the node may still pull it).
package main

import data.lib.kubernetes as k8s

digest_pattern := `@sha256:[a-f0-9]{64}$`

# The tag of an image reference, "" when it has none. A registry port (`host:5000/app`) is not a tag:
# only the last path segment, without any digest, can carry one.
image_tag(image) := tag if {
	segments := split(split(image, "@")[0], "/")
	last := segments[count(segments) - 1]
	contains(last, ":")
	tag := split(last, ":")[1]
} else := ""

deny contains msg if {
	some c in k8s.containers
	image := object.get(c.container, "image", "")
	not regex.match(digest_pattern, image)
	msg := k8s.message(c.where, "image-digest", sprintf("image %q must be pinned by digest (@sha256:<64 hex>)", [image]))
}

deny contains msg if {
	some c in k8s.containers
	image := object.get(c.container, "image", "")
	image_tag(image) == "latest"
	msg := k8s.message(c.where, "image-not-latest", sprintf("image %q must not use the latest tag", [image]))
}

# No tag and no digest means the runtime pulls `latest`.
deny contains msg if {
	some c in k8s.containers
	image := object.get(c.container, "image", "")
	image_tag(image) == ""
	not contains(image, "@")
	msg := k8s.message(c.where, "image-not-latest", sprintf("image %q has neither tag nor digest, so it runs latest", [image]))
}

deny contains msg if {
	some c in k8s.containers
	policy := object.get(c.container, "imagePullPolicy", "unset")
	policy != "Always"
	msg := k8s.message(c.where, "image-pull-always", sprintf("imagePullPolicy must be Always, not %v", [policy]))
}
