"""The server-side apply body for the namespace's `default` ServiceAccount.

The ServiceAccount is not ours: Kubernetes creates it in every namespace. Through server-side apply
we own exactly one field of it, `automountServiceAccountToken`. The body therefore carries no labels
and above all no ownerReference: the garbage collector would delete the ServiceAccount together
with the SecurityBaseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import DefaultServiceAccountSpec

DEFAULT_SERVICE_ACCOUNT_NAME: Final = "default"


def build_default_service_account(spec: DefaultServiceAccountSpec, context: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": DEFAULT_SERVICE_ACCOUNT_NAME, "namespace": context.namespace.name},
        "automountServiceAccountToken": spec.automount_token,
    }
