"""Requests made as someone else: what RBAC and the admission policies of manifests/admission judge.

The tests hold an admin client (system:masters); a client built here asks the API server to take its
requests for another user, and groups, through the impersonation headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubernetes import client

if TYPE_CHECKING:
    from collections.abc import Callable

BREAK_GLASS = "baseline.dev:break-glass"
"""The group manifests/admission exempts, besides the operator: who may still change managed objects."""


def as_user(api: client.ApiClient, user: str, group: str | None = None) -> client.ApiClient:
    """A client that the API server takes for `user` (and `group`): RBAC and admission judge them."""
    impersonating = client.ApiClient(api.configuration)
    impersonating.set_default_header("Impersonate-User", user)
    if group is not None:
        impersonating.set_default_header("Impersonate-Group", group)
    return impersonating


def allowed(call: Callable[[], Any]) -> bool:
    """Whether `call` passes RBAC: False where it is refused (403), as a new grant's first moments are."""
    try:
        call()
    except client.ApiException as error:
        if error.status == 403:
            return False
        raise
    return True
