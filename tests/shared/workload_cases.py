"""Pods that keep every workload rule, and each rule broken alone: the seeds' insecure containers.

Shared by the e2e tests (the API server judges them) and the unit tests (the audit of running Pods judges
the same Pods), so that both read a Pod alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

DIGEST = "sha256:" + "0" * 64
REGISTRY = "registry.example.com/"


def compliant_pod_spec() -> dict[str, Any]:
    """A Pod spec every rule of the section admits (with REGISTRY allowed)."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [
            {
                "name": "app",
                "image": f"{REGISTRY}team/app@{DIGEST}",
                "imagePullPolicy": "Always",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "200m", "memory": "128Mi"},
                },
            }
        ],
    }


def first_container(spec: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = spec["containers"][0]
    return container


# Each rule, and how to break only it (the seeds' insecure containers, one fault at a time).
BREAKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "runAsNonRoot": lambda spec: spec["securityContext"].update(runAsNonRoot=False),
    "minUID": lambda spec: spec["securityContext"].update(runAsUser=1000),
    # The API server refuses privileged with allowPrivilegeEscalation false itself: that goes too (so
    # noPrivilegeEscalation fails as well; the policy reports the first rule broken, in rule order).
    "noPrivileged": lambda spec: first_container(spec)["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=None
    ),
    "noPrivilegeEscalation": lambda spec: first_container(spec)["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "dropAllCapabilities": lambda spec: first_container(spec)["securityContext"].update(
        capabilities={"drop": ["NET_RAW"]}
    ),
    "readOnlyRootFilesystem": lambda spec: first_container(spec)["securityContext"].update(
        readOnlyRootFilesystem=False
    ),
    # A request left out is defaulted to its limit by the API server: both go (requireLimits fails too).
    "requireRequests": lambda spec: first_container(spec).update(
        resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}
    ),
    "requireLimits": lambda spec: first_container(spec)["resources"].pop("limits"),
    "imagePullPolicyAlways": lambda spec: first_container(spec).update(imagePullPolicy="IfNotPresent"),
    "requireDigest": lambda spec: first_container(spec).update(image=f"{REGISTRY}team/app:1.0"),
    "allowedRegistries": lambda spec: first_container(spec).update(image=f"docker.io/library/app@{DIGEST}"),
    "noHostNamespaces": lambda spec: spec.update(hostNetwork=True),
    "noHostPath": lambda spec: spec.update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
}
POD_RULES = {"noHostNamespaces", "noHostPath"}


def broken(rule: str) -> dict[str, Any]:
    spec = compliant_pod_spec()
    BREAKS[rule](spec)
    return spec
