package main

image_path := concat("", [container, "/image"])

test_image_digest_passes_when_pinned if {
	not breaks(compliant_deployment, "image-digest")
	not breaks(deployment_with(image_path, concat("", ["registry.example:5000/team/web:1.2.3@", digest])), "image-digest")
}

test_image_digest_fails_with_a_tag_only if {
	msgs := denials(deployment_with(image_path, "registry.example/web:1.2.3"))
	"Deployment/web: containers[0] \"web\": image-digest: image \"registry.example/web:1.2.3\" must be pinned by digest (@sha256:<64 hex>)" in msgs
}

test_image_digest_fails_with_a_short_digest if {
	breaks(deployment_with(image_path, "registry.example/web@sha256:abc123"), "image-digest")
}

test_image_not_latest_passes_with_a_registry_port_and_digest if {
	not breaks(deployment_with(image_path, concat("", ["registry.example:5000/web@", digest])), "image-not-latest")
}

test_image_not_latest_fails_with_the_latest_tag if {
	msgs := denials(deployment_with(image_path, "web:latest"))
	"Deployment/web: containers[0] \"web\": image-not-latest: image \"web:latest\" must not use the latest tag" in msgs
	breaks(deployment_with(image_path, concat("", ["web:latest@", digest])), "image-not-latest")
}

test_image_not_latest_fails_without_tag_or_digest if {
	breaks(deployment_with(image_path, "registry.example:5000/web"), "image-not-latest")
}

test_image_pull_policy_passes_when_always if {
	not breaks(compliant_deployment, "image-pull-always")
}

test_image_pull_policy_fails_otherwise if {
	msgs := denials(deployment_with(concat("", [container, "/imagePullPolicy"]), "IfNotPresent"))
	"Deployment/web: containers[0] \"web\": image-pull-always: imagePullPolicy must be Always, not IfNotPresent" in msgs
	breaks(deployment_without(concat("", [container, "/imagePullPolicy"])), "image-pull-always")
}
