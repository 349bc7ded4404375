"""The server-side apply body for the Namespace: only its Pod Security Admission labels.

The Namespace belongs to whoever created it. We own the `pod-security.kubernetes.io/*` labels
through server-side apply and nothing else: no labels of our own, no ownerReference (the garbage
collector would delete the namespace with the SecurityBaseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import PodSecuritySpec

POD_SECURITY_LABEL_PREFIX: Final = "pod-security.kubernetes.io/"


def build_pod_security_namespace(spec: PodSecuritySpec, context: BuildContext) -> dict[str, Any]:
    labels: dict[str, str] = {}
    for mode, level in (("enforce", spec.enforce), ("audit", spec.audit), ("warn", spec.warn)):
        if level is not None:
            labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}"] = level.value
            labels[f"{POD_SECURITY_LABEL_PREFIX}{mode}-version"] = spec.version
    metadata: dict[str, Any] = {"name": context.namespace.name}
    # With no level set there is nothing to send; an empty `labels: {}` would hide, from a
    # comparison of owned fields, that labels we set before are now to be removed.
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
