"""Observed records for planner and drift tests: baselines, namespaces and what a converged cluster holds."""

from __future__ import annotations

import dataclasses
from typing import Any

from baseline_operator.builders.common import ENFORCED_LABEL
from baseline_operator.compare import leaf_paths
from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, observe_object
from baseline_operator.planner import Apply, NamespaceView, Policy, plan_namespace
from baseline_operator.spec import Mode, parse_spec
from baseline_operator.takeover import PREVIOUS_VALUES_ANNOTATION

POLICY = Policy(
    protected_namespaces=frozenset({"kube-system", "baseline-system"}),
    allowed_cluster_roles=frozenset({"view", "edit"}),
)
ROLES = frozenset({"view", "edit", "admin"})

FULL = {
    "networkPolicy": {},
    "limitRange": {"default": {"cpu": "500m"}},
    "resourceQuota": {"hard": {"pods": "10"}},
    "rbac": {
        "roleBindings": [
            {"name": "team", "clusterRole": "view", "subjects": [{"kind": "Group", "name": "g-${namespace}"}]}
        ]
    },
    "podSecurity": {"enforce": "restricted"},
}


def baseline(name: str, spec: dict[str, Any], *, generation: int = 1) -> ObservedBaseline:
    return ObservedBaseline(name=name, uid=f"uid-{name}", generation=generation, spec=parse_spec(spec))


def namespace(
    name: str = "team-a",
    labels: dict[str, str] | None = None,
    *,
    owned: frozenset = frozenset(),
    terminating: bool = False,
) -> ObservedNamespace:
    return ObservedNamespace(
        name=name,
        uid=f"uid-{name}",
        labels={"kubernetes.io/metadata.name": name, **(labels or {})},
        terminating=terminating,
        owned=owned,
    )


def account(ns: str, *, automount: bool | None = None, owned: frozenset = frozenset()) -> ObservedObject:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns, "uid": f"sa-{ns}"},
    }
    if automount is not None:
        body["automountServiceAccountToken"] = automount
    return ObservedObject.from_body("ServiceAccount", ns, "default", f"sa-{ns}", body, owned=owned)


def applied(body: dict[str, Any], **server_additions: Any) -> ObservedObject:
    """`body` as the API server stores it after our apply: with a uid, defaults, and owned by us."""
    stored = {
        **body,
        "metadata": {**body["metadata"], "uid": f"uid-{body['metadata']['name']}", "resourceVersion": "7"},
    }
    stored.update(server_additions)
    observed = observe_object(stored)
    return ObservedObject.from_body(
        observed.kind,
        observed.namespace,
        observed.name,
        observed.uid,
        observed.body,
        owned=frozenset(leaf_paths(body)),
    )


def view(
    ns: ObservedNamespace,
    baselines: list[ObservedBaseline],
    objects: list[ObservedObject] = (),
    sa: ObservedObject | None = None,
) -> NamespaceView:
    return NamespaceView(ns.name, ns, baselines, list(objects), sa or account(ns.name), ROLES)


def converged(
    ns: ObservedNamespace, base: ObservedBaseline
) -> tuple[list[ObservedObject], ObservedNamespace, ObservedObject]:
    """What the cluster holds once the plan for `base` in a fresh `ns` was applied (as if enforced)."""
    assert base.spec is not None
    enforced = dataclasses.replace(base, spec=dataclasses.replace(base.spec, mode=Mode.ENFORCE))
    plan = plan_namespace(view(ns, [enforced]), POLICY)
    bodies = [_without_uid(action.body) for action in plan.actions if isinstance(action, Apply)]
    objects = [applied(body) for body in bodies if body["kind"] not in {"Namespace", "ServiceAccount"}]
    namespace_body = next((body for body in bodies if body["kind"] == "Namespace"), {"metadata": {}})
    metadata = namespace_body["metadata"]
    if base.spec.mode is Mode.AUDIT:
        # Only an Enforce baseline marks the namespace.
        metadata = {
            **metadata,
            "labels": {k: v for k, v in metadata.get("labels", {}).items() if k != ENFORCED_LABEL},
        }
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    ns_after = ObservedNamespace(
        name=ns.name,
        uid=ns.uid,
        labels={**ns.labels, **labels},
        terminating=False,
        owned=frozenset(
            ("metadata", field, key)
            for field in ("labels", "annotations")
            for key in metadata.get(field) or {}
        ),
        previous_values=annotations.get(PREVIOUS_VALUES_ANNOTATION),
    )
    account_body = next((body for body in bodies if body["kind"] == "ServiceAccount"), None)
    if account_body is None:
        return objects, ns_after, account(ns.name)
    stored = {**account_body, "metadata": {**account_body["metadata"], "uid": f"sa-{ns.name}"}}
    sa = ObservedObject.from_body(
        "ServiceAccount",
        ns.name,
        "default",
        f"sa-{ns.name}",
        stored,
        owned=frozenset(leaf_paths(account_body)),
    )
    return objects, ns_after, sa


def _without_uid(body: dict[str, Any]) -> dict[str, Any]:
    # The uid of a write is its precondition, not a field anyone owns.
    return {**body, "metadata": {key: value for key, value in body["metadata"].items() if key != "uid"}}
